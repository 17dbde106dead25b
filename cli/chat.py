"""``llamavid chat``: ask about images, a short video or an indexed film, in a REPL or once."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cli.options import add_load_arguments, load_options_from
from llamavid.errors import UserError

if TYPE_CHECKING:
    from llamavid.runtime.api import LlamaVid
    from llamavid.runtime.generate import SamplingOptions
    from llamavid.runtime.inputs import Visual

# The model library (torch, transformers) is imported inside the functions below, not at the top:
# `llamavid --help` imports every command module and must stay fast (tests/test_cli.py measures it).

HELP = "chat about images, a short video or an indexed movie, answers streamed, several turns"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True, help="installed model name or checkpoint folder")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--image", "-i", action="append", metavar="PATH", help="an image (repeat for several)")
    what.add_argument("--video", metavar="PATH", help="a short video, sampled at --fps")
    what.add_argument("--movie", metavar="ID_OR_PATH", help="a movie of the indexed library (llamavid index)")
    p.add_argument("--prompt", "-p", metavar="TEXT", help="ask this one question, print the answer and exit")
    add_load_arguments(p)
    p.add_argument("--temperature", type=float, default=0.2, help="0 = greedy (default 0.2)")
    p.add_argument("--top-p", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, help="make sampling repeatable")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second sampled from --video (default 1)")
    p.add_argument("--max-frames", type=int, default=180, help="cap on --video frames (spread evenly)")


def sampling(args: argparse.Namespace) -> SamplingOptions:
    from llamavid.runtime.generate import SamplingOptions

    return SamplingOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                           top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)


def load(args: argparse.Namespace) -> LlamaVid:
    from llamavid.runtime.load import load_model

    return load_model(args.model, args.data_dir, load_options_from(args), load_vision=not args.movie)


def visual_input(lv: LlamaVid, args: argparse.Namespace) -> Visual:
    """Encode the chosen input once; EVA features stay cached for the whole chat."""
    from indexer.library import FeaturesNotReady, dialogue_visual, film_visual, find_movie, open_library

    if args.image:
        return lv.visual(images=[Path(p) for p in args.image])
    if args.video:
        return lv.visual(video=Path(args.video), fps=args.fps, max_frames=args.max_frames,
                         answer_tokens=args.max_new_tokens)
    if args.movie:
        db = open_library(args.data_dir)
        try:
            movie = find_movie(db, args.movie)
            return film_visual(db, movie) if movie.features_complete else dialogue_visual(db, movie)
        except (KeyError, FeaturesNotReady) as exc:
            raise UserError(str(exc).strip("'\"")) from None
    return lv.visual()


def qwen_chat(model, args: argparse.Namespace):
    """A Qwen3-VL conversation (the second family) about the chosen input: pictures, a clip, a library
    film (its frames decoded at the planned times when the first question comes) or nothing."""
    from app.qwen_live import film_turn, media_turn
    from indexer.library import FeaturesNotReady, find_movie, open_library
    from llamavid.runtime.qwen_chat import QwenChat

    if args.movie:
        db = open_library(args.data_dir)
        try:
            first, _track = film_turn(db, find_movie(db, args.movie))
        except (KeyError, FeaturesNotReady) as exc:
            raise UserError(str(exc).strip("'\"")) from None
    else:
        first = media_turn([Path(p) for p in args.image or []], Path(args.video) if args.video else None,
                           max_frames=args.max_frames)
    return QwenChat(model, first)


def answer(chat, question: str, opts) -> None:
    """Stream one answer; Ctrl-C ends the answer, not the program. While a film is read, progress
    goes to stderr on one line (on a terminal); Ctrl-C then drops the question as if never asked."""
    from llamavid.runtime.control import Control

    control = Control(on_progress=_show_progress if sys.stderr.isatty() else None, rates=chat.lv.rates)
    try:
        pieces = chat.ask(question, opts, control=control)
    except KeyboardInterrupt:
        print(" [stopped before the answer; the question was dropped]", file=sys.stderr)
        return
    finally:
        if control.on_progress is not None:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    try:
        for piece in pieces:
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        pieces.close()
        print(" [stopped]", end="")
    print()


def _show_progress(progress) -> None:
    if progress.phase != "answer":
        print("\r\033[K" + progress.describe(), end="", file=sys.stderr, flush=True)


def repl(chat, opts) -> None:
    print("Ask a question (Ctrl-C stops an answer, Ctrl-D or /exit quits).", file=sys.stderr)
    while True:
        try:
            question = input("USER: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if question in ("/exit", "/quit"):
            return
        if question:
            print("ASSISTANT: ", end="", flush=True)
            try:
                answer(chat, question, opts)
            except UserError as exc:  # too long for the context, not enough memory: the chat goes on
                print(f"\nllamavid: error: {exc}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from llamavid.runtime.chat import Chat

    for path in (args.image or []) + ([args.video] if args.video else []):
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    from llamavid.runtime.family import QwenVL

    lv = load(args)
    chat = qwen_chat(lv, args) if isinstance(lv, QwenVL) else Chat(lv, visual_input(lv, args))
    for note in chat.notes:
        print(f"note: {note}", file=sys.stderr)
    opts = sampling(args)
    if args.prompt is not None:
        answer(chat, args.prompt, opts)
        return 0
    repl(chat, opts)
    return 0

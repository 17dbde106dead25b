"""``llamavid train``: check data, run a stage, export a checkpoint, show the stage presets.

    llamavid train validate DATA.json --stage 2 --model OUT/stage1 --image-folder IMGS
    llamavid train run --stage 1 --data cap.json --llm vicuna-7b --vision eva_vit_g.pth \\
        --qformer instruct_blip_vicuna7b_trimmed.pth --qformer-vocab bert_vocab.txt --output OUT/stage1
    llamavid train run --stage 2 --data chat.json --init OUT/stage1 --output OUT/stage2
    torchrun --nproc-per-node 8 -m cli train run --stage 2 ... --fsdp full_shard

Imports nothing heavy until a command runs, so ``llamavid --help`` stays fast: :mod:`train.config`
is plain Python, the rest of ``train`` (torch, transformers) is imported inside the functions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from llamavid.errors import UserError
from llamavid.files import EVA_FILE, PROJECTOR_FILE, VOCAB_FILE
from train.config import STAGES, TrainArgs, default_max_length, trainable_prefixes

HELP = "train LLaMA-VID (stages 1-3), validate training data, export checkpoints"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, but not the uninformative ones (None, False) or ones the help already states."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="train_command", metavar="ACTION", required=True)
    add_validate(sub.add_parser("validate", help="check a data file: JSON, files, placeholders, lengths",
                                formatter_class=_Help))
    add_run(sub.add_parser("run", help="train one stage (resumes automatically when OUTPUT holds a run)",
                           formatter_class=_Help))
    export = sub.add_parser("export", help="write a resumable checkpoint as a model folder to chat with")
    export.add_argument("checkpoint", type=Path, help="OUTPUT/checkpoint-N of a run")
    export.add_argument("--output", type=Path, required=True, help="folder for the model (released layout)")
    sub.add_parser("stages", help="show what each stage trains and its settings")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", type=int, choices=sorted(STAGES), default=2, help="which stage the data is for")
    p.add_argument("--image-folder", type=Path, help="folder 'image' paths are relative to (default: the data file's)")
    p.add_argument("--video-folder", type=Path, help="folder 'video' paths are relative to (default: the data file's)")
    p.add_argument("--video-fps", type=float, default=1.0, help="frames per second sampled from clips")
    p.add_argument("--video-token", type=int, default=2, help="placeholders per film frame (context + content)")
    p.add_argument("--trust-pickle", action="store_true", help="allow reading .pkl files (they can run code)")


def add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="LLaVA-format .json (or .jsonl) data file")
    add_data_options(p)
    p.add_argument("--model", type=Path, help="a checkpoint or LLaMA folder: its tokenizer and shape are used to "
                                              "count tokens (without it lengths are not checked)")
    p.add_argument("--max-length", type=int, help="longest allowed sample (default: the stage's)")
    p.add_argument("--compress-type", default="mean", help="token layout when --model has none: mean, none, grid:N")
    p.add_argument("--image-size", type=int, choices=(224, 336), default=224)
    p.add_argument("--max-frames", type=int, help="frame cap for clips, as in training")
    p.add_argument("--deep", action="store_true", help="also open every image, video and feature file")
    p.add_argument("--allow-truncation", action="store_true", help="report over-long samples as warnings")
    p.add_argument("--limit", type=int, default=50, help="problems shown per kind")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", type=int, choices=sorted(STAGES), required=True)
    p.add_argument("--data", type=Path, required=True, help="LLaVA-format .json / .jsonl")
    p.add_argument("--output", type=Path, required=True, help="run folder: checkpoints, logs, the trained model")
    for name in ("image-folder", "video-folder"):
        p.add_argument(f"--{name}", type=Path, help=f"{name.split('-')[0]} paths are relative to it "
                                                     "(default: the data file's folder)")
    g = p.add_argument_group("starting weights (--init, or the component files)")
    g.add_argument("--init", type=Path, help="a previous stage's output folder (stage 2 from 1, stage 3 from 2)")
    g.add_argument("--llm", type=Path, help="Vicuna-style Hugging Face LLaMA folder (stage 1)")
    g.add_argument("--vision", type=Path, help=EVA_FILE)
    g.add_argument("--qformer", type=Path, help="InstructBLIP Q-Former, e.g. instruct_blip_vicuna7b_trimmed.pth")
    g.add_argument("--projector", type=Path, help=f"a stage-1 {PROJECTOR_FILE} (stage 2 with --llm and --vision)")
    g.add_argument("--qformer-vocab", type=Path, help=f"bert-base-uncased vocab.txt (default: --init's {VOCAB_FILE})")
    g.add_argument("--qformer-config", type=Path, help="JSON of Q-Former sizes, for non-BERT-base files")
    g.add_argument("--trust-pickle", action="store_true", help="allow pickled files (LAVIS .pth with objects, .pkl)")
    g.add_argument("--image-size", type=int, choices=(224, 336), default=224, help="stage 1 from components")
    g.add_argument("--compress-type", default="mean", help="stage 1 from components: mean (video models), "
                                                            "none (image models, all patches), grid:N")
    g.add_argument("--bert-type", help="override the stage's (e.g. qformer_pretrain_freeze for stage 3 as released)")
    o = p.add_argument_group("optimisation (defaults: the stage preset, see `llamavid train stages`)")
    o.add_argument("--learning-rate", "--lr", type=float)
    o.add_argument("--max-length", type=int, help="tokens per sample incl. visual rows; longer ones are cut")
    o.add_argument("--epochs", type=float, default=1.0)
    o.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    o.add_argument("--batch-size", type=int, default=1, help="samples per GPU per micro-batch")
    o.add_argument("--global-batch", type=int, help="samples per optimizer step over all GPUs (sets accumulation)")
    o.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (instead of --global-batch)")
    o.add_argument("--weight-decay", type=float, default=0.0)
    o.add_argument("--warmup-ratio", type=float, default=0.03)
    o.add_argument("--max-grad-norm", type=float, default=1.0)
    o.add_argument("--seed", type=int, default=42)
    d = p.add_argument_group("data loading")
    d.add_argument("--video-fps", type=float, default=1.0)
    d.add_argument("--video-token", type=int, default=2)
    d.add_argument("--max-frames", type=int, help="frames kept per clip (evenly spread)")
    d.add_argument("--num-workers", type=int, default=2, help="data loader processes per GPU")
    d.add_argument("--no-group-by-modality", dest="group_by_modality", action="store_false", default=None,
                   help="plain shuffling instead of the reference's modality/length grouping (stage 2)")
    d.add_argument("--skip-bad-samples", action="store_true", help="log and skip unusable records instead of stopping")
    d.add_argument("--no-validate", dest="validate", action="store_false", help="skip the data check at start")
    h = p.add_argument_group("hardware")
    h.add_argument("--device", default="auto", help="auto, cpu, cuda")
    h.add_argument("--bf16", dest="bf16", action="store_true", default=None, help="bf16 compute (default on GPUs)")
    h.add_argument("--no-bf16", dest="bf16", action="store_false")
    h.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    h.add_argument("--attn", default="auto", help="auto (flash_attention_2 if installed, else sdpa), sdpa, eager")
    h.add_argument("--fsdp", choices=("full_shard", "shard_grad_op"), help="shard across GPUs (ZeRO-3 / ZeRO-2 "
                                                                          "like); needs torchrun")
    lo = p.add_argument_group("LoRA / QLoRA (stages 2, 3)")
    lo.add_argument("--lora-r", type=int, default=0, help="LoRA rank on the LLM's linears (0: full fine-tuning)")
    lo.add_argument("--lora-alpha", type=int, default=16)
    lo.add_argument("--lora-dropout", type=float, default=0.05)
    lo.add_argument("--bits", type=int, choices=(16, 4), default=16, help="4: QLoRA (NF4 LLM, bitsandbytes)")
    lo.add_argument("--lora-freeze-multimodal", dest="lora_train_multimodal", action="store_false",
                    help="train only the adapters, not the stage's Q-Former / projectors")
    c = p.add_argument_group("checkpoints and logs")
    c.add_argument("--save-steps", type=int, help="resumable checkpoint every N steps (default: the stage's)")
    c.add_argument("--save-total-limit", type=int, default=1, help="checkpoints kept")
    c.add_argument("--resume", default="auto", help="auto (continue OUTPUT's run if any), never, or a checkpoint")
    c.add_argument("--log-every", type=int, default=1, help="steps between log lines when not on a terminal")
    c.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to OUTPUT/tensorboard")


def train_args(ns: argparse.Namespace) -> TrainArgs:
    names = set(TrainArgs.__dataclass_fields__)
    values = {k: v for k, v in vars(ns).items() if k in names}
    if values.get("compress_type") in ("none", "None"):
        values["compress_type"] = None
    return TrainArgs(**values)


def run(args: argparse.Namespace) -> int:
    action = args.train_command
    if action == "stages":
        return show_stages()
    if action == "validate":
        return run_validate(args)
    if action == "export":
        from train.export import export  # torch: lazy, see the module docstring

        print(export(args.checkpoint, args.output))
        return 0
    from train.records import DataError  # torch: lazy, see the module docstring
    from train.trainer import run as train

    try:
        result = train(train_args(args))
    except DataError as exc:
        raise UserError(_last_line(str(exc))) from None
    if result.rank != 0:
        return 130 if result.stopped_early else 0
    if result.stopped_early:
        print(f"stopped at step {result.step} of {result.total_steps}; run the same command to continue")
        return 130
    print(f"done: {result.step} steps; the model is in {result.output} (chat: llamavid chat --model {result.output})")
    return 0


def _last_line(message: str) -> str:
    """A DataLoader worker's error arrives with its traceback; the user needs its last line."""
    if "Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith(("train.", "llamavid.")) and ": " in last else last


def show_stages() -> int:
    for p in STAGES.values():
        parts = ", ".join(x.strip(".").replace("model.", "") for x in trainable_prefixes(p.train_llm, p.bert_type))
        print(f"stage {p.stage}: {p.summary}\n  template {p.template}, lr {p.learning_rate:g}, max length "
              f"{p.max_length}{' (2048 for video models)' if p.stage == 2 else ''}, global batch {p.global_batch}, "
              f"bert_type {p.bert_type}, images {p.image_aspect_ratio}\n  trains: {parts}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from train.validate import CheckOptions, use_model, validate  # torch: lazy, see the module docstring

    options = CheckOptions(args.stage, args.image_folder, args.video_folder, compress_type=args.compress_type,
                           image_size=args.image_size, video_fps=args.video_fps, video_token=args.video_token,
                           max_frames=args.max_frames, trust_pickle=args.trust_pickle, deep=args.deep,
                           allow_truncation=args.allow_truncation)
    if options.compress_type in ("none", "None"):
        options.compress_type = None
    if args.model is not None:
        use_model(options, args.model)
    options.max_length = args.max_length or default_max_length(args.stage, options.compress_type)
    report = validate(args.data, options)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.text(args.limit))
    if not args.json and not report.lengths_checked:
        print("(to check lengths too, give --model FOLDER: a checkpoint or LLaMA folder with the tokenizer)")
    return 0 if report.ok else 1


"""`llamavid models`: list, pull, verify, rm, path and add model checkpoints.

The work is done by :mod:`llamavid.hub.installed` (layout, registry), :mod:`llamavid.hub.pull` and
:mod:`llamavid.hub.download` (resumable, verified transfers), :mod:`llamavid.hub.verify` and
:mod:`llamavid.hub.catalog` (what exists); this module only parses options and prints.
Imports stay light: no torch / huggingface-hub until a command needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from llamavid.errors import UserError
from llamavid.hub import catalog, installed, pull, verify
from llamavid.paths import DataDir
from llamavid.runtime.llm_choice import CPU_GGUF_TYPE, conversion_disk_bytes, converted_folder  # no torch
from llamavid.storage import check_free_space, free_bytes, human_size

HELP = "manage model checkpoints: list, pull (download), verify, rm, path, add a local folder"

_EPILOG = """examples:
  llamavid models list --available          what can be downloaded
  llamavid models pull llama-vid-7b-full-224-long-video
  llamavid models verify llama-vid-7b-full-224-long-video
  llamavid models add my-ckpt ~/checkpoints/llama-vid-7b-full-224-video-fps-1
  llamavid models path my-ckpt

Downloads honour HF_ENDPOINT, HF_TOKEN / HF_HOME, HF_HUB_CACHE (files already there are reused) and
HF_HUB_OFFLINE (nothing is downloaded); $LLAMAVID_EVA_URL replaces the LAVIS URL of eva_vit_g.pth
(a mirror, or file:///path/to/eva_vit_g.pth for a copy you have). An interrupted pull resumes where
it stopped when run again."""


def _common(parser: argparse.ArgumentParser) -> None:
    """--data-dir / -v after the action too (`llamavid models list --data-dir X`); never overwrite."""
    parser.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="folder holding models, caches and settings (default: $LLAMAVID_DATA_DIR, "
                             "else the platform's user data folder)")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", title="actions")

    p = sub.add_parser("list", help="installed models (default action); --available: the catalogue",
                       description="List installed models (name, kind, size, status, path), or with "
                                   "--available the checkpoints that can be pulled.")
    p.add_argument("--available", action="store_true", help="show the catalogue of downloadable checkpoints")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)

    p = sub.add_parser("pull", help="download catalogue checkpoints (resumable, verified)",
                       description="Download checkpoints from the catalogue into <data>/models/<name>/ and "
                                   "the shared parts (eva_vit_g.pth, bert_vocab.txt) once into "
                                   "<data>/models/shared/. Run it again to resume an interrupted download or to "
                                   "re-fetch missing or wrong-size files; --force fetches everything again.")
    p.add_argument("names", nargs="+", metavar="NAME", help="catalogue name(s): see `llamavid models list --available`")
    p.add_argument("--with-base", action="store_true",
                   help="for stage-1 (pretrain) projectors, also pull the base Vicuna LLM they need")
    p.add_argument("--force", action="store_true", help="download every file again, even complete ones")
    p.add_argument("--retries", type=int, default=5, metavar="N",
                   help="attempts in a row without progress before giving up on a file")
    p.add_argument("--convert", action=argparse.BooleanOptionalAction, default=None,
                   help="where the chat runs on llama.cpp (no GPU that holds the model in fp16), also make its "
                        "q4_K_M conversion (convert-gguf) now; default: ask on a terminal, else say the command")
    _common(p)

    p = sub.add_parser("verify", help="check every file of an installed model, file by file",
                       description="Check config, index, every shard (present, expected size, opens), the "
                                   "tokenizer and the shared parts. Exit status 1 if anything is wrong.")
    p.add_argument("name", metavar="NAME", help="installed name, registered name or checkpoint folder")
    p.add_argument("--hash", action="store_true",
                   help="also compare sha256 / git blob ids recorded at pull time (reads every byte)")
    p.add_argument("--deep", action="store_true",
                   help="also CRC-check every entry and load each shard's tensor names (needs torch; slow)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)

    p = sub.add_parser("rm", help="delete a pulled model, or unregister an added folder (never deleted)",
                       description="Delete a pulled model folder (asks first unless --yes). A folder "
                                   "registered with `add`, or a symlink, is only forgotten: your files stay.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _common(p)

    p = sub.add_parser("path", help="print the folder of a model (or of the shared parts)",
                       description="Print the checkpoint folder a name resolves to, for scripts.")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("--shared", action="store_true", help="print the shared-parts folder instead")
    _common(p)

    p = sub.add_parser("convert-gguf", help="write a model's LLM as GGUF for the llama.cpp backend (resumable)",
                       description="Write the LLM of an installed model as GGUF (q4_K_M by default; f32, f16, q8_0 "
                                   "too; quantized through llama.cpp's quantizer) with the vision side in fp16 next "
                                   "to it, into <data>/models/<NAME>-gguf/, saying the disk space first. Where no "
                                   "GPU holds the model in fp16, `llamavid chat --model NAME` then runs on it by "
                                   "itself. Interrupted (Ctrl-C), it goes on from the files already complete when "
                                   "run again.")
    p.add_argument("name", metavar="NAME", help="installed model name or checkpoint folder")
    p.add_argument("--types", default=CPU_GGUF_TYPE,
                   help=f"comma-separated: f32, f16, q8_0, q4_K_M (default {CPU_GGUF_TYPE})")
    p.add_argument("--output", metavar="NAME_OR_FOLDER", help="output name (default NAME-gguf) or folder")
    _common(p)

    p = sub.add_parser("add", help="register a checkpoint folder you already have (nothing is copied)",
                       description="Register a local checkpoint folder under NAME so `--model NAME` finds "
                                   "it. Nothing is copied or moved; `rm NAME` only unregisters it.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("folder", metavar="FOLDER", help="folder holding config.json and the weights")
    p.add_argument("--force", action="store_true", help="replace an existing registration of NAME")
    _common(p)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _approx(n: int | None) -> str:
    return f"~{human_size(n)}" if n else "?"


def _shared_state(dd: DataDir) -> list[dict]:
    out = []
    for part in catalog.SHARED_PARTS.values():
        path = installed.shared_dir(dd) / part.filename
        out.append({"file": part.filename, "path": str(path), "present": path.is_file(),
                    "size_bytes": path.stat().st_size if path.is_file() else None, "source": part.source})
    return out


def _list(args: argparse.Namespace, dd: DataDir) -> int:
    as_json = getattr(args, "json", False)
    if getattr(args, "available", False):
        have = {m.name for m in installed.list_models(dd, sizes=False)}
        entries = catalog.entries()
        if as_json:
            print(json.dumps({"models": [{**e.to_dict(), "installed": e.name in have} for e in entries],
                              "shared_parts": [{"file": p.filename, "source": p.source, "approx_size": p.approx_size,
                                                "sha256": p.sha256, "description": p.description}
                                               for p in catalog.SHARED_PARTS.values()]}, indent=2))
            return 0
        rows = [(e.name, e.kind, _approx(e.approx_size), "yes" if e.name in have else "", e.purpose)
                for e in entries]
        print(_table(rows, ("NAME", "KIND", "SIZE", "INSTALLED", "FOR")))
        print("\nKinds:\n" + "\n".join(f"  {k:<11} {v}" for k, v in catalog.KINDS.items()))
        parts = ", ".join(f"{p.filename} ({_approx(p.approx_size)}, {p.source})" for p in catalog.SHARED_PARTS.values())
        print(f"Shared parts, fetched once with the first model that needs them: {parts}")
        print("Sizes are approximate; `pull` checks the exact sizes and free disk space before downloading.")
        return 0
    found = installed.list_models(dd)
    if as_json:
        print(json.dumps({"data_dir": str(dd.root), "models_dir": str(dd.models),
                          "models": [m.to_dict() for m in found], "shared": _shared_state(dd)}, indent=2))
        return 0
    if not found:
        print(f"No models installed in {dd.models}.\n`llamavid models list --available` shows what can be "
              f"downloaded; `llamavid models pull NAME` downloads one; `llamavid models add NAME FOLDER` "
              f"registers a checkpoint folder you already have.")
        return 0
    rows = [(m.name, m.kind, human_size(m.size_bytes) if m.status != "missing" else "-",
             m.status + (f" ({m.detail})" if m.detail else ""),
             str(m.path) + (" (registered)" if m.source == "registered" else "")) for m in found]
    print(_table(rows, ("NAME", "KIND", "SIZE", "STATUS", "PATH")))
    shared = _shared_state(dd)
    have = [f"{s['file']} ({human_size(s['size_bytes'])})" for s in shared if s["present"]]
    print(f"\nShared parts in {installed.shared_dir(dd)}: {', '.join(have) if have else 'none yet'}")
    return 0


def _pull(args: argparse.Namespace, dd: DataDir) -> int:
    wanted: list[catalog.CatalogEntry] = []
    for name in args.names:
        entry = catalog.get(name)
        if entry is None:
            raise UserError(f"{name!r} is not in the catalogue; choose one of: {', '.join(catalog.names())} "
                            f"(`llamavid models list --available` says what each is for). For a checkpoint "
                            f"you already have, use `llamavid models add NAME FOLDER`.")
        wanted.append(entry)
        if args.with_base and entry.base_model:
            wanted.append(catalog.get(entry.base_model))  # type: ignore[arg-type]
    seen: set[str] = set()
    for entry in wanted:
        if entry.name in seen:
            continue
        seen.add(entry.name)
        plan = pull.plan_pull(entry, dd, force=args.force)
        todo = len(plan.remotes) + len(plan.shared_remotes)
        print(f"{entry.name}: {entry.repo_id} at commit {plan.commit[:8]}: {todo} file(s) to fetch "
              f"({human_size(plan.needed_bytes)}), {len(plan.present)} already complete")
        pull.pull(plan, retries=args.retries)
        print(f"{entry.name}: ready in {plan.folder}; check it with `llamavid models verify {entry.name}`")
        if catalog.can_chat(entry.kind):
            _offer_conversion(args, dd, entry.name)
        if entry.kind == "scenes":
            print("note: the next `llamavid index run` adds scene vectors to the films already indexed")
        if entry.base_model and not (dd.models / entry.base_model / "config.json").is_file():
            print(f"note: {entry.name} is a stage-1 projector ({catalog.KINDS['pretrain']}); get its LLM with "
                  f"`llamavid models pull {entry.base_model}`")
    return 0


def _verify(args: argparse.Namespace, dd: DataDir) -> int:
    folder = installed.resolve_model(args.name, dd)
    name = folder.name if folder.parent == dd.models else None
    findings = verify.verify_model(folder, dd, name=name, hashes=args.hash, deep=args.deep)
    errors = [f for f in findings if f.level == "error"]
    if args.json:
        print(json.dumps({"model": args.name, "path": str(folder), "ok": not errors,
                          "findings": [f.to_dict() for f in findings]}, indent=2))
        return 1 if errors else 0
    print(f"{args.name}: {folder}")
    for f in findings:
        print(f"  {f.level.upper() if f.level != 'ok' else 'ok':<8}{f.file}" + (f": {f.message}" if f.message else ""))
    warnings = sum(f.level == "warning" for f in findings)
    if errors:
        print(f"{len(errors)} problem(s) found" + (f", {warnings} warning(s)" if warnings else ""))
        return 1
    checks = "sizes, structure" + (", hashes" if args.hash else "") + (", CRC and tensor names" if args.deep else "")
    print(f"all files present and sound ({checks})" + (f"; {warnings} warning(s)" if warnings else ""))
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("refusing to delete without confirmation: pass --yes (no terminal to ask on)")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _rm(args: argparse.Namespace, dd: DataDir) -> int:
    folder = dd.models / args.name
    registered = args.name in installed.read_registry(dd)
    if not registered and folder.is_dir() and not folder.is_symlink() and not args.yes:
        size = human_size(installed.folder_size(folder))
        if not _confirm(f"Delete {folder} ({size})?"):
            print("nothing deleted")
            return 1
    what, path = installed.remove_model(dd, args.name)
    if what == "unregistered":
        print(f"unregistered {args.name}; the folder {path} was not touched")
    elif what == "unlinked":
        print(f"removed the link {folder}; its target {path} was not touched")
    else:
        print(f"deleted {path}")
    if not any(True for _ in installed.list_models(dd, sizes=False)) and installed.shared_dir(dd).is_dir():
        print(f"the shared parts remain in {installed.shared_dir(dd)} (delete that folder to reclaim the space)")
    return 0


def _path(args: argparse.Namespace, dd: DataDir) -> int:
    if args.shared:
        print(installed.shared_dir(dd))
        return 0
    if not args.name:
        raise UserError("give a model name (or --shared); `llamavid models list` shows the installed ones")
    print(installed.resolve_model(args.name, dd))
    return 0


def _add(args: argparse.Namespace, dd: DataDir) -> int:
    path = installed.add_model(dd, args.name, args.folder, force=args.force)
    kind = installed.infer_kind(path)
    print(f"registered {args.name} -> {path} ({kind}); use it with --model {args.name}")
    if kind not in ("base-llm", "unknown") and installed.find_shared(installed.VOCAB_FILE, path, dd) is None:
        print(f"note: no {installed.VOCAB_FILE} in that folder or in {installed.shared_dir(dd)}; "
              "the model cannot load without "
              f"it: pulling any catalogue model fetches it, or copy bert-base-uncased's vocab.txt there")
    return 0


def _offer_conversion(args: argparse.Namespace, dd: DataDir, name: str) -> None:
    """After a pull: where the chat would run this model on llama.cpp (load_model's own choice) and
    its conversion is not made, make it (--convert), ask on a terminal, or say the command."""
    from llamavid.runtime.load import choose_engine  # torch: only after a pull of a chat model
    from llamavid.runtime.options import LoadOptions

    folder = installed.resolve_model(name, dd)
    engine = choose_engine(name, folder, LoadOptions(), dd.root)
    if engine.convert_to is None or args.convert is False:
        return
    try:
        size = f"about {human_size(conversion_disk_bytes(folder, dd))} of disk, "
    except ValueError:
        size = ""
    what = (f"{name} chats through llama.cpp on this computer ({engine.why}), from a q4_K_M copy of its LLM "
            f"made once ({size}{human_size(free_bytes(engine.convert_to.parent))} free)")
    if args.convert is None and not sys.stdin.isatty():
        print(f"note: {what}: run `llamavid models convert-gguf {name}` (or pull with --convert)")
        return
    if args.convert is None and input(f"{what}. Convert it now? [Y/n] ").strip().lower() not in ("", "y", "yes"):
        print(f"not converted; `llamavid models convert-gguf {name}` does it later")
        return
    _convert(dd, name, folder, engine.convert_to, (CPU_GGUF_TYPE,), verbose=False)


def _convert(dd: DataDir, name: str, source: Path, out: Path, types: tuple[str, ...], verbose: bool) -> int:
    """Plan (the disk space said and checked first), convert with progress, going on from an
    earlier run's complete files; Ctrl-C keeps them and says how to go on."""
    from llamavid.runtime.gguf_export import plan_conversion, run_conversion  # torch: only for this action

    try:
        plan = plan_conversion(source, out, types, search_dirs=installed.search_dirs(dd))
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    kept = f", {human_size(plan.present)} already done" if plan.present else ""
    print(f"{name} -> {out}: {', '.join(types)}; about {human_size(plan.needed)} to write "
          f"({human_size(free_bytes(out))} free){kept}")
    check_free_space(out, plan.needed, f"converting {name} for llama.cpp")
    total = plan.total
    show = sys.stderr.isatty()

    def tick(done: int) -> None:
        if show:
            print(f"\r\033[K  {human_size(min(done, total))} of about {human_size(total)}", end="", file=sys.stderr,
                  flush=True)

    try:
        files = run_conversion(plan, tick, progress=lambda t: print(f"  {t}", file=sys.stderr) if verbose else None)
    except KeyboardInterrupt:
        print(f"\nstopped: {human_size(plan.kept())} of complete files kept in {out}; run the same command again "
              f"to go on from there", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    finally:
        if show:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    for path in files:
        print(f"{path}  {human_size(path.stat().st_size)}")
    via = f" (or --model {name}, which runs on it where no GPU holds {name} in fp16)" if \
        out == converted_folder(dd, name) else ""
    print(f"chat with it: llamavid chat --model {out.name if out.parent == dd.models else out}{via}")
    return 0


def _convert_gguf(args: argparse.Namespace, dd: DataDir) -> int:
    source = installed.resolve_model(args.name, dd)
    out = Path(args.output) if args.output and "/" in args.output else \
        (dd.models / args.output if args.output else converted_folder(dd, args.name))
    types = tuple(t.strip() for t in args.types.split(",") if t.strip())
    return _convert(dd, args.name, source, out, types, bool(getattr(args, "verbose", 0)))


_ACTIONS = {"list": _list, "pull": _pull, "verify": _verify, "rm": _rm, "path": _path, "add": _add,
            "convert-gguf": _convert_gguf}


def run(args: argparse.Namespace) -> int:
    dd = DataDir(args.data_dir)
    return _ACTIONS[getattr(args, "models_command", None) or "list"](args, dd)

"""The ``llamavid`` command line: one entry point (:func:`main`), one module per subcommand in this package.

The top of the tree, a package of its own: these modules may import every package (the model
library ``llamavid``, the indexer, training, evaluation and the apps); no other package imports
them (``tests/test_layers.py`` checks both the layers and the graph of packages). ``python -m cli``
runs :func:`main`, as the ``llamavid`` console script does. ``llamavid bench`` and its benchmarks
are :mod:`cli.bench`.

Adding a subcommand
-------------------
1. Write a module that exposes::

       HELP: str                                            # one line, shown in `llamavid --help`
       def add_arguments(parser: argparse.ArgumentParser) -> None: ...
       def run(args: argparse.Namespace) -> int: ...        # the exit code

   It must import fast: no torch / transformers / gradio / PySide6 at module top
   level, import them inside ``run`` (``llamavid.errors.require`` turns a failed
   import into a message that says what to install).
2. Add one line ``"name": "cli.module"`` to :data:`SUBCOMMANDS` below, in the
   order it should appear in ``--help``. ``tests/test_cli.py`` then checks its
   ``--help`` and its import cost automatically.

Every subcommand receives the global options: ``args.data_dir`` (an absolute
:class:`pathlib.Path`, from ``--data-dir`` > ``$LLAMAVID_DATA_DIR`` > the platform
default; see :mod:`llamavid.paths`), ``args.verbose`` (0, 1, 2...) and
``args.command`` (the subcommand name). Problems the user can fix are raised as
:class:`llamavid.errors.UserError`; ``main`` prints them as
``llamavid: error: ...`` and exits with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from llamavid.errors import UserError
from llamavid.paths import ENV_VAR, resolve_data_dir
from llamavid.system import llamavid_version

__all__ = ["SUBCOMMANDS", "add_global_options", "build_parser", "load", "main"]

PROG = "llamavid"

#: Subcommand name -> module implementing it (HELP, add_arguments, run), in --help order.
#: Register only commands that work; add yours with one line (see the module docstring).
SUBCOMMANDS: dict[str, str] = {
    "app": "cli.app",
    "web": "cli.web",
    "serve": "cli.serve",
    "mcp": "cli.mcp",
    "chat": "cli.chat",
    "index": "cli.index",
    "doctor": "cli.doctor",
    "bench": "cli.bench",
    "models": "cli.models",
    "train": "cli.train",
    "eval": "cli.eval",
}

#: Packages whose own loggers follow -v (third-party loggers only at -vv).
_OWN_LOGGERS = ("llamavid", "app", "indexer", "train", "evaluation", "cli")


def load(name: str) -> ModuleType:
    """Import the module of subcommand ``name`` and check it has the contract's three names."""
    module = importlib.import_module(SUBCOMMANDS[name])
    missing = [attr for attr in ("HELP", "add_arguments", "run") if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"subcommand {name!r} ({module.__name__}) lacks {', '.join(missing)}")
    return module


def add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """Add --data-dir and -v to a parser (also used by :mod:`cli.bench` for its benchmarks' parsers).

    They are added to the main parser *and* to every subparser, so both
    ``llamavid --data-dir X doctor`` and ``llamavid doctor --data-dir X`` work; in a
    subparser the default is SUPPRESS so it never overwrites a value given before
    the subcommand name.
    """
    default = argparse.SUPPRESS if in_subcommand else None
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help=f"folder holding models, caches, the library database and settings "
        f"(default: ${ENV_VAR}, else the platform's user data folder)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if in_subcommand else 0,
        help="more log output (-vv also shows third-party libraries)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full parser. A subcommand whose module fails to import is listed as unavailable
    rather than breaking every other command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="llamavid: a local-first movie assistant around the LLaMA-VID video LLM. "
        "Run `llamavid COMMAND --help` for the options of one command.",
        epilog=f"Examples:\n  {PROG} doctor            check the installation and hardware\n"
        f"  {PROG} app               open the desktop app (web UI where there is no display)\n"
        f"  {PROG} --data-dir /srv/llamavid web --port 8000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {llamavid_version()}")
    add_global_options(parser, in_subcommand=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in SUBCOMMANDS:
        try:
            module = load(name)
        except Exception as exc:  # noqa: BLE001 - report any broken module, keep the rest usable
            broken = sub.add_parser(name, help=f"(unavailable: {exc})")
            broken.set_defaults(_broken=f"the {name!r} command cannot load: {exc}")
            continue
        child = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        add_global_options(child, in_subcommand=True)
        module.add_arguments(child)
        child.set_defaults(_run=module.run)
    return parser


def _setup_logging(verbose: int) -> None:
    """WARNING by default; -v shows our INFO, -vv DEBUG for everything."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if verbose == 1:
        for name in _OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


#: Commands that have saved and closed everything when they return (the servers): the process they
#: run in ends at once instead of waiting seconds for the interpreter to tear down torch, Gradio
#: and OpenVINO after a Ctrl+C or SIGTERM.
QUICK_EXIT = ("web", "serve", "app", "mcp")


def console() -> None:
    """The ``llamavid`` program (console script and ``python -m cli``): :func:`main` owning its process."""
    sys.exit(main(process=True))


def main(argv: Sequence[str] | None = None, process: bool = False) -> int:
    """Run one command; returns the exit status. ``process``: the caller owns the process (the
    program itself), so a server command may end it without the interpreter's teardown."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_broken", None):
        print(f"{PROG}: error: {args._broken}", file=sys.stderr)
        return 1
    _setup_logging(args.verbose)
    try:
        args.data_dir = resolve_data_dir(args.data_dir)
        status = int(args._run(args) or 0)
        if process and args.command in QUICK_EXIT:
            _exit_now(status)
        return status
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `llamavid doctor | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _exit_now(status: int) -> None:
    """End the process as ``sys.exit`` would (exit handlers run, output flushed) but skip the
    interpreter's teardown: everything the command wrote is saved and closed by now."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console()

"""``python -m indexer ACTION ...``: the indexer CLI without the ``llamavid`` front end.

Same actions and options as ``llamavid index``; ``--data-dir`` and ``$LLAMAVID_DATA_DIR`` choose
the data folder. Used by scripts and by the tests' subprocesses.
"""
from __future__ import annotations

import argparse
import logging
import sys

from indexer import cli


def main(argv: list[str] | None = None) -> int:
    from llamavid.errors import UserError
    from llamavid.paths import resolve_data_dir

    parser = argparse.ArgumentParser(prog="python -m indexer", description=cli.HELP)
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data folder (default: $LLAMAVID_DATA_DIR or the user data folder)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        args.data_dir = resolve_data_dir(args.data_dir)
        return cli.run(args)
    except UserError as exc:
        print(f"llamavid: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llamavid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``llamavid index`` driven in-process or as a child process (tests/indexer/conftest.py's ``cli``
fixture, and tests that need a second data folder)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_WIDTH = 176  # tiny EVA: 2 heads of 88, features (T, 257, 176)


def ctrl_c_as_in_a_terminal() -> None:
    """In the child before it starts: SIGINT at its default, as a terminal gives it. A test run started
    as a background shell job (``cmd &``, as CI runners may) inherits SIGINT *ignored*, and so would
    the child: Python then installs no KeyboardInterrupt handler and the test's Ctrl-C does nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Cli:
    """``llamavid index`` against one data folder, in-process (fast) or as a subprocess."""

    def __init__(self, data_dir: Path, capsys):
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        from cli import main

        self.capsys.readouterr()
        code = main(["--data-dir", str(self.data_dir), "index", *map(str, args)])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def status(self) -> dict[str, dict]:
        code, out, err = self("status", "--json")
        assert code == 0, err
        return {row["path"]: row for row in map(json.loads, out.splitlines())}

    def spawn(self, *args: str, **popen) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "cli", "--data-dir", str(self.data_dir), "index", *map(str, args)]
        popen.setdefault("preexec_fn", ctrl_c_as_in_a_terminal)
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                **popen)

    def db(self):
        from indexer.db import connect

        return connect(self.data_dir / "library.db")



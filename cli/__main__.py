"""``python -m cli``: the ``llamavid`` command without its console script (child processes use it)."""
import sys

from cli import main

sys.exit(main())

"""``python -m cli``: the ``llamavid`` command without its console script (child processes use it)."""
from cli import console

console()

"""What the tests share besides fixtures: files they write (films, benchmark data, tiny Whisper,
training data), the golden-case reader, small drivers (the indexer CLI, a fake judge, the desktop
window) and the session fixtures (:mod:`tests.support.fixtures`, a plugin of tests/conftest.py).

Imported as ``from tests.support.<module> import ...``: pytest puts the repository root on
``sys.path`` (``pythonpath = ["."]`` in pyproject.toml); ``tests`` itself is a namespace package.
"""

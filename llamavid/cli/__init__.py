"""The ``llamavid`` command: ``main`` and one module per subcommand (see :mod:`llamavid.cli.main`).

The top of the tree: these modules may import every package (the model library, the indexer,
training and the apps); nothing below imports them.
"""

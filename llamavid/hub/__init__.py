"""Models on disk: the catalogue of released checkpoints, downloads, and the installed-model registry.

No torch here: ``llamavid models`` and ``--help`` import these modules.
"""

"""Benchmarks: model stages (``llamavid bench``), llama.cpp against transformers, and video decoding
(``python -m llamavid.bench.decode``). Like the CLI, they sit on top and may import everything."""

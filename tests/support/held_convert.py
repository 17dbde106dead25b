"""``python -m app.model_convert`` held before llama.cpp's quantizer until a file exists.

A test names the file in ``$LLAMAVID_TEST_GATE``: the child writes the f16 file (complete), then
waits, so the test can stop it half way at a known point, as a person pressing Cancel would, and
let a second run go on. Nothing else differs from the real child.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from app import model_convert
from llamavid.runtime import gguf_export

_quantize = gguf_export.quantize_gguf


def _held_quantize(*args, **kwargs):
    gate = Path(os.environ["LLAMAVID_TEST_GATE"])
    while not gate.exists():
        time.sleep(0.05)
    return _quantize(*args, **kwargs)


gguf_export.quantize_gguf = _held_quantize

if __name__ == "__main__":
    code = model_convert.main()
    sys.stdout.flush()
    os._exit(code)

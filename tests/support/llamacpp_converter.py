"""llama.cpp's own converter (``convert_hf_to_gguf.py``), from the source distribution of the installed
llama-cpp-python, for tests that need a GGUF + mmproj made the way users' files are made.

Nothing of the converter is copied into the project: the sdist is found, its
``vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/}`` are unpacked once into a cache
folder, and the script runs there with the venv's Python and the sdist's own ``gguf-py`` (PyPI's
``gguf`` 0.19 is older than this converter: docs/second-family.md).

Where the sdist is looked for, first found wins:

1. ``$LLAMAVID_LLAMACPP_SDIST``: the ``llama_cpp_python-<version>.tar.gz`` or a folder holding it;
2. ``$XDG_CACHE_HOME/llamavid/sdist/`` (default ``~/.cache/llamavid/sdist/``): where
   ``pip download llama-cpp-python==<version> --no-deps --no-binary llama-cpp-python -d <that folder>`` puts it;
3. ``/tmp/lcpp-sdist/``.

:func:`converter` says why when none is found; tests skip with that reason.

One thing is told to the converter from outside: it names a BPE tokenizer's pre-tokenizer by
hashing the ids a probe string encodes to, which identifies only the released vocabularies. A tiny
vocabulary built with Qwen2's pre-tokenizer regex hashes to nothing it knows, so the runner below
answers ``qwen2`` where the converter's own detection gives up (``tokenizer_pre``); a released
tokenizer is detected by the converter as usual.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Converter", "converter", "find_sdist", "sdist_version"]

#: What the converter needs from the sdist, relative to its root.
_PARTS = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")

#: The last place looked in (where the brief's ``pip download ... -d /tmp/lcpp-sdist`` puts it).
TMP_SDIST = Path("/tmp/lcpp-sdist")

_RUNNER = """
import os, runpy, sys
root = sys.argv[1]
sys.path.insert(0, os.path.join(root, "gguf-py"))
sys.path.insert(0, root)
import conversion.base as base
declared = os.environ.get("LLAMAVID_TOKENIZER_PRE")
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        if not declared:
            raise
        base.logger.info("pre-tokenizer not recognised by its hash: using the declared %r", declared)
        return declared
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
script = os.path.join(root, "convert_hf_to_gguf.py")
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def sdist_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llamavid"


def find_sdist(version: str | None = None) -> Path | None:
    """The sdist tarball of llama-cpp-python ``version`` (default: the installed one), or None."""
    version = version or sdist_version()
    name = f"llama_cpp_python-{version}.tar.gz"
    places = []
    if env := os.environ.get("LLAMAVID_LLAMACPP_SDIST"):
        places.append(Path(env))
    places += [_cache_home() / "sdist", TMP_SDIST]
    for place in places:
        if place.is_file() and place.name == name:
            return place
        if (place / name).is_file():
            return place / name
    return None


@dataclass(frozen=True)
class Converter:
    root: Path  # the unpacked vendor/llama.cpp
    version: str

    def convert(self, model_dir: Path, outfile: Path, *, mmproj: bool = False, outtype: str = "f32",
                tokenizer_pre: str | None = None, timeout: float = 300) -> Path:
        """Run ``convert_hf_to_gguf.py model_dir --outfile outfile --outtype outtype [--mmproj]``."""
        args = [sys.executable, "-c", _RUNNER, str(self.root), str(model_dir), "--outfile", str(outfile),
                "--outtype", outtype] + (["--mmproj"] if mmproj else [])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("NO_LOCAL_GGUF", None)
        if tokenizer_pre:
            env["LLAMAVID_TOKENIZER_PRE"] = tokenizer_pre
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not outfile.is_file():
            raise RuntimeError(f"convert_hf_to_gguf.py failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return outfile


def converter(version: str | None = None) -> tuple[Converter | None, str]:
    """(the converter of llama-cpp-python ``version``, "") or (None, why not)."""
    version = version or sdist_version()
    tarball = find_sdist(version)
    if tarball is None:
        return None, (f"llama-cpp-python {version}'s sdist was not found (set LLAMAVID_LLAMACPP_SDIST, or run "
                      f"pip download llama-cpp-python=={version} --no-deps --no-binary llama-cpp-python "
                      f"-d {_cache_home() / 'sdist'})")
    dest = _cache_home() / f"llama.cpp-converter-{version}"
    root = dest / "vendor" / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").is_file():
        top = f"llama_cpp_python-{version}/"
        tmp = dest.with_name(dest.name + f".part{os.getpid()}")
        with tarfile.open(tarball) as tar:
            members = []
            for m in tar.getmembers():
                rel = m.name[len(top):] if m.name.startswith(top) else None
                if rel and any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in _PARTS):
                    m.name = rel
                    members.append(m)
            tar.extractall(tmp, members=members, filter="data")
        if not (tmp / "vendor/llama.cpp/convert_hf_to_gguf.py").is_file():
            return None, f"{tarball} holds no vendor/llama.cpp/convert_hf_to_gguf.py"
        try:
            tmp.rename(dest)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    return Converter(root=root, version=version), ""

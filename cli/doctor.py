"""``llamavid doctor``: what is installed, what hardware was found, and what to fix.

Most LLaMA-VID support threads are about setup (wrong versions, missing weights,
no GPU found), so this command checks each part on its own and says what to do
for every part that is missing. A part that fails to import is reported, never
allowed to crash the report. Exit status: 0 when nothing is missing, 1 otherwise
(warnings, such as "no model installed yet", do not count).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from llamavid.hub.installed import list_models
from llamavid.paths import DataDir
from llamavid.storage import existing_ancestor, human_size
from llamavid.system import cpu_flags, ram

__all__ = ["HELP", "Check", "add_arguments", "collect", "run"]

HELP = "check the installation: package versions, GPU/CPU, memory, disk, models and data folders"

OK, WARN, MISSING = "ok", "warn", "missing"

REINSTALL = "re-run ./run.sh (it installs everything), or"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | missing
    detail: str = ""
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# (display name, module to import, pip distribution, how to fix if it is missing)
_PACKAGES: list[tuple[str, str, str, str]] = [
    ("torch", "torch", "torch", f"{REINSTALL} pip install torch==2.13.0"),
    ("transformers", "transformers", "transformers", f"{REINSTALL} pip install 'transformers>=5'"),
    (
        "llama-cpp-python",
        "llama_cpp",
        "llama-cpp-python",
        f"{REINSTALL} CMAKE_ARGS=-DGGML_NATIVE=OFF pip install llama-cpp-python "
        "(compiles for ~5 min; needs a C++ compiler)",
    ),
    ("av (PyAV)", "av", "av", f"{REINSTALL} pip install av"),
    (
        "PySide6 (desktop app)",
        "PySide6.QtWidgets",
        "PySide6-Essentials",
        f"{REINSTALL} pip install PySide6-Essentials PySide6-Addons; on Debian also: "
        "sudo apt-get install libegl1 libgl1 libfontconfig1 libxkbcommon-x11-0 libxcb-cursor0",
    ),
    (
        "PySide6 multimedia (video player)",
        "PySide6.QtMultimedia",
        "PySide6-Addons",
        f"{REINSTALL} pip install PySide6-Addons; on Debian also: sudo apt-get install libpulse0",
    ),
    ("gradio (web UI)", "gradio", "gradio", f"{REINSTALL} pip install gradio"),
    ("faster-whisper (speech to text)", "faster_whisper", "faster-whisper", f"{REINSTALL} pip install faster-whisper"),
]


def _dist_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def check_python() -> Check:
    v = sys.version_info
    detail = f"{platform.python_version()} ({sys.executable})"
    if v < (3, 10):
        return Check("python", MISSING, detail, "use Python 3.10 or newer (3.11 is tested)")
    return Check("python", OK, detail, data={"version": platform.python_version()})


def check_package(label: str, module: str, dist: str, fix: str) -> Check:
    """Import the module for real: an installed package whose native library fails to load
    (missing libGL, libpulse...) is as broken as an absent one."""
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is a finding, not a crash
        version = _dist_version(dist)
        what = f"installed ({version}) but fails to import: {exc}" if version else "not installed"
        return Check(label, MISSING, what, fix, data={"module": module, "error": str(exc)})
    version = getattr(mod, "__version__", None) or _dist_version(dist) or "unknown version"
    return Check(label, OK, str(version), data={"module": module, "version": str(version)})


def check_sqlite() -> Check:
    """SQLite and its FTS5 full-text index, which the library search relies on."""
    try:
        con = sqlite3.connect(":memory:")
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        con.close()
        fts5 = True
    except sqlite3.Error:
        fts5 = False
    detail = f"{sqlite3.sqlite_version}, FTS5 {'available' if fts5 else 'NOT available'}"
    if not fts5:
        return Check(
            "sqlite",
            MISSING,
            detail,
            "use a Python whose sqlite3 is built with FTS5 (python.org and Debian builds are)",
            data={"version": sqlite3.sqlite_version, "fts5": False},
        )
    return Check("sqlite", OK, detail, data={"version": sqlite3.sqlite_version, "fts5": True})


def check_device() -> Check:
    """CUDA GPUs, Apple MPS, or the CPU with its vector extensions (llama.cpp speed depends on AVX2)."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    flags = cpu_flags()
    cpu = {
        "cores": cores,
        "usable_cores": usable,
        "machine": platform.machine(),
        "avx2": "avx2" in flags if flags else None,
        "avx512": "avx512f" in flags if flags else None,
    }
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return Check(
            "device", MISSING, f"unknown: torch fails to import ({exc})", "install torch (see above)", {"cpu": cpu}
        )
    if not flags:  # not Linux: ask torch what its kernels can use
        try:
            cap = torch.backends.cpu.get_cpu_capability()
            cpu["avx2"] = "AVX2" in cap or "AVX512" in cap
            cpu["avx512"] = "AVX512" in cap
        except Exception:  # noqa: BLE001
            pass
    if torch.cuda.is_available():
        gpus: list[dict[str, Any]] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_bytes": int(p.total_memory)})
        detail = "CUDA: " + ", ".join(f"{g['name']} ({human_size(g['memory_bytes'])})" for g in gpus)
        return Check("device", OK, detail, data={"kind": "cuda", "gpus": gpus, "cpu": cpu})
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("device", OK, "Apple GPU (MPS)", data={"kind": "mps", "cpu": cpu})
    ext = [name for name, key in (("AVX2", "avx2"), ("AVX-512", "avx512")) if cpu[key]]
    detail = f"CPU only: {usable} usable of {cores} cores, {platform.machine()}" + (
        f", {' + '.join(ext)}" if ext else ""
    )
    fix = (
        "no GPU found: everything works on the CPU, but extracting features from a whole film is slow "
        "(hours); with an NVIDIA GPU install a CUDA build of torch (see README, LLAMAVID_TORCH)"
    )
    status = WARN if cpu["avx2"] is False else OK
    if cpu["avx2"] is False:
        fix = "this CPU lacks AVX2: llama.cpp and torch will be very slow; " + fix
    return Check("device", status, detail, fix, data={"kind": "cpu", "cpu": cpu})


def check_memory() -> Check:
    """Free RAM: a 7B model needs about 14 GB in fp16 (7e9 x 2 bytes), about 4 GB in 4-bit."""
    mem = ram()
    total, free = mem.total, mem.available
    if total is None:
        return Check("memory", WARN, "unknown (cannot read the RAM size on this system)")
    data = {"total_bytes": total, "available_bytes": free}
    detail = f"{human_size(free) if free is not None else '?'} free of {human_size(total)}"
    if free is not None and free < 6e9:
        return Check(
            "memory",
            WARN,
            detail,
            "a 7B model needs about 4 GB of RAM in 4-bit and 14 GB in fp16; close other programs",
            data,
        )
    return Check("memory", OK, detail, data=data)


def check_model_advice() -> Check:
    """Which family and size fits this machine's free memory (app.family_advice, as the first run shows it)."""
    try:  # inside: it imports torch, and doctor must report even when torch is broken
        from app.family_advice import advise
        from app.hardware import detect

        advice = advise(detect())
    except Exception as exc:  # noqa: BLE001
        return Check("model advice", WARN, f"unknown ({exc})", "fix the device check above first")
    best = advice.best
    data = {"model": best.model, "family": best.family, "device": best.device, "memory_bytes": best.memory,
            "alternatives": [a.model for a in advice.alternatives]}
    return Check("model advice", OK, advice.text(), data=data)


def check_disk(root: Path) -> Check:
    """Free disk where the data folder is (or would be created)."""
    probe = existing_ancestor(root)
    usage = shutil.disk_usage(probe)
    data = {"path": str(probe), "free_bytes": usage.free, "total_bytes": usage.total}
    detail = f"{human_size(usage.free)} free of {human_size(usage.total)} at {probe}"
    if usage.free < 20e9:
        return Check(
            "disk",
            WARN,
            detail,
            "a 7B checkpoint takes about 14 GB and video features about 3 GB per hour of film; "
            "free some space or pass --data-dir on a bigger disk",
            data,
        )
    return Check("disk", OK, detail, data=data)


def check_models(dd: DataDir) -> Check:
    models = list_models(dd)
    data = {"models": [m.to_dict() for m in models]}
    if not models:
        return Check(
            "models",
            WARN,
            f"none in {dd.models}",
            "download one with `llamavid models pull llama-vid-7b-full-224-video-fps-1` (the hub's "
            "YanweiLi/llama-vid-7b-full-224-video-fps-1; `llamavid models list --available` shows all) into "
            f"{dd.models}, or register a folder you have with `llamavid models add NAME FOLDER`",
            data,
        )
    detail = ", ".join(f"{m.name} ({m.size_human}, {m.status})" for m in models)
    return Check("models", OK, detail, data=data)


def check_vision_engines(dd: DataDir) -> Check:
    """Which CPU engine runs EVA and the Q-Former: the setting, what is installed, and what this
    machine's calibrations measured and chose (``<data>/cache/vision-engines.json``)."""
    try:
        # Inside the function: it imports torch, and doctor must report even when torch is broken.
        from llamavid.model.engines import ENGINES, unavailable_reason
        from llamavid.runtime.vision_engines import CalibrationCache, parse_spec, spec_from_settings, this_machine
    except Exception as exc:  # noqa: BLE001
        return Check("vision engines", WARN, f"unknown: {exc}", "install torch (see above)")
    setting = spec_from_settings(dd.root) or "auto"
    try:
        parse_spec(setting)
    except Exception as exc:  # noqa: BLE001 - a bad setting is a finding
        return Check("vision engines", WARN, f"setting {setting!r}: {exc}",
                     f"fix vision_engine in {dd.settings} (or delete the key for auto)")
    available = {part: [n for n in names if not unavailable_reason(part, n, "cpu")] for part, names in ENGINES.items()}
    missing = {n: unavailable_reason(part, n, "cpu") for part, names in ENGINES.items() for n in names
               if unavailable_reason(part, n, "cpu")}
    calibrations = this_machine(CalibrationCache.of(dd.root).entries())
    data = {"setting": setting, "available": available, "unavailable": missing,
            "calibrations": [c.to_dict() for c in calibrations]}
    lines = [f"setting {setting}"]
    lines += [c.summary() for c in sorted(calibrations, key=lambda c: (c.part, -c.created))]
    if not calibrations:
        lines.append("not measured on this machine yet (the first `index run` or chat on a CPU measures them)")
    fix = ""
    if missing:
        fix = "; ".join(f"{n}: {why}" for n, why in sorted(missing.items()))
    return Check("vision engines", OK, "\n".join(lines), fix, data)


def check_folders(dd: DataDir) -> Check:
    folders = {name: {"path": str(p), "exists": p.exists()} for name, p in dd.folders().items()}
    detail = str(dd.root) + ("" if dd.root.exists() else " (not created yet; created on first use)")
    return Check("data folder", OK, detail, data={"folders": folders})


def collect(data_dir: Path) -> list[Check]:
    """Run every check; never raises for a missing or broken optional part."""
    # QtMultimedia logs that it found no PipeWire on machines without sound: noise here.
    os.environ.setdefault("QT_LOGGING_RULES", "qt.multimedia.symbolsresolver=false")
    dd = DataDir(data_dir)
    checks = [check_python()]
    checks += [check_package(*spec) for spec in _PACKAGES]
    checks += [check_sqlite(), check_device(), check_memory(), check_model_advice(), check_disk(dd.root),
               check_models(dd), check_vision_engines(dd), check_folders(dd)]
    return checks


def _print_report(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        first, *more = c.detail.split("\n") or [""]
        print(f"{c.status:<8} {c.name:<{width}}  {first}")
        for line in more:  # a multi-line detail (vision engines: one line per calibration)
            print(f"{'':<8} {'':<{width}}  {line}")
        if c.fix and c.status != OK:
            print(f"{'':<8} {'':<{width}}  -> {c.fix}")
    missing = [c.name for c in checks if c.status == MISSING]
    print()
    print(f"missing: {', '.join(missing)}" if missing else "everything needed is installed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON (for scripts and bug reports)")


def run(args: argparse.Namespace) -> int:
    checks = collect(args.data_dir)
    if args.json:
        report = {
            "data_dir": str(args.data_dir),
            "ok": all(c.status != MISSING for c in checks),
            "checks": [asdict(c) for c in checks],
        }
        print(json.dumps(report, indent=2))
    else:
        _print_report(checks)
    return 1 if any(c.status == MISSING for c in checks) else 0

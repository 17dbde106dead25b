"""What this machine has: the CPU's name and vector extensions, its RAM, and which llamavid.

One reader each, for ``doctor``, the benchmarks and the memory pre-flight alike. No torch:
``doctor`` must report even when torch is broken.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version


def llamavid_version() -> str:
    """The installed version of this project; a source tree that was never installed says so."""
    try:
        return version("llamavid")
    except PackageNotFoundError:
        return "unknown (not installed)"


def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "cpu family", "flags", ...);
    empty where there is no such file (macOS, Windows)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ``amx_bf16``...); empty where unknown."""
    return set(cpu_info().get("flags", "").split())


@dataclass(frozen=True)
class Ram:
    total: int | None  # bytes; None where the system does not say
    available: int | None  # bytes a new allocation can get without swapping


def ram() -> Ram:
    """Total and available RAM: /proc/meminfo (``MemAvailable`` counts reclaimable cache, as the
    kernel's OOM decisions do), else psutil, else the page count for the total."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                key, rest = line.split(":", 1)
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if "MemTotal" in values:
        return Ram(values["MemTotal"], values.get("MemAvailable"))
    try:
        import psutil  # macOS, Windows: an optional dependency, not needed on Linux

        vm = psutil.virtual_memory()
        return Ram(int(vm.total), int(vm.available))
    except ImportError:
        pass
    try:
        return Ram(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), None)
    except (ValueError, OSError, AttributeError):
        return Ram(None, None)


def stop_process_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """End a child started in a session of its own as Ctrl-C would end it (SIGTERM to its process
    group: it finishes cleanly, its helpers too), and with SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):  # it has just ended
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue

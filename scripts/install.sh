#!/usr/bin/env bash
# Install everything llamavid needs into ./.venv; safe to re-run (skips what is done).
#
#   scripts/install.sh [app|test]
#
# 1. Debian packages (apt-get, as root): the Qt/xcb libraries and libpulse0 for the
#    desktop app; for "test" also xvfb, chromium and chromium-driver (browser tests
#    drive /usr/bin/chromium; Playwright never downloads a browser). Not root, or apt
#    fails: prints the exact `sudo apt-get install ...` line and stops.
# 2. A virtual environment in .venv with python3.11 if found, else python3 >= 3.10.
# 3. One pip command: torch pinned (also as a constraint, so no other package can swap
#    it) + this project in editable mode with its test extras. llama-cpp-python
#    compiles llama.cpp (~5 min on 2 idle cores) with CMAKE_ARGS=-DGGML_NATIVE=OFF so the
#    build runs on any x86-64 CPU with AVX2, not only the one that built it (see CMAKE_ARGS
#    below for what a native or runtime-dispatch build gains, and why neither is the default).
#    A stamp (hash of pyproject.toml + this script + the torch spec) skips pip when
#    nothing changed.
# 4. For "test": the source distribution of the installed llama-cpp-python (about 60 MB,
#    downloaded, not built) into ~/.cache/llamavid/sdist: the tests make their tiny
#    Qwen3-VL GGUF + mmproj with llama.cpp's own convert_hf_to_gguf.py from it.
#
# Environment overrides:
#   LLAMAVID_TORCH     torch requirement and pip options for it (default "torch==2.13.0"),
#                      e.g. a CUDA build:
#                      LLAMAVID_TORCH="torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cu126"
#   LLAMAVID_PYTHON    the Python to create .venv with (default: python3.11, else python3)
#   LLAMAVID_VENV      where the venv goes (default: .venv in the repository)
#   LLAMAVID_SKIP_APT  1: do not check or install Debian packages
#   LLAMAVID_REINSTALL 1: run pip even when the stamp says nothing changed
#   CMAKE_ARGS         passed to the llama-cpp-python build (default -DGGML_NATIVE=OFF;
#                      e.g. "-DGGML_CUDA=on" for CUDA offload). Measured (docs/performance.md,
#                      1.1B LLaMA, 2 threads, AMD EPYC Zen 4 with AVX-512): -DGGML_NATIVE=ON
#                      prefills q4_K_M ~27 % faster (98 vs 77 tok/s; decode +3 %, f16 no gain)
#                      but uses this CPU's instructions, so the venv, pip's wheel cache or an
#                      image copied to an older CPU crashes (SIGILL): only for a machine that
#                      builds for itself. Runtime dispatch (-DGGML_BACKEND_DL=ON
#                      -DGGML_CPU_ALL_VARIANTS=ON) builds in about the time of a native build
#                      and picks the zen4 kernels here, but llama-cpp-python 0.3.36 installs
#                      those backends in site-packages/bin, where ggml does not look: models
#                      then fail to load ("no backends are loaded"), so it is not the default.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-app}"
VENV="${LLAMAVID_VENV:-$ROOT/.venv}"
TORCH_SPEC="${LLAMAVID_TORCH:-torch==2.13.0}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[llamavid install] $*" >&2; }

case "$MODE" in
  app | test) ;;
  *) log "unknown mode '$MODE' (use: app or test)"; exit 2 ;;
esac

# ---------------------------------------------------------------- Python to use
find_python() {
  local c
  for c in ${LLAMAVID_PYTHON:-python3.11 python3}; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------- 1. Debian packages
APT_APP=(libegl1 libgl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
  libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 libpulse0)
APT_TEST=(xvfb chromium chromium-driver)

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

apt_packages() {
  local wanted=("${APT_APP[@]}") missing=() p py
  [[ $MODE == test ]] && wanted+=("${APT_TEST[@]}")
  # What the install itself needs: a C++ compiler (llama-cpp-python) and Python with venv.
  command -v c++ >/dev/null 2>&1 || wanted+=(g++ make)
  if py="$(find_python)"; then
    if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
      wanted+=("python$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv")
    fi
  else
    wanted+=(python3 python3-venv)
  fi
  for p in "${wanted[@]}"; do deb_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0

  local cmd="sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  if [[ "$(id -u)" == 0 ]]; then
    log "installing Debian packages: ${missing[*]}"
    if apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; then
      return 0
    fi
    log "apt-get failed."
  fi
  log "These Debian packages are missing: ${missing[*]}"
  log "Install them with:"
  echo "    $cmd" >&2
  log "then run this command again (or set LLAMAVID_SKIP_APT=1 to go on without them)."
  exit 1
}

if [[ "${LLAMAVID_SKIP_APT:-0}" == 1 ]]; then
  log "LLAMAVID_SKIP_APT=1: not checking Debian packages"
elif ! command -v dpkg-query >/dev/null 2>&1; then
  log "not a Debian-like system: make sure Qt's xcb libraries, libpulse, chromium and a C++ compiler are installed"
else
  apt_packages
fi

# ---------------------------------------------------------------- 2. virtual environment
PY="$(find_python)" || {
  log "no Python >= 3.10 found; install python3.11 (Debian: sudo apt-get install -y python3 python3-venv)"
  exit 1
}
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  log "creating $VENV with $PY ($("$PY" -V 2>&1))"
  "$PY" -m venv --clear "$VENV"
fi

# ---------------------------------------------------------------- 3. pip, unless unchanged
STAMP="$VENV/.llamavid-install-stamp"
if command -v sha256sum >/dev/null 2>&1; then hash_cmd=(sha256sum); else hash_cmd=(shasum -a 256); fi
want="$({
  cat "$ROOT/pyproject.toml" "$ROOT/scripts/install.sh"
  echo "$TORCH_SPEC|${CMAKE_ARGS:-}"
  "$VENV/bin/python" -VV
} | "${hash_cmd[@]}" | cut -d' ' -f1)"

# ---------------------------------------------------------------- 4. llama.cpp's converter (test)
converter_source() {
  [[ $MODE == test ]] || return 0
  local version dest
  version="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
  dest="${XDG_CACHE_HOME:-$HOME/.cache}/llamavid/sdist"
  if compgen -G "$dest/llama_cpp_python-$version.tar.gz" >/dev/null; then
    return 0
  fi
  log "downloading llama-cpp-python $version's source into $dest (the tests run its GGUF converter)"
  "$VENV/bin/python" -m pip download "llama-cpp-python==$version" --no-deps --no-binary llama-cpp-python \
    -d "$dest" >/dev/null
}

if [[ "${LLAMAVID_REINSTALL:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/llamavid" ]]; then
  log "Python packages up to date (delete $STAMP or set LLAMAVID_REINSTALL=1 to reinstall)"
  converter_source
  exit 0
fi

read -r -a torch_args <<<"$TORCH_SPEC"
constraints="$VENV/llamavid-constraints.txt"
echo "${torch_args[0]}" >"$constraints" # e.g. torch==2.13.0: no dependency may pick another torch
start=$SECONDS
log "pip install ${torch_args[*]} -e .[test]  (first time ~6 min: llama-cpp-python compiles llama.cpp)"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$VENV/bin/python" -m pip install \
  "${torch_args[@]}" -c "$constraints" -e "$ROOT[test]"
echo "$want" >"$STAMP"
log "Python packages installed in $((SECONDS - start)) s"
converter_source

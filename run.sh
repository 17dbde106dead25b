#!/usr/bin/env bash
# llamavid in one command. Each form first installs whatever is missing (Debian
# packages, .venv, Python packages; fast when already done), then:
#
#   ./run.sh                 opens the desktop app (the web UI where there is no display)
#   ./run.sh test [ARGS]     runs the whole test suite (pytest ARGS, default tests/)
#   ./run.sh install         only installs (add "test" for the test packages too)
#   ./run.sh COMMAND [ARGS]  runs `llamavid COMMAND ARGS`, e.g. ./run.sh doctor, ./run.sh web --port 8000
#
# Options for the install (CUDA torch, another Python...) are environment variables,
# listed at the top of scripts/install.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LLAMAVID_VENV:-$ROOT/.venv}"

case "${1:-app}" in
  test)
    shift
    "$ROOT/scripts/install.sh" test
    exec "$ROOT/scripts/test.sh" "$@"
    ;;
  install)
    exec "$ROOT/scripts/install.sh" "${2:-app}"
    ;;
  -h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    "$ROOT/scripts/install.sh" app
    (($# == 0)) && set -- app
    exec "$VENV/bin/llamavid" "$@"
    ;;
esac

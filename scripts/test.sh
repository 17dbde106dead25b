#!/usr/bin/env bash
# Run the whole test suite with the venv made by scripts/install.sh.
#
#   scripts/test.sh [pytest arguments]     (default: tests/)
#
# GUI tests run offscreen (QT_QPA_PLATFORM=offscreen); browser tests drive the
# Debian chromium at /usr/bin/chromium through Playwright. Nothing goes to the network.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLAMAVID_VENV:-$ROOT/.venv}"
cd "$ROOT"

export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export PYTHONUNBUFFERED=1

(($# == 0)) && set -- tests
"$VENV/bin/python" -m pytest "$@"
rc=$?
case $rc in
  0) echo "llamavid tests: all passed" ;;
  5) echo "llamavid tests: FAILED - pytest collected no tests (exit status 5)" ;;
  *) echo "llamavid tests: FAILED (pytest exit status $rc)" ;;
esac
# Exit status 5 ("no tests collected") is a failure too: an empty run proves nothing.
exit $((rc == 5 ? 1 : rc))

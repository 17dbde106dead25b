#!/usr/bin/env bash
# Lint, then run the test suite, with the venv made by scripts/install.sh.
#
#   scripts/test.sh [pytest arguments]     (default: tests/)
#
# 1. `ruff check .` over the whole repository (configuration: [tool.ruff] in pyproject.toml).
#    It always runs, with or without pytest arguments: it takes about a second, so
#    `./run.sh test tests/test_cli.py` lints too. A ruff failure does not stop the tests:
#    pytest still runs, and the run fails at the end (last line says which part failed).
#    LLAMAVID_SKIP_RUFF=1 skips it (never in CI).
# 2. pytest with the given arguments. Every tier runs but `gpu`, which pytest skips where
#    there is no CUDA GPU and counts in a "gpu tier: N tests skipped (...)" line.
#    The 25 slowest test phases are listed with their durations (--durations=25; another
#    --durations=N among the arguments overrides it): a test over 30 s belongs in the `slow` tier.
#    The test files run in parallel, one pytest-xdist worker per core (-n auto), each file on one
#    worker (--dist loadfile: a file's module fixtures, such as a served library, are made once);
#    -n 0 among the arguments runs everything in one process.
#    GUI tests run offscreen (QT_QPA_PLATFORM=offscreen); browser tests drive the Debian
#    chromium at /usr/bin/chromium through Playwright. Nothing goes to the network.
#    With CI set (.ci/run sets CI=true), a missing chromium or Xvfb fails its tests
#    instead of skipping them.
#
# The last line is "llamavid tests: all passed" or "llamavid tests: FAILED ..."; the exit
# status is pytest's, or 1 when only ruff failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLAMAVID_VENV:-$ROOT/.venv}"
cd "$ROOT"

export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
export PYTHONUNBUFFERED=1

# ---------------------------------------------------------------- 1. ruff
lint="passed"
if [[ "${LLAMAVID_SKIP_RUFF:-0}" == 1 && -z "${CI:-}" ]]; then
  lint="skipped"
  echo "llamavid tests: ruff check skipped (LLAMAVID_SKIP_RUFF=1)"
elif [[ ! -x "$VENV/bin/ruff" ]]; then
  lint="missing"
  echo "llamavid tests: ruff is not installed in $VENV (it is in the test extra: ./run.sh install test)"
else
  echo "llamavid tests: ruff check . ($("$VENV/bin/ruff" --version))"
  "$VENV/bin/ruff" check --output-format=concise .
  ruff_rc=$?
  if ((ruff_rc != 0)); then
    lint="failed"
    echo "ruff check: FAILED (exit status $ruff_rc); problems by rule:"
    "$VENV/bin/ruff" check --statistics . 2>/dev/null | grep -v '^\[\*\]\|^Found '
  fi
fi

# ---------------------------------------------------------------- 2. pytest
(($# == 0)) && set -- tests
parallel=(-n auto --dist loadfile)
if ! "$VENV/bin/python" -c 'import xdist' >/dev/null 2>&1; then
  parallel=()
  echo "llamavid tests: pytest-xdist is not installed in $VENV, so the tests run in one process (./run.sh install test)"
fi
"$VENV/bin/python" -m pytest "${parallel[@]}" --durations=25 "$@"
rc=$?

case $lint in
  failed) why="ruff check found problems (listed above, before the tests)" ;;
  missing) why="ruff is not installed in $VENV" ;;
  *) why="" ;;
esac
case $rc in
  0) if [[ -z $why ]]; then echo "llamavid tests: all passed"; else echo "llamavid tests: FAILED - $why; pytest passed"; fi ;;
  5) echo "llamavid tests: FAILED - pytest collected no tests (exit status 5)${why:+; $why}" ;;
  *) echo "llamavid tests: FAILED (pytest exit status $rc)${why:+; $why}" ;;
esac
# Exit status 5 ("no tests collected") is a failure too: an empty run proves nothing.
((rc == 5)) && rc=1
((rc == 0)) && [[ -n $why ]] && rc=1
exit "$rc"

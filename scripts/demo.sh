#!/usr/bin/env bash
# Install roomkey into .venv and run its main job: the demo on embedded defaults.
# Extra arguments go to `roomkey demo` (e.g. --for 60).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/roomkey demo "$@"

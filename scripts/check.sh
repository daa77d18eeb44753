#!/usr/bin/env bash
# Install everything roomkey needs into .venv, then run every check and test.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

echo "== ruff"
RUFF_PATHS="src tests"
[ -d bench ] && RUFF_PATHS="$RUFF_PATHS bench"
# shellcheck disable=SC2086
.venv/bin/ruff check $RUFF_PATHS
echo "== mypy --strict"
.venv/bin/mypy
echo "== import boundaries"
.venv/bin/lint-imports

# PostgreSQL-backed tests run against the local server; in CI they must not be skipped.
export ROOMKEY_TEST_PG_URL=${ROOMKEY_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
if [ "${CI:-}" = "true" ]; then
    export ROOMKEY_REQUIRE_PG=1
fi
# The browser tests drive Debian's chromium with Playwright (no browser download).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    elif [ "${CI:-}" = "true" ]; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    else
        echo "== chromium missing and not root: browser tests will be skipped (apt-get install chromium)"
    fi
fi
echo "== pytest"
.venv/bin/pytest "$@"

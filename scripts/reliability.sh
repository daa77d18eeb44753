#!/usr/bin/env bash
# roomkey's proof suites (tests/reliability): crash, faults, bad input, security, scale-out.
#
#   scripts/reliability.sh                 short mode (what CI runs; a few minutes)
#   scripts/reliability.sh --long          long mode: the figures of docs/reliability.md
#   scripts/reliability.sh --sabotage      run each suite with its guarantee deliberately
#                                          broken (test harness only) and show it FAILS
#   scripts/reliability.sh [--long] test_crash.py ...   only these suites
#
# Figures are written to $ROOMKEY_FIGURES_DIR/<suite>.json (default
# ${TMPDIR:-/tmp}/roomkey-reliability); docs/reliability.md quotes the last long run.
# PostgreSQL: ROOMKEY_TEST_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=short
sabotage=0
suites=()
for arg in "$@"; do
    case "$arg" in
        --long) mode=long ;;
        --sabotage) sabotage=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) suites+=("tests/reliability/${arg#tests/reliability/}") ;;
    esac
done
[ ${#suites[@]} -eq 0 ] && suites=(tests/reliability)
export ROOMKEY_TEST_PG_URL=${ROOMKEY_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
[ "$mode" = long ] && export ROOMKEY_LONG=1
export ROOMKEY_FIGURES_DIR=${ROOMKEY_FIGURES_DIR:-${TMPDIR:-/tmp}/roomkey-reliability}

if [ "$sabotage" = 0 ]; then
    echo "reliability suites, $mode mode; figures in $ROOMKEY_FIGURES_DIR"
    exec .venv/bin/pytest "${suites[@]}" -p no:cacheprovider -q -o addopts="-ra --strict-markers"
fi

# Each line: sabotage switch, the suite that must catch it, and (optionally) a -k filter.
checks=(
    "mark_read_before_commit test_crash.py"
    "resend_maybe_sent test_crash.py"
    "retry_maybe_delivered test_faults.py 5xx_is_maybe or dropped_after"
    "receiver_500 test_bad_input.py lockme_receiver"
    "log_secret test_security.py demo_run"
    "plain_secrets test_security.py encrypted_at_rest"
    "no_constant_time test_security.py constant_time"
    "skip_claim test_scale_out.py"
)
export ROOMKEY_FIGURES_DIR=$ROOMKEY_FIGURES_DIR/sabotage
status=0
for line in "${checks[@]}"; do
    read -r name suite filter <<<"$line"
    args=("tests/reliability/$suite" -p no:cacheprovider -q -x)
    [ -n "${filter:-}" ] && args+=(-k "$filter")
    printf '== sabotage %-24s -> %-20s ' "$name" "$suite"
    if ROOMKEY_SABOTAGE=$name .venv/bin/pytest "${args[@]}" >"/tmp/roomkey-sabotage-$name.log" 2>&1
    then
        echo "NOT CAUGHT (the suite passed; see /tmp/roomkey-sabotage-$name.log)"
        status=1
    elif grep -q -E "roomkey serve exited with|roomkey serve not ready|ImportError|collected 0 items" \
        "/tmp/roomkey-sabotage-$name.log"; then
        echo "INVALID (the sabotaged run did not start; see /tmp/roomkey-sabotage-$name.log)"
        status=1
    else
        echo "caught: $(grep -m1 -E '^E +[A-Za-z]*(Error|assert)' "/tmp/roomkey-sabotage-$name.log" \
            | sed 's/^E *//' | cut -c1-110)"
    fi
done
exit $status

#!/usr/bin/env bash
# The nightly job: the main job (`proxyrig run`) into a new subdirectory of
# the history, its report rendered with trend charts and significance tests
# against the earlier nights, then the long tests (go test -tags nightly).
#
# Usage: ci/nightly.sh [HISTORY_DIR]     (default: $HISTORY, else out/history)
#   extra flags for proxyrig run: NIGHTLY_RUN_FLAGS="--datapaths iptables"
#   NIGHTLY_LONG_TESTS=0 leaves out the long tests (to try the trend
#   machinery quickly: two such runs with --quick take minutes)
#
# Each night is HISTORY_DIR/<UTC timestamp>/, holding everything proxyrig run
# writes (doctor.json, conformance*/, bench/, run.json, report.html). The
# newest report is also copied to HISTORY_DIR/latest.html.
#
# Bench runs with --reps 5: with 3 repetitions a night the Mann-Whitney test
# can never flag a change among a hundred-odd figures (reports/README.md).
# The report is rendered by proxyrig run itself with --history, which leaves
# this night's own directory out of the history: compared with its own copy,
# every figure would read "no significant change".
#
# Exit status: non-zero if the main job or the long tests failed. Both
# always run, and the report is written either way.
set -uo pipefail
cd "$(dirname "$0")/.."

history=${1:-${HISTORY:-out/history}}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
run_dir="$history/$stamp"
mkdir -p "$history"

# Idempotent: when everything is present it only checks.
bash ci/install-deps.sh || exit 1
make --no-print-directory build || exit 1

status=0
echo "== nightly: proxyrig run into $run_dir (history: $history)"
# shellcheck disable=SC2086 # NIGHTLY_RUN_FLAGS is a list of flags
if ! ./bin/proxyrig run --out "$run_dir" --reps 5 --history "$history" ${NIGHTLY_RUN_FLAGS:-}; then
  echo "== nightly: proxyrig run FAILED (the report still has whatever finished)"
  status=1
fi
if [ -f "$run_dir/report.html" ]; then
  cp "$run_dir/report.html" "$history/latest.html"
  echo "== nightly: report $run_dir/report.html (also $history/latest.html)"
else
  echo "== nightly: no report was written"
  status=1
fi

# The long fuzz and scale tests live behind the nightly build tag. The
# conformance package is left out as in `make unit`: its suite already ran
# above, in parallel, through proxyrig run.
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
mkdir -p "$run_dir"
if [ "${NIGHTLY_LONG_TESTS:-1}" = 0 ]; then
  # For trying the history and trend machinery quickly; a real night
  # always runs them.
  echo "== nightly: NIGHTLY_LONG_TESTS=0: long tests not run this time"
else
  echo "== nightly: go test -tags nightly (every package but the conformance suite)"
  # shellcheck disable=SC2046 # one argument per package
  if ! "$GO" test -tags nightly -p 2 -count=1 -timeout 3h $("$GO" list -tags nightly ./... | grep -v '/conformance$') 2>&1 |
    tee "$run_dir/nightly-tests.txt"; then
    echo "== nightly: long tests FAILED (log: $run_dir/nightly-tests.txt)"
    status=1
  fi
  # Every fuzz target for longer than make test's few seconds; a crasher
  # is left under <package>/testdata/fuzz/ to be committed.
  echo "== nightly: fuzzing, ${NIGHTLY_FUZZTIME:-5m} per target"
  if ! bash ci/fuzz.sh "${NIGHTLY_FUZZTIME:-5m}" 2>&1 | tee "$run_dir/nightly-fuzz.txt"; then
    echo "== nightly: fuzzing FAILED (log: $run_dir/nightly-fuzz.txt)"
    status=1
  fi
fi

# Whatever failed, leave no lab behind for the next night.
./bin/proxyrig cleanup >/dev/null 2>&1 || true
exit $status

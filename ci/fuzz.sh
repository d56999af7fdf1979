#!/usr/bin/env bash
# Runs every go test -fuzz target for DURATION each, one after the other,
# with one fuzzing worker (-parallel 1: the CI machine has two cores and the
# other tests run beside it). Needs no root: the targets are pure (parser
# and renderers).
#
# Usage: ci/fuzz.sh [DURATION]      (default 10s; any -fuzztime value)
#   FUZZ_TARGETS="model:FuzzParse" limits the run to the listed targets.
#
# -fuzzminimizetime is kept short: every new interesting input is minimized
# before fuzzing goes on, and with the default (60 s) one minimization can
# eat the whole budget of a short run. A crasher is still minimized when
# reproduced with go test -run.
#
# A failure leaves the crashing input under <package>/testdata/fuzz/<Target>/
# (commit it: it becomes a regression test that plain go test runs). The
# script runs every target even after a failure and exits non-zero naming
# the targets that failed.
set -uo pipefail
cd "$(dirname "$0")/.."

duration=${1:-10s}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

# package:target, in the order they run.
targets=${FUZZ_TARGETS:-"
./model:FuzzParse
./datapaths/iptables:FuzzRender
./datapaths/nftables:FuzzRender
./datapaths/ipvs:FuzzRender
./datapaths/ebpf:FuzzRender
"}

failed=()
for t in $targets; do
  pkg=${t%%:*}
  name=${t##*:}
  echo "== fuzz: $name in $pkg for $duration"
  corpus="$pkg/testdata/fuzz/$name"
  before=$(ls "$corpus" 2>/dev/null | sort)
  log=$(mktemp)
  "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" -fuzzminimizetime 100x \
    -parallel 1 "$pkg" 2>&1 | tee "$log"
  code=${PIPESTATUS[0]}
  after=$(ls "$corpus" 2>/dev/null | sort)
  if [ "$code" -ne 0 ]; then
    if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$log"; then
      # Go 1.26's fuzz coordinator can report its own -fuzztime deadline
      # as a failure when a worker is mid-input at that instant
      # (golang/go#75804, fixed in Go 1.27). A real failure always writes
      # its input to the corpus directory; this one wrote nothing.
      echo "== fuzz: $name: ignored the coordinator's end-of-fuzztime race (golang/go#75804): no failing input was written"
    else
      echo "== fuzz: $name in $pkg FAILED (the failing input, if any, is under $corpus/)"
      failed+=("$pkg:$name")
    fi
  fi
  rm -f "$log"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "== fuzz: all targets passed ($duration each)"

#!/usr/bin/env bash
# Runs the test suites between two snapshots of the root network namespace
# (ci/host-snapshot.sh) and fails if anything changed — also when a suite
# failed, because failure paths are exactly where debris is left. Called by
# `make test` after the dependencies are installed and the code is built.
#
# Usage: ci/test.sh <make target>...
set -u
cd "$(dirname "$0")/.."
out=${OUT:-out}
mkdir -p "$out"
before="$out/host-before.txt"
after="$out/host-after.txt"

bash ci/host-snapshot.sh >"$before"
status=0
for target in "$@"; do
  echo "== make $target"
  if ! make --no-print-directory "$target"; then
    echo "== make $target FAILED"
    status=1
  fi
done
bash ci/host-snapshot.sh >"$after"

if ! diff -u "$before" "$after" >"$out/host-diff.txt"; then
  echo "== HOST CHANGED: the test run left the root namespace different from how it found it:"
  cat "$out/host-diff.txt"
  echo "== (snapshots: $before, $after)"
  # Leave the machine usable for whoever comes next, but still fail.
  ./bin/proxyrig cleanup || true
  status=1
else
  echo "== host untouched: root namespace identical before and after ($(grep -c . "$before") lines compared)"
fi
exit $status

#!/usr/bin/env bash
# Runs fuzz targets for SECONDS each, two at a time, at the lowest CPU priority, with the
# limits that catch hangs and unbounded allocations. Usage (from anywhere):
#   fuzz/run.sh SECONDS TARGET...      e.g.  fuzz/run.sh 600 conllu conll
#   fuzz/run.sh SECONDS all
# Corpora grow in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), crashes land in
# fuzz/artifacts/TARGET, logs in fuzz/logs/TARGET.log (all git-ignored). Builds go to
# $CARGO_TARGET_DIR (default: target-fuzz beside the fuzz folder).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:?usage: fuzz/run.sh SECONDS TARGET... | all}
shift
if [ "${1:-}" = all ]; then
  set -- $(cargo +nightly fuzz list)
fi
# Error messages without captured backtraces, as the `rnn` binary prints them (capturing and
# symbolising one under AddressSanitizer takes seconds and reads as a timeout).
export RUST_LIB_BACKTRACE=0
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd .. && pwd)/target-fuzz}
mkdir -p logs
nice -n 19 cargo +nightly fuzz build
run_one() {
  local t=$1
  mkdir -p "corpus/$t"
  nice -n 19 cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"logs/$t.log" 2>&1 || echo "$t: FAILED (see fuzz/logs/$t.log)"
  echo "$t: $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "logs/$t.log" | tail -1)"
}
while [ $# -gt 0 ]; do
  run_one "$1" &
  if [ $# -gt 1 ]; then run_one "$2" & shift; fi
  shift
  wait
done

#!/bin/bash
# Layer-normalised LSTM/GRU (issue 29) against the plain cells, both with the fused CPU op:
# `rnn bench` without and with --layer-norm, back to back, ROUNDS rounds, f32, 1 layer.
# Prints one line per round: cell mode shape round plain_ms layer_norm_ms ratio.
# BIN defaults to the release binary (cargo build --release --features cli --bin rnn).
set -euo pipefail
BIN=${BIN:-target/release/rnn}
ROUNDS=${ROUNDS:-5}
# Timed iterations per run: short runs overstate the small shape's cost (a 10-iteration median
# read 1.4x where 2000 iterations read 1.05x on the same machine).
ITERS_LARGE=${ITERS_LARGE:-20}
ITERS_SMALL=${ITERS_SMALL:-300}
median() { python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])'; }
for shape in "32 64 256 256" "1 100 64 128"; do
  set -- $shape
  if [ "$1" -ge 8 ]; then ITERS=$ITERS_LARGE; else ITERS=$ITERS_SMALL; fi
  for cell in lstm gru; do
    for mode in train infer; do
      for r in $(seq "$ROUNDS"); do
        args=(bench --cell $cell --batch $1 --seq-len $2 --input-size $3 --hidden-size $4
              --mode $mode --iters "$ITERS" --json)
        p=$("$BIN" "${args[@]}" | median)
        l=$("$BIN" "${args[@]}" --layer-norm | median)
        echo "$cell $mode B$1 T$2 I$3 H$4 round$r $p $l $(python3 -c "print(f'{$l / $p:.2f}')")"
      done
    done
  done
done

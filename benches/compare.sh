#!/usr/bin/env bash
# Side-by-side timings: this project (fused, composed), candle-nn and PyTorch, same shapes, back to
# back, one JSON line each. Usage:
#   TORCH_PY=/path/to/venv/bin/python [ROUNDS=3] bash benches/compare.sh > benches/results.jsonl
# ROUNDS repeats the whole sweep (default 1); benches/table.py reports the median over rounds,
# and each round measures every implementation of a shape back to back.
# PyTorch rows are skipped when TORCH_PY is unset. Needs ../shared/reference/torch_rnn_bench.py
# (or TORCH_BENCH=path) for the PyTorch rows.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin rnn >&2
RNN=${CARGO_TARGET_DIR:-target}/release/rnn
TORCH_BENCH=${TORCH_BENCH:-../shared/reference/torch_rnn_bench.py}
# cell B T I H iters
SHAPES=(
  "lstm 32 64 256 256 20"
  "gru 32 64 256 256 20"
  "rnn-tanh 32 64 256 256 20"
  "lstm 1 100 64 128 50"
  "gru 1 100 64 128 50"
  "lstm 64 128 512 1024 3"
)
for round in $(seq "${ROUNDS:-1}"); do
echo "round $round" >&2
for shape in "${SHAPES[@]}"; do
  read -r cell b t i h iters <<<"$shape"
  for mode in train infer; do
    if [ "$cell $b" = "lstm 64" ] && [ "$mode" = infer ]; then continue; fi
    impls="fused candle-nn"
    [ "$b" -le 32 ] && impls="fused composed candle-nn"
    for impl in $impls; do
      if [ "$impl" = candle-nn ] && [ "$cell" = rnn-tanh ]; then continue; fi
      n=$iters; [ "$impl" != fused ] && n=$(( (iters + 2) / 3 ))
      "$RNN" bench --cell "$cell" --batch "$b" --seq-len "$t" --input-size "$i" --hidden-size "$h" \
        --mode "$mode" --impl "$impl" --iters "$n" --json
    done
    if [ -n "${TORCH_PY:-}" ]; then
      tcell=${cell%-tanh}
      "$TORCH_PY" "$TORCH_BENCH" "$tcell" "$b" "$t" "$i" "$h" "$iters" "$mode" 2>/dev/null
    fi
  done
done
done

#!/usr/bin/env bash
# The cost of each mask option of issue 29 over the plain cell, with `rnn bench`, back to back:
# every round times the plain cell and then each option on the same shape, so that the ratios
# compare runs seconds apart on this shared machine. One JSON line per run on stdout;
# `python3 benches/masks_table.py` turns them into the table of benches/README.md.
#   ROUNDS=3 ITERS=5 bash benches/masks.sh > /tmp/masks.jsonl
set -euo pipefail
RNN=${RNN:-target/release/rnn}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-5}
SHAPE=(--batch 32 --seq-len 64 --input-size 256 --hidden-size 256)
OPTIONS=(
  ""
  "--zoneout 0.1"
  "--recurrent-dropout 0.25"
  "--weight-drop 0.5"
  "--variational-dropout 0.2"
  "--zoneout 0.1 --recurrent-dropout 0.25 --weight-drop 0.5 --variational-dropout 0.2"
)
for round in $(seq "$ROUNDS"); do
  for cell in lstm gru rnn-tanh; do
    for mode in train infer; do
      for opt in "${OPTIONS[@]}"; do
        # In inference only zoneout acts (its expectation); the dropouts are training-only.
        if [[ $mode == infer && -n $opt && $opt != "--zoneout 0.1" ]]; then continue; fi
        # shellcheck disable=SC2086
        "$RNN" bench --cell "$cell" --mode "$mode" "${SHAPE[@]}" --iters "$ITERS" --json $opt \
          | sed "s/^{/{\"round\":$round,\"options\":\"$opt\",/"
      done
    done
  done
done

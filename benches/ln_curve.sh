#!/usr/bin/env bash
# The default char-LM with and without layer normalisation (issue 29): validation loss against
# wall time, one run after the other on the same host. Usage:
#   [EPOCHS=3] [EVAL_EVERY=50] bash benches/ln_curve.sh > curve.csv
# Prints CSV: variant,step,seconds,valid_loss (seconds as `rnn train` prints them after each
# evaluation, whole seconds since the start of training). Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin rnn >&2
RNN=${CARGO_TARGET_DIR:-target}/release/rnn
DATA=${DATA:-../shared/data}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "variant,step,seconds,valid_loss"
for variant in plain layer-norm; do
  flags=()
  [ "$variant" = layer-norm ] && flags=(--layer-norm)
  "$RNN" train char-lm --data "$DATA/char_lm/tinyshakespeare.txt" --epochs "${EPOCHS:-3}" \
    --eval-every "${EVAL_EVERY:-50}" "${flags[@]}" --out "$out/$variant" 2>&1 |
    sed -n "s/^step \([0-9]*\) .*valid loss \([0-9.]*\).*\[\([0-9]*\)m\([0-9]*\)s\]$/$variant,\1,\3 \4,\2/p" |
    awk -F, '{split($3, t, " "); printf "%s,%s,%d,%s\n", $1, $2, t[1] * 60 + t[2], $4}'
done

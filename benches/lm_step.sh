#!/usr/bin/env bash
# One training step of the default char-LM and word-LM, this project against its PyTorch twin
# (benches/lm_step_torch.py), on the same host, in interleaved rounds. Usage:
#   TORCH_PY=/path/to/venv/bin/python [ROUNDS=3] [STEPS=150] [TASKS="word-lm char-lm"] bash benches/lm_step.sh
# TASKS may also name `tag` (RESULTS.md's POS tagger; twin benches/tag_step_torch.py) and
# `seq2seq` (RESULTS.md's translation model; twin benches/seq2seq_step_torch.py).
# Our step time is the difference between `rnn train --max-steps S1` and `--max-steps S2` runs
# (wall clock), divided by S2 - S1: set-up, vocabulary, the final evaluation and the checkpoint
# cancel out, so it is the mean step (batching, forward, loss, backward, clipping, optimiser).
# Needs ../shared/data (PTB and tinyshakespeare). Prints one JSON line per task and round.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin rnn >&2
RNN=${CARGO_TARGET_DIR:-target}/release/rnn
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-150}
S1=10
S2=$((S1 + STEPS))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)

ours() { # task data... -> seconds for S1 and S2 steps
  local task=$1
  shift
  for s in $S1 $S2; do
    rm -rf "$out/run"
    /usr/bin/time -f %e -o "$out/time" "$RNN" train "$task" "$@" --max-steps "$s" \
      --out "$out/run" >/dev/null 2>"$out/err" || { cat "$out/err" >&2; exit 1; }
    tail -1 "$out/time"
  done
}

for round in $(seq "${ROUNDS:-3}"); do
  for task in ${TASKS:-word-lm char-lm}; do
    twin=(benches/lm_step_torch.py "$task")
    if [ "$task" = word-lm ]; then
      args=(--data "$DATA/word_lm/ptb.train.txt" --valid "$DATA/word_lm/ptb.valid.txt")
      file=$DATA/word_lm/ptb.train.txt
    elif [ "$task" = tag ]; then
      # RESULTS.md's POS-tagging model (two BiLSTM layers); the twin is tag_step_torch.py.
      args=(--data "$DATA/tagging/en_ewt-ud-train.conllu"
        --valid "$DATA/tagging/en_ewt-ud-dev.conllu" --layers 2)
      file=$DATA/tagging/en_ewt-ud-train.conllu
      twin=(benches/tag_step_torch.py)
    elif [ "$task" = seq2seq ]; then
      # RESULTS.md's translation model; the twin is seq2seq_step_torch.py.
      args=(--data "$DATA/translation/fra.txt" --level tutorial --target 0)
      file=$DATA/translation/fra.txt
      twin=(benches/seq2seq_step_torch.py)
    else
      args=(--data "$DATA/char_lm/tinyshakespeare.txt")
      file=$DATA/char_lm/tinyshakespeare.txt
    fi
    mapfile -t secs < <(ours "$task" "${args[@]}")
    ms=$(python3 -c "print(round((${secs[1]} - ${secs[0]}) * 1000 / $STEPS, 2))")
    echo "{\"impl\": \"ours\", \"task\": \"$task\", \"round\": $round, \"cpu\": \"$cpu\", \"mean_ms\": $ms, \"steps\": $STEPS}"
    if [ -n "${TORCH_PY:-}" ]; then
      "$TORCH_PY" "${twin[@]}" "$file" --steps "$STEPS" |
        sed "s/^{/{\"round\": $round, \"cpu\": \"$cpu\", /"
    fi
  done
done

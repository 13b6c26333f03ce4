#!/usr/bin/env bash
# One training step of the default char-LM and word-LM, this project against its PyTorch twin
# (benches/lm_step_torch.py), on the same host, in interleaved rounds. Usage:
#   TORCH_PY=/path/to/venv/bin/python [ROUNDS=3] [STEPS=150] [TASKS="word-lm char-lm"] bash benches/lm_step.sh
# TASKS may also name `tag` (RESULTS.md's POS tagger; twin benches/tag_step_torch.py) and
# `seq2seq` (RESULTS.md's translation model; twin benches/seq2seq_step_torch.py).
# Our step time is the difference between the training times of `rnn train --max-steps S1` and
# `--max-steps S2` runs, divided by S2 - S1. The training time is the one `rnn train` prints
# ("training took X s for N steps": batching and steps, without evaluations, checkpoints and
# set-up), so an epoch-end evaluation inside the S2 run (translation: 148 steps per epoch) is
# left out and the first steps' one-off costs (kernel calibration, allocations) cancel out: it
# is the mean step (batching, forward, loss, backward, clipping, optimiser), as the twins time it.
# Needs ../shared/data (or DATA=DIR with its layout). Prints one JSON line per task and round on stdout and, with TORCH_PY,
# each task's ratio per round and their median on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
# RNN=PATH: a binary built elsewhere (a host without cargo: benches/device_cpu_survey.sh).
if [ -z "${RNN:-}" ]; then
  cargo build --release --bin rnn >&2
  RNN=${CARGO_TARGET_DIR:-target}/release/rnn
fi
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
    "$RNN" train "$task" "$@" --max-steps "$s" --out "$out/run" >/dev/null 2>"$out/err" ||
      { cat "$out/err" >&2; exit 1; }
    sed -n 's/.*training took \([0-9.]*\) s for .*/\1/p' "$out/err" | tail -1
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
    [ "${#secs[@]}" -eq 2 ] || { echo "rnn train printed no training time" >&2; exit 1; }
    ms=$(python3 -c "print(round((${secs[1]} - ${secs[0]}) * 1000 / $STEPS, 2))")
    echo "{\"impl\": \"ours\", \"task\": \"$task\", \"round\": $round, \"cpu\": \"$cpu\", \"mean_ms\": $ms, \"steps\": $STEPS}" |
      tee -a "$out/lines"
    if [ -n "${TORCH_PY:-}" ]; then
      "$TORCH_PY" "${twin[@]}" "$file" --steps "$STEPS" |
        sed "s/^{/{\"round\": $round, \"cpu\": \"$cpu\", /" | tee -a "$out/lines"
    fi
  done
done
# On stderr: per task, each round's ratio ours / PyTorch and their median (this host's rounds
# swing by 20% either way, so one round says little).
if [ -n "${TORCH_PY:-}" ]; then
  python3 - "$out/lines" >&2 <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
ours = {(r["task"], r["round"]): r["mean_ms"] for r in rows if r["impl"] == "ours"}
ratios = {}
for r in rows:
    if r["impl"] != "ours" and (r["task"], r["round"]) in ours:
        ratios.setdefault(r["task"], []).append(ours[(r["task"], r["round"])] / r["mean_ms"])
for task, rs in ratios.items():
    each = ", ".join(f"{x:.2f}x" for x in rs)
    print(f"{task}: ours / PyTorch per round {each}; median {statistics.median(rs):.2f}x")
PY
fi

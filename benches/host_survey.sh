#!/usr/bin/env bash
# Everything issue 28 asks of a CPU host, in one command, for a host nobody has measured yet
# (an Intel Xeon, an AVX2-only AMD): the FMA peak, the shape grid against PyTorch with the
# kernels chosen by measurement, the grid again with every product pinned to each further kernel
# this CPU runs and PyTorch held to AVX2 as well, the end-to-end LM steps, and the kernel tests
# that force every ISA path. Usage:
#   TORCH_PY=/path/to/venv/bin/python bash benches/host_survey.sh [OUT]
# OUT defaults to benches/results/survey-<cpu-model>-<date>; it receives survey.md (host, commands,
# every target per run, the profiles' top symbols), the grids' reports and logs, perf-*.txt,
# lm_step.jsonl and the tests' log.
# About 35 minutes on 2 cores (two or three grids of about 10 minutes, the LM steps about 6).
# Run it on a quiet host: anything else running shows up in every number (each grid report
# records the load average). GRID_ARGS (extra `rnn bench --grid` flags), ROUNDS and STEPS (of
# benches/lm_step.sh), PROFILE_ITERS and PROFILE_STEPS shrink it for a trial run; GRIDS picks
# the grids (default "auto both-avx2"; both-avx2 runs on AVX-512 hosts only); RULES=0 skips the
# thread rules' on/off comparison (RULE_ITERS iterations each). On a host without
# cargo (a lent machine: benches/device_cpu_survey.sh), RNN=PATH names the `rnn` binary,
# KERNEL_TESTS=PATH the rnn-core unit-test executable and OUTPUT_LAYER_BENCH=PATH the
# output_layer bench (all built elsewhere, benches/cpu_kit.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TORCH_PY:?set TORCH_PY to a Python with PyTorch (see ../shared/reference/README.md)}"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
slug=$(printf '%s' "$cpu" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')
out=${1:-benches/results/survey-$slug-$(date -u +%Y%m%d)}
mkdir -p "$out"
if [ -z "${RNN:-}" ]; then
  cargo build --release --bin rnn >&2
  RNN=${CARGO_TARGET_DIR:-target}/release/rnn
fi
export RNN
md=$out/survey.md
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_bf16|avx512vl)$' | sort | tr '\n' ' ')
{
  echo "# Host survey: $cpu"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M') UTC; commit ${SURVEY_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}."
  echo "CPU: $(grep -m3 -E '^(vendor_id|cpu family|model)\s' /proc/cpuinfo | sed 's/.*: //' | paste -sd' ')," \
    "$(nproc) threads; flags of interest: $flags"
  echo "PyTorch: $("$TORCH_PY" -c 'import torch; print(torch.__version__, torch.get_num_threads(), "threads")')"
  echo
} >"$md"

# The FMA peak: the ceiling for every GFLOP/s rate of the grids.
if command -v gcc >/dev/null; then
  gcc -O2 -mavx2 -mfma -pthread -o "$out/fma_peak" benches/fma_peak.c
  {
    echo "## FMA peak (benches/fma_peak.c, 256-bit FMAs)"
    echo
    for t in 1 "$(nproc)"; do echo "- $("$out/fma_peak" "$t")"; done
    echo
  } >>"$md"
  rm -f "$out/fma_peak"
fi

# Every kernel this CPU runs, each against the portable path (issue 28, item 4).
kernel_tests() {
  if [ -n "${KERNEL_TESTS:-}" ]; then "$KERNEL_TESTS" gemm; else cargo test --release -p rnn-core --lib gemm; fi
}
kernel_tests >"$out/kernel-tests.log" 2>&1 &&
  echo "Kernel tests (every ISA path against the portable one): passed, $(grep -c '\.\.\. ok' "$out/kernel-tests.log") tests (kernel-tests.log)." >>"$md" ||
  echo "Kernel tests: FAILED (kernel-tests.log)." >>"$md"
echo >>"$md"

grid() { # name, then environment assignments for the run
  local name=$1
  shift
  mkdir -p "$out/$name"
  # shellcheck disable=SC2086 # GRID_ARGS is a list of flags
  env "$@" "$RNN" bench --grid --pytorch "$TORCH_PY" --grid-out "$out/$name" ${GRID_ARGS:-} \
    >"$out/$name.log" 2>&1
  {
    echo "## Grid: $name (${*:-RNN_KERNEL=auto})"
    echo
    grep '^target:' "$out/$name.log" | sed 's/^target: /- /'
    grep -m1 'rows in' "$out/$name"/*.md | sed 's/ (.*//; s/^/- /'
    echo
  } >>"$md"
}

GRIDS=${GRIDS:-auto both-avx2}
if [[ " $GRIDS " == *" auto "* ]]; then grid auto; fi
if [[ " $GRIDS " == *" both-avx2 "* ]] && grep -q avx512f <<<"$flags"; then
  # An AVX-512 host stands in for the AVX2 host class with both sides held to AVX2 (oneDNN's
  # verbose log then reads `isa:Intel AVX2`).
  grid both-avx2 RNN_KERNEL=avx2 RNN_KERNEL_CACHE=off ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
fi

# Where the time goes (issue 28, item 6): the hottest symbols of the issue's headline LSTM case
# and of the default word-LM's training, if perf is installed.
if command -v perf >/dev/null; then
  DATA=${DATA:-../shared/data}
  profile() { # name, then the rnn command line
    local name=$1
    shift
    perf record -q -F 999 -g -o "$out/perf.data" "$RNN" "$@" >/dev/null 2>&1 &&
      perf report -i "$out/perf.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' >"$out/perf-$name.txt" || true
    rm -f "$out/perf.data"
    {
      echo "### Profile: $name (perf-$name.txt; self time, symbols over 1.5%)"
      echo
      head -12 "$out/perf-$name.txt" | sed 's/^ */    /'
      echo
    } >>"$md"
  }
  profile lstm-32x64x256x256-train bench --cell lstm --batch 32 --seq-len 64 --input-size 256 \
    --hidden-size 256 --mode train --iters "${PROFILE_ITERS:-100}"
  if [ -f "$DATA/word_lm/ptb.train.txt" ]; then
    rm -rf "$out/wordlm-run"
    profile word-lm-train train word-lm --data "$DATA/word_lm/ptb.train.txt" \
      --max-steps "${PROFILE_STEPS:-200}" --out "$out/wordlm-run"
    rm -rf "$out/wordlm-run"
  fi
fi

# The thread rules (units split, directions side by side) at the shapes around their thresholds,
# which were set on a Zen 4: each setting forced on and off, two interleaved rounds, ours only.
# RULES=0 skips this; RULE_ITERS and RULE_MIN_S (seconds, default 0.3) set the least iterations
# and time per measurement (short runs of tiny shapes read their first, slower iterations).
if [ "${RULES:-1}" != 0 ]; then
  rule_ms() { # variable=value, then rnn bench flags; prints the median ms
    env "$1" "$RNN" bench "${@:2}" --iters "${RULE_ITERS:-15}" --min-time-s "${RULE_MIN_S:-0.3}" 2>&1 |
      grep -oE 'median [0-9.]+' | head -1 | cut -d' ' -f2
  }
  {
    echo "## Thread rules: forced on / off (rnn bench medians in ms, two interleaved rounds)"
    echo
    echo "| variable | shape (cell B T I=H, mode) | on | off | auto does |"
    echo "|---|---|---|---|---|"
  } >>"$md"
  while read -r var cell b t h mode bi does; do
    [ -n "$var" ] || continue
    flags=(--cell "$cell" --batch "$b" --seq-len "$t" --input-size "$h" --hidden-size "$h" --mode "$mode")
    [ "$bi" = bi ] && flags+=(--bidirectional)
    on="" off=""
    for _ in 1 2; do
      on="$on $(rule_ms "$var=on" "${flags[@]}")"
      off="$off $(rule_ms "$var=off" "${flags[@]}")"
    done
    echo "| $var | $cell $b $t $h $mode $bi | $on | $off | $does |" >>"$md"
  done <<'RULES'
RNN_UNIT_SPLIT lstm 1 35 256 infer uni on
RNN_UNIT_SPLIT lstm 1 35 128 infer uni on
RNN_UNIT_SPLIT lstm 16 35 768 infer uni on
RNN_UNIT_SPLIT lstm 32 35 1024 infer uni on
RNN_UNIT_SPLIT lstm 32 35 650 infer uni off
RNN_DIRECTION_SPLIT lstm 4 35 128 train bi on
RNN_DIRECTION_SPLIT lstm 16 35 256 infer bi on
RNN_DIRECTION_SPLIT lstm 32 35 256 infer bi off
RNN_DIRECTION_SPLIT lstm 1 35 256 infer bi off
RNN_DIRECTION_SPLIT lstm 1 35 256 train bi on
RULES
  echo >>"$md"
fi

# The LMs' output layer and loss (two thirds of the word-LM step's multiply-adds) against PyTorch.
output_layer() {
  if [ -n "${OUTPUT_LAYER_BENCH:-}" ]; then TORCH_PY=$TORCH_PY "$OUTPUT_LAYER_BENCH"
  else TORCH_PY=$TORCH_PY cargo bench --bench output_layer 2>/dev/null; fi
}
{
  echo "## The LMs' output layer and loss (cargo bench --bench output_layer)"
  echo
  output_layer 2>&1 | sed 's/^/    /' || echo "    (failed)"
  echo
} >>"$md"

ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-150}
TORCH_PY=$TORCH_PY ROUNDS=$ROUNDS STEPS=$STEPS bash benches/lm_step.sh >"$out/lm_step.jsonl"
{
  echo "## One training step of the default LMs (benches/lm_step.sh, ROUNDS=$ROUNDS STEPS=$STEPS), mean ms"
  echo
  python3 - "$out/lm_step.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for task in ("word-lm", "char-lm"):
    ours = [r["mean_ms"] for r in rows if r.get("task") == task and r.get("impl") == "ours"]
    torch = [r["mean_ms"] for r in rows if r.get("task") == task and r.get("impl") != "ours"]
    pairs = ", ".join(f"{o:.1f} / {t:.1f} ({o / t:.2f}x)" for o, t in zip(ours, torch))
    print(f"- {task}, ours / PyTorch per round: {pairs}")
EOF
  echo
} >>"$md"
echo "wrote $md" >&2
cat "$md"

#!/usr/bin/env bash
# Issue 28's host survey on a lent machine without cargo, from the kit of benches/cpu_kit.sh
# (carried as target/cpu-survey-kit): the FMA peak, the kernel tests of every ISA path, the
# shape grid against PyTorch (and on AVX-512 the grid with both sides held to AVX2), the thread
# rules forced on and off, the LMs' output layer and training steps. Held to 2 threads on 2
# distinct physical cores (the project's usual hosts have 2 cores, and issue 28's numbers came
# from such a host; SURVEY_THREADS=N for N), each side: Rayon and PyTorch's OpenMP follow the
# affinity. Sized for one `run` call of about 5 minutes (the FMA peak and kernel tests, the grid
# with the kernels chosen by measurement for SURVEY_GRID_MIN=3 minutes by its cost model, the
# thread rules with RULE_ITERS=8, the output layer, the LM steps with ROUNDS=1 STEPS=60);
# GRIDS="auto both-avx2" adds the AVX2 grid on an AVX-512 host. Writes everything to $OUT
# (else /tmp/cpu-survey): survey/survey.md first.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-target/cpu-survey-kit}
OUT=${OUT:-/tmp/cpu-survey}
mkdir -p "$OUT"
[ -x "$KIT/rnn" ] || { echo "device_cpu_survey.sh: no $KIT/rnn (run benches/cpu_kit.sh here first)" >&2; exit 2; }
lscpu >"$OUT/lscpu.txt" 2>&1 || true
# SURVEY_THREADS (default 2) logical CPUs on different cores (lscpu -p: CPU,CORE), the first
# of each core.
n=${SURVEY_THREADS:-2}
cpus=$(lscpu -p=CPU,CORE 2>/dev/null | grep -v '^#' | sort -t, -k2,2n -k1,1n | awk -F, '!seen[$2]++ { print $1 }' | head -"$n" | paste -sd,)
[ -n "$cpus" ] || cpus=$(seq -s, 0 $((n - 1)))
echo "pinned to CPUs $cpus" | tee "$OUT/pinning.txt"
export RNN="$KIT/rnn" KERNEL_TESTS="$KIT/rnn-core-tests" DATA="$KIT/data"
export OUTPUT_LAYER_BENCH="$KIT/output-layer-bench"
export SURVEY_COMMIT="$(cat "$KIT/COMMIT" 2>/dev/null || echo unknown)"
export TORCH_PY=${TORCH_PY:-python3} RAYON_NUM_THREADS=$n OMP_NUM_THREADS=$n
export RNN_KERNEL_CACHE=off
export GRID_ARGS="--grid-budget-min ${SURVEY_GRID_MIN:-3} ${GRID_ARGS:-}" GRIDS=${GRIDS:-auto}
export ROUNDS=${ROUNDS:-1} STEPS=${STEPS:-60} RULE_ITERS=${RULE_ITERS:-8}
if command -v taskset >/dev/null; then
  taskset -c "$cpus" bash benches/host_survey.sh "$OUT/survey"
else
  echo "no taskset: not pinned (2 threads each side, on any cores)" | tee -a "$OUT/pinning.txt"
  bash benches/host_survey.sh "$OUT/survey"
fi

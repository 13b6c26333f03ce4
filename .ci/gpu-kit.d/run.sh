#!/usr/bin/env bash
# GPU check of the rnn project, carried in gpu-kit.tar.xz (built by .ci/gpu-kit on a machine
# without a GPU). On the GPU machine:
#
#   tar -xJf gpu-kit.tar.xz && gpu-kit/run.sh OUT
#
# Needs: an NVIDIA driver (libcuda.so.1, nvidia-smi), a Python whose site-packages hold the CUDA
# libraries (nvidia/*/lib: cublas, cublasLt, curand, nvrtc, cudart), `timeout`, `ldd`. Writes
# OUT/report.md, OUT/results.jsonl, OUT/logs/ and OUT/runs/; exits 1 when any step failed.
# Every command runs under `timeout`, and the whole run stays inside RUN_SH_BUDGET seconds
# (default 450, under 8 minutes): a step that would start past it fails as "not run".
#
#   run.sh --cpu-dry-run OUT   (or RUN_SH_DEVICE=cpu) the same steps on the CPU, without the
#                              GPU checks, smaller models: exercises this script anywhere.
# Other knobs: RUN_SH_STEPS (training steps per job, default 300; 150 in a dry run),
#              RUN_SH_BUDGET (seconds), RUN_SH_BENCH_ITERS (default 20; 5 in a dry run).
set -u
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$KIT/bin"
DEVICE="${RUN_SH_DEVICE:-cuda}"
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) DEVICE=cpu ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "usage: run.sh [--cpu-dry-run] OUT" >&2; exit 2; }
case "$DEVICE" in cpu|cuda|cuda:*) ;; *) echo "run.sh: RUN_SH_DEVICE must be cpu or cuda[:N]" >&2; exit 2 ;; esac
DRY=0; [ "$DEVICE" = cpu ] && DRY=1
# The name `rnn` prints for the device (cpu, cuda:N): every step checks it ran there.
case "$DEVICE" in cuda) DEVNAME=cuda:0 ;; *) DEVNAME=$DEVICE ;; esac
mkdir -p "$OUT/logs" "$OUT/runs" || exit 2
OUT="$(cd "$OUT" && pwd)"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
BUDGET="${RUN_SH_BUDGET:-450}"
if [ "$DRY" = 1 ]; then STEPS="${RUN_SH_STEPS:-150}"; else STEPS="${RUN_SH_STEPS:-300}"; fi
if [ "$DRY" = 1 ]; then ITERS="${RUN_SH_BENCH_ITERS:-5}"; else ITERS="${RUN_SH_BENCH_ITERS:-20}"; fi
START=$(date +%s)
FAILS=0
STEP_END=0
export RNN_FIXTURES_DIR="$KIT/fixtures" RNN_BIN="$BIN/rnn" RUST_BACKTRACE=1

say() { echo "[$(($(date +%s) - START))s] $*"; }

# Should this script itself break (a bug), still leave a report and fail.
FINISHED=0
on_exit() {
  [ "$FINISHED" = 1 ] && return
  printf '{"step":"run.sh","status":"FAIL","seconds":0,"note":"run.sh stopped early (see its output)"}\n' >>"$RESULTS"
  { echo "# rnn GPU kit report (FAIL: run.sh stopped early)"; echo; echo '```'; cat "$RESULTS"; echo '```'; } >"$OUT/report.md"
  echo "run.sh stopped early; partial report: $OUT/report.md" >&2
  exit 1
}
trap on_exit EXIT

# JSON string of $1.
jstr() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; s=${s//$'\r'/}
  printf '"%s"' "$s"
}

# record STEP STATUS SECONDS NOTE [EXTRA_JSON_FIELDS]
record() {
  local extra="${5:-}"
  [ -n "$extra" ] && extra=",$extra"
  printf '{"step":%s,"status":%s,"seconds":%s,"note":%s%s}\n' \
    "$(jstr "$1")" "$(jstr "$2")" "$3" "$(jstr "$4")" "$extra" >>"$RESULTS"
  [ "$2" = FAIL ] && FAILS=$((FAILS + 1))
  say "$2 $1 (${3}s) $4"
}

# A command under the current step's time limit.
tmo() {
  local left=$((STEP_END - $(date +%s)))
  if [ "$left" -lt 1 ]; then echo "run.sh: step time is up before: $*" >&2; return 124; fi
  timeout -k 5 "$left" "$@"
}

# run_step NAME LIMIT FUNCTION [ARGS...]: FUNCTION prints its log to stdout/stderr (kept in
# logs/NAME.log) and sets NOTE (and EXTRA, JSON fields); its status is its exit code
# (0 PASS, 3 INFO = recorded, not a failure, anything else FAIL).
run_step() {
  local name="$1" limit="$2"; shift 2
  local now left log t0 t1 rc status secs
  now=$(date +%s); left=$((START + BUDGET - now))
  log="$OUT/logs/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_').log"
  if [ "$left" -lt 10 ]; then
    record "$name" FAIL 0 "not run: the time budget of ${BUDGET}s is spent"
    return 1
  fi
  [ "$limit" -gt $((left - 5)) ] && limit=$((left - 5))
  STEP_END=$((now + limit))
  NOTE=""; EXTRA=""
  t0=$(date +%s.%N)
  "$@" >"$log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = 0 ]; then status=PASS
  elif [ "$rc" = 3 ]; then status=INFO
  else
    status=FAIL
    if [ "$rc" = 124 ] || [ "$rc" = 137 ] || [ "$(date +%s)" -ge "$STEP_END" ]; then
      NOTE="timed out after ${limit}s; $NOTE"
    fi
    [ -n "$NOTE" ] || NOTE="exit $rc: $(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-300)"
    local e
    e=$(grep -a '^error' "$log" | tail -n 1 | cut -c1-240)
    [ -z "$e" ] || [[ "$NOTE" == *"$e"* ]] || NOTE="$NOTE; $e"
  fi
  record "$name" "$status" "$secs" "$NOTE" "$EXTRA"
  return 0
}

# ---------------------------------------------------------------------------------------------
step_machine() {
  local ok=0
  GPU_LINE="unknown"; CUDA_DRV=""; NVCC_LINE=""; TORCH_LINE=""
  echo "== kit"; cat "$KIT/BUILD_INFO" 2>/dev/null
  echo "== host"; uname -a; grep PRETTY_NAME /etc/os-release 2>/dev/null; echo "cpus $(nproc)"
  if [ "$DRY" = 0 ]; then
    echo "== nvidia-smi"
    if tmo nvidia-smi; then
      GPU_LINE=$(tmo nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -n 1)
      CUDA_DRV=$(tmo nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
      echo "gpu: $GPU_LINE; driver CUDA $CUDA_DRV"
    else
      echo "nvidia-smi failed"; ok=1
    fi
  else
    GPU_LINE="none (CPU dry run)"; CUDA_DRV="-"
  fi
  echo "== nvcc"
  local nvcc sp
  nvcc=$(command -v nvcc)
  if [ -z "$nvcc" ]; then
    for sp in $(site_packages); do
      [ -d "$sp/nvidia" ] && nvcc=$(find "$sp/nvidia" -maxdepth 4 -name nvcc -type f -perm -u+x 2>/dev/null | head -n 1)
      [ -n "$nvcc" ] && break
    done
  fi
  NVCC_BIN="$nvcc"
  if [ -n "$nvcc" ]; then NVCC_LINE=$(tmo "$nvcc" --version | grep -i release); echo "$nvcc: $NVCC_LINE"; else NVCC_LINE="not found"; echo "nvcc not found"; fi
  echo "== python / torch"
  TORCH_LINE=$(tmo python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1 | tail -n 1)
  echo "$(python3 --version 2>&1); $TORCH_LINE"
  NOTE="gpu: $GPU_LINE; driver CUDA ${CUDA_DRV:-?}; nvcc: $NVCC_LINE; $TORCH_LINE"
  EXTRA="\"gpu\":$(jstr "$GPU_LINE"),\"driver_cuda\":$(jstr "${CUDA_DRV:-}"),\"nvcc\":$(jstr "$NVCC_LINE"),\"torch\":$(jstr "$TORCH_LINE"),\"build\":$(jstr "$(tr '\n' ';' <"$KIT/BUILD_INFO" 2>/dev/null)")"
  return $ok
}

# The Python environment's site-packages folders (where the CUDA wheels put nvidia/*/lib).
site_packages() {
  tmo python3 - <<'EOF' 2>/dev/null
import site, sysconfig, os
c = []
try: c += site.getsitepackages()
except Exception: pass
try: c.append(site.getusersitepackages())
except Exception: pass
for k in ("purelib", "platlib"):
    c.append(sysconfig.get_paths()[k])
try:
    import torch; c.append(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception: pass
seen = set()
for p in c:
    if p and os.path.isdir(p) and p not in seen:
        seen.add(p); print(p)
EOF
}

# The folders of the CUDA libraries in the Python environment(s) and the usual CUDA places
# (never a stubs/ folder: NVIDIA's link-time stubs of libcuda must not shadow the driver).
cuda_lib_dirs() {
  local sp dirs=()
  local sps
  sps=$(site_packages)
  for sp in $sps; do
    [ -d "$sp/nvidia" ] || continue
    while IFS= read -r d; do dirs+=("$d"); done < <(find -L "$sp/nvidia" -maxdepth 4 \( -name 'lib*.so' -o -name 'lib*.so.*' \) -not -path '*/stubs/*' -printf '%h\n' 2>/dev/null | sort -u)
  done
  for d in ${CUDA_HOME:-} ${CUDA_PATH:-} /usr/local/cuda; do
    [ -d "$d/lib64" ] && dirs+=("$d/lib64")
  done
  printf '%s\n' "${dirs[@]}" | awk 'NF && !seen[$0]++'
}

step_libraries() {
  local dirs b out why=""
  dirs=$(cuda_lib_dirs)
  echo "== library folders found"; echo "${dirs:-none}"
  if [ -n "$dirs" ]; then
    LD_LIBRARY_PATH="$(echo "$dirs" | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
  elif [ "$DRY" = 0 ]; then
    echo "warning: no nvidia/*/lib folder in the Python environment (python3: $(command -v python3))"
  fi
  # Anything still missing: look for the file itself anywhere in the Python environment and the
  # usual CUDA places (wheels that keep their libraries elsewhere, e.g. torch/lib).
  local missing so hit
  missing=$(for b in "$BIN"/*; do [ -x "$b" ] && tmo ldd "$b" 2>/dev/null; done | awk '/=> not found/ { print $1 }' | sort -u)
  for so in $missing; do
    # shellcheck disable=SC2046
    hit=$(find -L $(site_packages) /usr/local/cuda* /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 6 -name "$so" -not -path '*/stubs/*' 2>/dev/null | head -n 1)
    if [ -n "$hit" ]; then
      echo "found $so elsewhere: $hit"
      LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$hit")"
      export LD_LIBRARY_PATH
    else
      echo "!! $so: not found anywhere"
    fi
  done
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  for b in "$BIN"/*; do
    [ -x "$b" ] || continue
    echo "== ldd -r $(basename "$b")"
    # -r: bind every symbol as the loader will (the executables are linked with BIND_NOW);
    # an undefined symbol of the executable itself means a library older than the build's.
    out=$(tmo ldd -r "$b" 2>&1)
    echo "$out" | grep -E 'cuda|cublas|curand|nvrtc|cudnn|nccl|not found|undefined symbol' || true
    if echo "$out" | grep -q 'not found'; then
      why="$why $(basename "$b"): missing $(echo "$out" | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ');"
    fi
    if echo "$out" | grep -F "($b)" | grep -q 'undefined symbol'; then
      why="$why $(basename "$b"): undefined $(echo "$out" | grep -F "($b)" | sed -n 's/.*undefined symbol: \([^[:space:]]*\).*/\1/p' | head -n 5 | tr '\n' ' ');"
    fi
  done
  local cuda_path
  cuda_path=$(tmo ldd "$BIN/rnn" 2>/dev/null | awk '$1 ~ /^lib(cuda|cudart|cublas|cublasLt|curand|nvrtc)\.so/ { printf "%s=%s ", $1, ($3 == "not" ? "NOT-FOUND" : $3) }')
  if [ "$DRY" = 0 ] && echo "$cuda_path" | grep -q 'libcuda\.so\.1=[^ ]*/stubs/'; then
    why="$why libcuda.so.1 is a stub library, not the driver's;"
  fi
  EXTRA="\"ld_library_path\":$(jstr "${LD_LIBRARY_PATH:-}")"
  if [ -z "$why" ]; then
    NOTE="every library and symbol resolves: ${cuda_path:-no CUDA library linked}"
    return 0
  fi
  NOTE="${why# } resolved: $cuda_path"
  return 1
}

step_smoke() {
  local line
  line=$(tmo "$BIN/rnn" bench --device "$DEVICE" --cell lstm --batch 2 --seq-len 3 --input-size 4 --hidden-size 5 --iters 2 --impl composed --json) || { NOTE="rnn bench (tiny, composed) failed"; return 1; }
  echo "$line"
  case "$line" in *"\"device\":\"$DEVNAME\""*) ;; *) NOTE="the bench did not run on $DEVNAME: $line"; return 1 ;; esac
  NOTE="tiny composed LSTM train step ran on $DEVNAME (Candle's PTX kernels loaded): $line"
  EXTRA="\"bench\":$line"
}

# The fused recurrence's kernels (embedded in every executable; carried in kernels/ too): the
# build's ptxas report must list every kernel for f32 and f64 with no register spills; with a
# cuobjdump at hand, the fatbin must hold sm_90 code and PTX.
step_kernels() {
  local log="$KIT/kernels/ptxas.log" fat="$KIT/kernels/recurrence.fatbin" n spills regs cuobj
  [ -s "$fat" ] && [ -f "$log" ] || { NOTE="kernels/ missing from the kit"; return 1; }
  n=$(grep -c "Compiling entry function" "$log")
  spills=$(grep "spill" "$log" | grep -vc " 0 bytes spill stores, 0 bytes spill loads")
  regs=$(sed -n 's/.*Used \([0-9]*\) registers.*/\1/p' "$log" | sort -n | tail -n 1)
  cat "$log"
  NOTE="$n kernel entry points compiled, at most ${regs:-?} registers, $spills with spills; fatbin $(wc -c <"$fat") bytes"
  cuobj=$(command -v cuobjdump || true)
  if [ -z "$cuobj" ] && [ -n "${NVCC_BIN:-}" ]; then cuobj="$(dirname "$NVCC_BIN")/cuobjdump"; [ -x "$cuobj" ] || cuobj=""; fi
  if [ -n "$cuobj" ]; then
    echo "== $cuobj --list-elf --list-ptx"
    tmo "$cuobj" --list-elf --list-ptx "$fat" || true
    NOTE="$NOTE; cuobjdump: $(tmo "$cuobj" --list-elf --list-ptx "$fat" 2>&1 | grep -Eo 'sm_[0-9]+|compute_[0-9]+' | sort -u | tr '\n' ' ')"
  fi
  [ "$n" -ge 22 ] && [ "$spills" = 0 ]
}

# step_test NAME: one carried test executable on the device.
step_test() {
  local name="$1" rc summary
  RNN_TEST_DEVICE="$DEVICE" RNN_TEST_REQUIRE_DEVICE=1 tmo "$BIN/$name" --nocapture
  rc=$?
  summary=$(grep -a '^test result:' "$OUT/logs/test_$name.log" | tail -n 1)
  NOTE="${summary:-no test summary line}"
  if [ "$rc" != 0 ]; then
    NOTE="exit $rc; $NOTE; failed: $(grep -a -E '^test .* FAILED$' "$OUT/logs/test_$name.log" | sed 's/^test //; s/ \.\.\. FAILED$//' | head -n 8 | tr '\n' ' ')"
    return 1
  fi
  if [ "$DRY" = 0 ] && grep -aq 'no CUDA device' "$OUT/logs/test_$name.log"; then
    NOTE="a test skipped for want of a CUDA device: $NOTE"; return 1
  fi
  local p f i
  p=$(echo "$summary" | sed -n 's/.* \([0-9]*\) passed.*/\1/p'); f=$(echo "$summary" | sed -n 's/.* \([0-9]*\) failed.*/\1/p'); i=$(echo "$summary" | sed -n 's/.* \([0-9]*\) ignored.*/\1/p')
  EXTRA="\"passed\":${p:-0},\"failed\":${f:-0},\"ignored\":${i:-0}"
  [ "${p:-0}" -gt 0 ] || { NOTE="no test ran: $NOTE"; return 1; }
}

# train_args TASK: data and size flags of the three training jobs.
train_args() {
  local h=256 b=32
  [ "$DRY" = 1 ] && { h=64; b=16; }
  case "$1" in
    char-lm) echo "--data $KIT/data/char_lm.txt --split 0.1 --hidden $h --layers 1 --batch-size $b --seq-len 64 --lr 0.003" ;;
    classify) echo "--data $KIT/data/classify_train.txt --valid $KIT/data/classify_valid.txt --hidden $h --batch-size $b --lr 0.002" ;;
    seq2seq) echo "--data $KIT/data/seq2seq.tsv --split 0.1 --hidden $h --batch-size $b --attention additive --lr 0.002" ;;
  esac
}

# step_train TASK: a short run on the device; the training loss must fall, and the checkpoint
# must load in `rnn eval` and score like the run's best validation.
step_train() {
  local task="$1" run="$OUT/runs/$1" every check line
  rm -rf "$run"
  every=$((STEPS / 5)); [ "$every" -ge 1 ] || every=1
  # shellcheck disable=SC2046
  tmo "$BIN/rnn" train "$task" $(train_args "$task") --device "$DEVICE" --seed 1 \
    --max-steps "$STEPS" --epochs 1000 --eval-every "$every" --out "$run" || { NOTE="rnn train $task failed"; return 1; }
  grep -q "^task $task: device $DEVNAME," "$OUT/logs/train_$task.log" || { NOTE="rnn train $task did not say it ran on $DEVNAME"; return 1; }
  echo "== metrics.jsonl"; cat "$run/metrics.jsonl"
  echo "== rnn eval --checkpoint $run --device $DEVICE"
  line=$(tmo "$BIN/rnn" eval --checkpoint "$run" --device "$DEVICE") || { NOTE="rnn eval of the checkpoint failed"; return 1; }
  echo "$line"
  check=$(tmo python3 - "$run/metrics.jsonl" "$line" <<'EOF'
import json, math, re, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tl = [r["train_loss"] for r in recs if r.get("train_loss") is not None]
best = [r for r in recs if r.get("best")]
out = {"evals": len(recs), "steps": recs[-1]["step"] if recs else 0}
problems = []
if len(tl) < 2:
    problems.append(f"{len(tl)} training-loss records (need 2)")
else:
    out.update(first_train_loss=tl[0], last_train_loss=tl[-1])
    if not all(math.isfinite(x) for x in tl):
        problems.append("non-finite training loss")
    elif not tl[-1] < tl[0]:
        problems.append(f"training loss did not fall: {tl[0]:.4f} -> {tl[-1]:.4f}")
if best:
    out["best_valid_loss"] = best[-1]["valid_loss"]
m = re.search(r"\bloss ([-+0-9.eE]+|NaN|inf)", sys.argv[2])
if not m:
    problems.append("no loss in the eval line")
else:
    ev = float(m.group(1)); out["eval_loss"] = ev
    if not math.isfinite(ev):
        problems.append("eval loss not finite")
    elif tl and not ev < tl[0]:
        problems.append(f"eval loss {ev:.4f} not below the first training loss {tl[0]:.4f} (checkpoint not the trained model?)")
    elif best and abs(ev - best[-1]["valid_loss"]) > 0.1 * abs(best[-1]["valid_loss"]) + 1e-3:
        problems.append(f"eval loss {ev:.4f} far from the best validation loss {best[-1]['valid_loss']:.4f}")
out["problems"] = problems
print(json.dumps(out))
EOF
)
  echo "== check: $check"
  [ -n "$check" ] || { NOTE="could not read $run/metrics.jsonl"; return 1; }
  EXTRA="\"task\":$(jstr "$task"),\"check\":$check,\"eval\":$(jstr "$line")"
  NOTE=$(echo "$check" | python3 -c 'import json,sys; c=json.load(sys.stdin); print("; ".join(c["problems"]) if c["problems"] else "loss %.4f -> %.4f over %d steps; eval loss %.4f (best valid %.4f)" % (c["first_train_loss"], c["last_train_loss"], c["steps"], c["eval_loss"], c.get("best_valid_loss", float("nan"))))')
  echo "$check" | grep -q '"problems": \[\]' || return 1
}

# step_bench CELL MODE IMPL [info]: one timing on the device (JSON line kept).
step_bench() {
  local line
  line=$(tmo "$BIN/rnn" bench --device "$DEVICE" --cell "$1" --mode "$2" --impl "$3" \
    --batch 32 --seq-len 64 --input-size 256 --hidden-size 256 --iters "$ITERS" --json)
  local rc=$?
  if [ "$rc" != 0 ] || [ -z "$line" ]; then
    NOTE="refused or failed (exit $rc): $(grep -a 'error' "$OUT/logs/bench_$1_$2_$3.log" | tail -n 1 | cut -c1-300)"
    [ "${4:-}" = info ] && return 3
    return 1
  fi
  echo "$line"
  case "$line" in *"\"device\":\"$DEVNAME\""*) ;; *) NOTE="not run on $DEVNAME: $line"; return 1 ;; esac
  NOTE=$(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("median %.3f ms, min %.3f ms on %s" % (r["median_ms"], r["min_ms"], r["device"]))' 2>/dev/null)
  EXTRA="\"bench\":$line"
  [ "${4:-}" = info ] && return 3
  return 0
}

# step_bench_compare IMPL DEVICES B T I H [ITERS]: `rnn bench --devices` for LSTM and GRU,
# training and inference, against PyTorch (cuDNN on CUDA; when python3 has torch). That command
# exits 0 whatever its rows hold: each row must say "ok".
step_bench_compare() {
  local imp="$1" devices="$2" b="$3" t="$4" i="$5" h="$6" iters="${7:-$ITERS}" py=() lines
  if tmo python3 -c 'import torch' 2>/dev/null; then py=(--pytorch python3); else echo "no torch in python3: without --pytorch"; fi
  lines=$(tmo "$BIN/rnn" bench --devices "$devices" "${py[@]}" --cells lstm,gru --modes train,infer --impl "$imp" \
    --batch "$b" --seq-len "$t" --input-size "$i" --hidden-size "$h" --iters "$iters" --json) \
    || { NOTE="rnn bench --devices $devices --impl $imp ${py[*]} failed"; return 1; }
  echo "$lines"
  local l n=0 bad=0
  while IFS= read -r l; do
    case "$l" in
      "{"*)
        printf '{"step":"bench-compare-%s","status":"DATA","seconds":0,"note":"","compare":%s}\n' "$imp" "$l" >>"$RESULTS"
        n=$((n + 1))
        case "$l" in *'"status":"ok"'*) ;; *) bad=$((bad + 1)) ;; esac ;;
    esac
  done <<<"$lines"
  NOTE="$n row(s) for --devices $devices --impl $imp B$b T$t I$i H$h ${py[*]}, $bad not ok"
  [ "$n" -gt 0 ] && [ "$bad" = 0 ]
}

# ---------------------------------------------------------------------------------------------
say "rnn GPU kit: device $DEVICE, output $OUT, budget ${BUDGET}s, $STEPS training steps"
run_step machine 60 step_machine
run_step libraries 60 step_libraries
run_step kernels 30 step_kernels
run_step smoke-ptx 90 step_smoke
TESTS=$(cat "$BIN/TESTS" 2>/dev/null)
[ -n "$TESTS" ] || record tests FAIL 0 "bin/TESTS lists no test executable"
for t in $TESTS; do
  if [ -x "$BIN/$t" ]; then run_step "test_$t" 150 step_test "$t"
  else record "test_$t" FAIL 0 "bin/$t missing"; fi
done
for task in char-lm classify seq2seq; do
  run_step "train_$task" 120 step_train "$task"
done
for cell in lstm gru; do
  run_step "bench_${cell}_train_fused" 45 step_bench "$cell" train fused
done
run_step bench_lstm_train_composed 45 step_bench lstm train composed
run_step bench_lstm_train_candle-nn 45 step_bench lstm train candle-nn info
# The fused op against PyTorch (cuDNN) at the three sizes of issue 23 on the device, then the
# composed twin on the CPU and the device at the first size. A dry run uses smaller shapes.
if [ "$DRY" = 1 ]; then
  run_step bench-compare-fused-B32T64I256H256 120 step_bench_compare fused "$DEVICE" 32 64 64 64
  run_step bench-compare-fused-B1T100I64H128 60 step_bench_compare fused "$DEVICE" 1 100 64 128
  run_step bench-compare-composed 120 step_bench_compare composed cpu 32 64 64 64
else
  run_step bench-compare-fused-B32T64I256H256 90 step_bench_compare fused "$DEVICE" 32 64 256 256
  run_step bench-compare-fused-B1T100I64H128 90 step_bench_compare fused "$DEVICE" 1 100 64 128
  run_step bench-compare-fused-B64T128I512H1024 120 step_bench_compare fused "$DEVICE" 64 128 512 1024 10
  run_step bench-compare-composed 120 step_bench_compare composed "cpu,$DEVICE" 32 64 256 256
fi

# ---------------------------------------------------------------------------------------------
TOTAL=$(($(date +%s) - START))
say "done in ${TOTAL}s, $FAILS failed step(s)"
python3 - "$RESULTS" "$OUT/report.md" "$DEVICE" "$TOTAL" "$FAILS" <<'EOF' || {
import json, sys
res, md, device, total, fails = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rows = [json.loads(l) for l in open(res) if l.strip()]
steps = [r for r in rows if r["status"] != "DATA"]
m = next((r for r in rows if r["step"] == "machine"), {})
L = [f"# rnn GPU kit report ({'FAIL' if fails else 'PASS'})", ""]
L.append(f"Device `{device}`, {total} s in all, {fails} failed step(s).")
L.append("")
for k, label in [("gpu", "GPU (name, driver, memory, compute capability)"), ("driver_cuda", "CUDA of the driver"),
                 ("nvcc", "nvcc"), ("torch", "PyTorch"), ("build", "kit build")]:
    if m.get(k):
        L.append(f"- {label}: {m[k]}")
lib = next((r for r in rows if r["step"] == "libraries"), {})
if lib:
    L.append(f"- libraries: {lib.get('note', '')}")
L += ["", "## Steps", "", "| step | status | seconds | note |", "|---|---|---|---|"]
for r in steps:
    note = str(r.get("note", "")).replace("|", "\\|").replace("\n", " ")
    L.append(f"| {r['step']} | {r['status']} | {r['seconds']} | {note[:400]} |")
tr = [r for r in steps if r["step"].startswith("train_") and isinstance(r.get("check"), dict)]
if tr:
    L += ["", "## Training (loss must fall; checkpoint -> rnn eval)", "",
          "| task | steps | first train loss | last train loss | best valid loss | eval loss |", "|---|---|---|---|---|---|"]
    for r in tr:
        c = r["check"]
        f = lambda k: f"{c[k]:.4f}" if isinstance(c.get(k), (int, float)) else "-"
        L.append(f"| {r.get('task')} | {c.get('steps')} | {f('first_train_loss')} | {f('last_train_loss')} | {f('best_valid_loss')} | {f('eval_loss')} |")
b = [r for r in rows if isinstance(r.get("bench"), dict)]
if b:
    L += ["", "## Benchmarks (B32 T64 I256 H256 unless noted)", "",
          "| step | implementation | cell | mode | device | B,T,I,H | median ms | min ms |", "|---|---|---|---|---|---|---|---|"]
    for r in b:
        x = r["bench"]
        L.append(f"| {r['step']} | {x.get('impl')} | {x.get('cell', '')} | {x.get('mode')} | {x.get('device')} | "
                 f"{x.get('batch')},{x.get('seq_len')},{x.get('input')},{x.get('hidden')} | {x.get('median_ms')} | {x.get('min_ms')} |")
cmp = [r["compare"] for r in rows if isinstance(r.get("compare"), dict)]
if cmp:
    L += ["", "## rnn bench --devices (ours against PyTorch where python3 has torch)", "",
          "Goal of issue 23 (fused, CUDA, training, B >= 32): ratio at most 1.0 for LSTM, 0.7 for GRU.", "",
          "| impl | device | cell | mode | B,T,I,H | ours median ms | PyTorch median ms | ratio | goal | PyTorch backend | status | note |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in cmp:
        g = lambda k: "-" if x.get(k) is None else (f"{x[k]:.3f}" if isinstance(x[k], float) else str(x[k]))
        goal = "-"
        if x.get("impl") == "fused" and str(x.get("device", "")).startswith("cuda") and x.get("mode") == "train" \
                and (x.get("batch") or 0) >= 32 and isinstance(x.get("ratio"), float):
            limit = 1.0 if x.get("cell") == "lstm" else 0.7
            goal = f"{'met' if x['ratio'] <= limit else 'missed'} (<= {limit})"
        L.append(f"| {g('impl')} | {g('device')} | {g('cell')} | {g('mode')} | {g('batch')},{g('seq_len')},{g('input')},{g('hidden')} | "
                 f"{g('ours_median_ms')} | {g('torch_median_ms')} | {g('ratio')} | {goal} | {g('torch_backend')} | {g('status')} | {str(x.get('note') or '')[:200]} |")
L += ["", "Logs: `logs/`; runs (checkpoints, metrics.jsonl): `runs/`; every step as JSON: `results.jsonl`.", ""]
open(md, "w").write("\n".join(L))
EOF
  { echo "# rnn GPU kit report"; echo; echo "python3 could not format the report; results.jsonl:"; echo '```'; cat "$RESULTS"; echo '```'; } >"$OUT/report.md"
}
say "report: $OUT/report.md"
FINISHED=1
[ "$FAILS" = 0 ] || exit 1
exit 0

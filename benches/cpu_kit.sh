#!/usr/bin/env bash
# Packs what benches/device_cpu_survey.sh needs on a lent machine that has PyTorch but no Rust
# toolchain (the GPU machines of the `device` tool: their CPUs are other server CPUs than this
# project's usual 2-core hosts, so they can measure a host class issue 28 has not met yet):
#   target/cpu-survey-kit/rnn             the release `rnn` binary without debug info (symbols kept)
#   target/cpu-survey-kit/rnn-core-tests  rnn-core's unit tests (the kernel tests of every ISA)
#   target/cpu-survey-kit/output-layer-bench  `cargo bench --bench output_layer`
#   target/cpu-survey-kit/data/           PTB and Tiny Shakespeare (for the LM steps)
#   target/cpu-survey-kit/COMMIT          the commit it was built from
# About 30 MB; `run` carries it (carry ["target/cpu-survey-kit"]). Usage:
#   bash benches/cpu_kit.sh       then, with the device tool:
#   run(command="bash benches/device_cpu_survey.sh", carry=["target/cpu-survey-kit"], timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
KIT=target/cpu-survey-kit
cargo build --release --bin rnn >&2
# The path of the executable cargo builds for target NAME with ARGS (`--no-run`).
executable() {
  local name=$1
  shift
  cargo "$@" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$name"
}
tests=$(executable rnn_core test --release -p rnn-core --lib)
[ -x "$tests" ] || { echo "cpu_kit.sh: no rnn-core test executable" >&2; exit 1; }
bench=$(executable output_layer bench --bench output_layer)
[ -x "$bench" ] || { echo "cpu_kit.sh: no output_layer bench executable" >&2; exit 1; }
rm -rf "$KIT"
mkdir -p "$KIT/data/word_lm" "$KIT/data/char_lm"
strip --strip-debug -o "$KIT/rnn" "${CARGO_TARGET_DIR:-target}/release/rnn"
strip --strip-debug -o "$KIT/rnn-core-tests" "$tests"
strip --strip-debug -o "$KIT/output-layer-bench" "$bench"
cp "$DATA/word_lm/ptb.train.txt" "$DATA/word_lm/ptb.valid.txt" "$KIT/data/word_lm/"
cp "$DATA/char_lm/tinyshakespeare.txt" "$KIT/data/char_lm/"
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo "+changes" || true)
echo "$(git rev-parse --short HEAD)$dirty" >"$KIT/COMMIT"
du -sh "$KIT" >&2

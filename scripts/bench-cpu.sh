#!/usr/bin/env bash
# The CPU engine against llama.cpp on the same machine, in one run (issue #4's benchmark):
# `ternlm bench --backend cpu` and `llama-bench -t THREADS` on one model, then the ratios.
#
# Usage: bash scripts/bench-cpu.sh LLAMA_BENCH [MODEL]
#   LLAMA_BENCH   a CPU build of llama-bench (scripts/regen-goldens.sh builds one from the
#                 llama-cpp-python 0.3.36 sdist)
#   MODEL         default .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-models.sh)
# Environment: THREADS (2), N_PROMPT (512), N_GEN (128).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LLAMA_BENCH=${1:?usage: bench-cpu.sh LLAMA_BENCH [MODEL]}
MODEL=${2:-.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${THREADS:-2} N_PROMPT=${N_PROMPT:-512} N_GEN=${N_GEN:-128}
[ -f "$MODEL" ] || { echo "bench-cpu: $MODEL not found (run scripts/fetch-models.sh)" >&2; exit 1; }

cargo build --release --quiet --bin ternlm
ours=$(target/release/ternlm bench -m "$MODEL" --backend cpu -t "$THREADS" -p "$N_PROMPT" -n "$N_GEN")
theirs=$("$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p "$N_PROMPT" -n "$N_GEN" -o json 2>/dev/null)
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
lc = {("pp" if r["n_gen"] == 0 else "tg"): r["avg_ts"] for r in theirs}
print(f"model {ours['model']}, {ours['threads']} threads")
print(f"| | llama.cpp t/s | ternlm t/s | ternlm/llama.cpp |\n|---|---:|---:|---:|")
for name, key, ts in [("prefill", "pp", ours["prefill_tok_s"]), ("decode", "tg", ours["decode_tok_s"])]:
    print(f"| {name} | {lc[key]:.1f} | {ts:.1f} | {ts / lc[key]:.2f}× |")
PY

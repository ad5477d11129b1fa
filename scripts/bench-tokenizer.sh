#!/usr/bin/env bash
# Tokenizer benchmark, side by side in one run: ternlm native, ternlm wasm under node, and
# llama.cpp's llama-tokenize, on the same 128k-vocab GGUF (llama-bpe) and the same ~1 MB of mixed
# text. Usage: scripts/bench-tokenizer.sh [LLAMA_TOKENIZE_BIN]
# (llama-tokenize comes from scripts/regen-goldens.sh's llama.cpp build; without it that row is
# left out.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-models.sh >/dev/null
MODEL=.cache/vocab/ggml-vocab-llama-bpe.gguf
TEXT=.cache/bench/mixed-1mb.txt
LLAMA_TOKENIZE="${1:-.cache/llama.cpp/build/bin/llama-tokenize}"
mkdir -p .cache/bench

# ~1 MB of mixed text: the tricky-string list and llama.cpp's tokenizer test inputs, cycled.
python3 - "$TEXT" <<'PY'
import glob, json, sys
parts = [json.loads(l) for l in open("tests/data/tokenizer/strings.jsonl", encoding="utf-8")]
for f in sorted(glob.glob(".cache/vocab/*.inp")):
    parts += open(f, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
parts = [p for p in parts if p]
out, n, i = [], 0, 0
while n < 1_000_000:
    p = parts[i % len(parts)]
    out.append(p)
    n += len(p.encode()) + 1
    i += 1
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(out))
PY

cargo build --release --quiet --bin ternlm
NATIVE=$(./target/release/ternlm bench-tokenizer -m "$MODEL" -f "$TEXT")

cargo build --release --quiet --lib --target wasm32-unknown-unknown --no-default-features
wasm-bindgen --target nodejs --out-dir target/wasm-node target/wasm32-unknown-unknown/release/ternlm.wasm
WASM=$(node scripts/bench/tokenizer-node.mjs target/wasm-node "$MODEL" "$TEXT")

LLAMA=""
if [ -x "$LLAMA_TOKENIZE" ]; then
    # Model load alone (one short line) is timed separately and subtracted from the full run.
    best() { local b=""; for _ in 1 2 3; do
        local t0 t1; t0=$(date +%s.%N); "$LLAMA_TOKENIZE" -m "$MODEL" -f "$1" --ids --log-disable >/dev/null 2>&1; t1=$(date +%s.%N)
        b=$(python3 -c "import sys; a=float(sys.argv[2])-float(sys.argv[1]); b=sys.argv[3]; print(a if not b else min(a, float(b)))" "$t0" "$t1" "$b"); done; echo "$b"; }
    echo "x" > .cache/bench/one-line.txt
    LOAD=$(best .cache/bench/one-line.txt); FULL=$(best "$TEXT")
    LLAMA=$(python3 -c "import json,sys; load,full=float(sys.argv[1]),float(sys.argv[2]); n=int(sys.argv[3]); print(json.dumps({'runtime':'llama.cpp llama-tokenize','construct_ms':load*1e3,'encode_ms':(full-load)*1e3,'mb_per_s':n/1e6/(full-load)}))" "$LOAD" "$FULL" "$(wc -c < "$TEXT")")
fi

python3 - "$NATIVE" "$WASM" "$LLAMA" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:] if a]
print(f"{'runtime':<32} {'construct ms':>12} {'encode ms':>10} {'MB/s':>8}")
for r in rows:
    print(f"{r['runtime']:<32} {r['construct_ms']:>12.1f} {r['encode_ms']:>10.1f} {r['mb_per_s']:>8.2f}")
if len(rows) == 3:
    print(f"encode throughput vs llama-tokenize: native {rows[0]['mb_per_s']/rows[2]['mb_per_s']:.2f}x, wasm {rows[1]['mb_per_s']/rows[2]['mb_per_s']:.2f}x")
PY

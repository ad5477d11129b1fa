#!/usr/bin/env bash
# Regenerates tests/data/vocab_golden/*.golden from llama.cpp (the tokenizer oracle).
#
# usage: scripts/gen_vocab_golden.sh LLAMA_CPP_DIR
#   LLAMA_CPP_DIR holds include/llama.h and a built build/bin/libllama.so (e.g. the llama.cpp
#   vendored by llama-cpp-python 0.3.36, built with cmake). Vocabularies come from
#   ${TERNLM_CACHE:-.cache}/vocab, the two real models from ${TERNLM_CACHE:-.cache}/models.
#
# For each vocabulary with a .inp file (and each real model, with
# tests/data/vocab_golden/real_models.inp) it records what libllama returns; see
# scripts/vocab_oracle.c and tests/tokenizer_vocab_suite.rs for the format.
set -euo pipefail
llama=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TERNLM_CACHE:-$root/.cache}
out=$root/tests/data/vocab_golden
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/oracle" "$root/scripts/vocab_oracle.c" \
    -I"$llama/include" -I"$llama/ggml/include" -L"$llama/build/bin" -lllama \
    -Wl,-rpath,"$llama/build/bin"

emit() { # name gguf inputs
    "$tmp/oracle" "$2" "$3" > "$tmp/g"
    case "$(head -1 "$tmp/g")" in
        "M gpt2" | "M llama" | "M gemma4") ;;
        *) echo "skip $1 ($(head -1 "$tmp/g"))"; return ;;
    esac
    mv "$tmp/g" "$out/$1.golden"
    echo "$1: $(grep -c '^S ' "$out/$1.golden") strings"
}

for f in "$cache"/vocab/ggml-vocab-*.gguf; do
    [ -f "$f.inp" ] || continue
    name=$(basename "$f" .gguf)
    emit "${name#ggml-vocab-}" "$f" "$f.inp"
done
emit SmolLM2-135M-Instruct "$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$out/real_models.inp"
emit gemma-3-270m "$cache/models/gemma-3-270m-q4_k_m.gguf" "$out/real_models.inp"

#!/usr/bin/env bash
# Regenerate the committed test fixtures and goldens (testing.md §1, §2).
# CI never runs this; it runs only when fixtures must change. Review the diff
# under tests/data/ afterwards and commit it.
#
# Usage: scripts/regen-goldens.sh [LLAMA_CACHE_DIR]     (default: <repo>/.cache/llama.cpp)
#
# Environment:
#   CACHE_DIR      cache for fetch-models.sh (venv, wheels, real models);
#                  default <repo>/.cache
#   LLAMA_CPP_BIN  an existing llama.cpp build/bin directory (llama-quantize
#                  etc.) to use instead of building one
#   JOBS           parallel build jobs (default 2)
#   GOLDEN_BIN     where to build our golden tool (default CACHE_DIR/golden/golden)
#
# Steps:
#   1. scripts/fetch-models.sh: venv with gguf 0.19.0, SmolLM2 + gemma3 models
#      (sha256-verified).
#   2. llama.cpp from the llama-cpp-python 0.3.36 sdist (the vendored tree),
#      built once into LLAMA_CACHE_DIR (skipped if already built):
#        pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
#        cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
#              -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON
#        cmake --build build -j2 --target llama-simple llama-quantize llama-tokenize llama-eval-callback
#      (needs cmake and a C++ compiler; about 5 min on 2 cores)
#   3. scripts/make_synthetic.py tests/data/models --llama-quantize <bin>/llama-quantize
#      --scratch CACHE_DIR/synthetic-scratch (the uncommitted F32 sources and
#      tiny-bitnet-f32) and tests/data/models/SHA256SUMS
#   4. scripts/gguf_dump.py --out-dir tests/data/dumps on the real models and
#      every synthetic model
#   5. scripts/gen_quant_golden.py tests/data/quant
#   6. smoke check: llama-simple loads and runs every synthetic model except
#      tiny-bitnet-i2_s (upstream llama.cpp does not know type 36)
#   7. tools/golden/build.sh builds our `golden` tool against that llama.cpp
#      (binary: $GOLDEN_BIN, default CACHE_DIR/golden/golden), then
#      scripts/gen_tokenizer_golden.py writes tests/data/tokenizer/ (and
#      cross-checks a sample against llama-tokenize)
#   8. scripts/gen_logit_golden.py writes tests/data/golden/ (logits/: llama.cpp
#      logits of 3 fixed sequences + a 16-step greedy run for every synthetic
#      model and the scratch tiny-bitnet-f32; real/: 5 prompts x 64 greedy
#      steps with top-20 logits for SmolLM2 and gemma3); see its README.md
#   9. scripts/gen_vocab_golden.sh: tests/data/vocab_golden/ (llama.cpp tokenization and
#      detokenization of every vocab of the suite and both real models)
#  10. scripts/gen_chat_golden.py: tests/data/chat/ (jinja2 renderings of every template)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
CACHE_DIR="${CACHE_DIR:-$REPO_ROOT/.cache}"
LLAMA_CACHE="${1:-$REPO_ROOT/.cache/llama.cpp}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
JOBS="${JOBS:-2}"

log() { echo "regen-goldens: $*" >&2; }
die() { echo "regen-goldens: ERROR: $*" >&2; exit 1; }

# ---- 1. models and venv ---------------------------------------------------
scripts/fetch-models.sh "$CACHE_DIR"
PY="$CACHE_DIR/venv/bin/python"
MODELS="$CACHE_DIR/models"

# ---- 2. llama.cpp ---------------------------------------------------------
TARGETS=(llama-simple llama-quantize llama-tokenize llama-eval-callback)
if [ -n "${LLAMA_CPP_BIN:-}" ]; then
    BIN="$LLAMA_CPP_BIN"
else
    mkdir -p "$LLAMA_CACHE"
    LLAMA_CACHE="$(cd "$LLAMA_CACHE" && pwd)"
    SRC="$LLAMA_CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    BIN="$SRC/build/bin"
    built=1
    for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || built=0; done
    if [ "$built" = 1 ]; then
        log "llama.cpp already built in $BIN"
    else
        if [ ! -d "$SRC" ]; then
            log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
            "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
                -d "$LLAMA_CACHE/dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
            tar xzf "$LLAMA_CACHE/dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$LLAMA_CACHE"
        fi
        command -v cmake >/dev/null || die "cmake not found (apt-get install -y cmake)"
        log "building llama.cpp in $SRC/build"
        (cd "$SRC" &&
         cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
               -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON >/dev/null &&
         cmake --build build -j"$JOBS" --target "${TARGETS[@]}" >/dev/null)
    fi
fi
for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || die "missing $BIN/$t"; done

# ---- 3. synthetic models --------------------------------------------------
FIX="tests/data/models"
mkdir -p "$FIX"
SCRATCH="$CACHE_DIR/synthetic-scratch"
"$PY" scripts/make_synthetic.py "$FIX" --llama-quantize "$BIN/llama-quantize" --scratch "$SCRATCH"
(cd "$FIX" && "$PY" -c "
import glob, hashlib
with open('SHA256SUMS', 'w') as out:
    for f in sorted(glob.glob('*.gguf')):
        out.write(hashlib.sha256(open(f, 'rb').read()).hexdigest() + '  ' + f + '\n')")

# ---- 4. header dumps ------------------------------------------------------
"$PY" scripts/gguf_dump.py --out-dir tests/data/dumps \
    "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODELS/gemma-3-270m-q4_k_m.gguf" "$FIX"/*.gguf

# ---- 5. quant goldens -----------------------------------------------------
[ -f scripts/gen_quant_golden.py ] || die "scripts/gen_quant_golden.py is missing"
"$PY" scripts/gen_quant_golden.py tests/data/quant

# ---- 6. smoke check with upstream llama.cpp -------------------------------
fail=0
for m in "$FIX"/*.gguf; do
    case "$(basename "$m")" in
        tiny-bitnet-i2_s.gguf) continue ;;               # fork-only type 36
        tiny-bitnet25-tq2_0.gguf) continue ;;            # fork-only architecture
        tiny-split-0000[2-9]-of-*.gguf) continue ;;       # loaded via the first split
    esac
    if "$BIN/llama-simple" -m "$m" -n 4 "hello the world" >/dev/null 2>&1; then
        log "llama.cpp runs $(basename "$m")"
    else
        log "llama.cpp FAILED on $(basename "$m")"; fail=1
    fi
done
[ "$fail" = 0 ] || die "some synthetic models do not run in llama.cpp"

# ---- 7. golden tool and tokenizer goldens --------------------------------
# The llama.cpp source tree is the parent of build/bin (headers + libs).
LLAMA_SRC="$(cd "$BIN/../.." && pwd)"
[ -f "$LLAMA_SRC/include/llama.h" ] || die "no llama.cpp source tree above $BIN (need include/llama.h)"
GOLDEN_BIN="${GOLDEN_BIN:-$CACHE_DIR/golden/golden}"
tools/golden/build.sh "$LLAMA_SRC" "$GOLDEN_BIN"
"$PY" scripts/gen_tokenizer_golden.py "$GOLDEN_BIN" tests/data/tokenizer \
    --models-dir "$MODELS" --llama-tokenize "$BIN/llama-tokenize"

# ---- 8. logit goldens -----------------------------------------------------
"$PY" scripts/gen_logit_golden.py "$GOLDEN_BIN" "$FIX" tests/data/golden \
    --extra-model "$SCRATCH/tiny-bitnet-f32.gguf" --real-models "$MODELS"
# bitnet-25 has no llama.cpp: a numpy reference, first checked against llama.cpp on bitnet.
"$PY" scripts/ref_bitnet.py tests/data/golden/logits "$FIX/tiny-bitnet25-tq2_0.gguf" \
    --check tests/data/golden/logits/tiny-bitnet-f32.json "$SCRATCH/tiny-bitnet-f32.gguf"

# ---- 9. tokenizer vocabulary goldens (llama.cpp's detokenizer, special handling) ----
TERNLM_CACHE="$CACHE_DIR" scripts/gen_vocab_golden.sh "$LLAMA_SRC"

# ---- 10. chat-template goldens (Python jinja2, set up as HF transformers does) ----
CHAT_VENV="$CACHE_DIR/chat-venv"
[ -x "$CHAT_VENV/bin/python" ] || { python3 -m venv "$CHAT_VENV" && "$CHAT_VENV/bin/pip" install --quiet jinja2 "gguf==0.19.0"; }
"$CHAT_VENV/bin/python" scripts/gen_chat_golden.py --templates "$CACHE_DIR/templates" --out tests/data/chat \
    --gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$CACHE_DIR"/vocab/ggml-vocab-*.gguf

log "done; review and commit tests/data/"

#!/usr/bin/env bash
# Build the `golden` oracle tool (tools/golden/golden.cpp) against a built
# llama.cpp tree (testing.md §1). Our code only; nothing from llama.cpp is
# copied into this repository.
#
# Usage: tools/golden/build.sh LLAMA_CPP_DIR [OUT_BIN]
#   LLAMA_CPP_DIR  llama.cpp source tree with a CMake build in build/
#                  (include/llama.h, ggml/include/, build/bin/libllama.so,
#                  libggml*.so), e.g. the vendor/llama.cpp of the
#                  llama-cpp-python 0.3.36 sdist built by scripts/regen-goldens.sh
#   OUT_BIN        output binary (default: LLAMA_CPP_DIR/build/bin/golden)
#
# Environment: CXX (default g++), CXXFLAGS (default -O2 -g).
# The binary gets an rpath to LLAMA_CPP_DIR/build/bin, so it runs in place
# without LD_LIBRARY_PATH.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLAMA="$(cd "$1" && pwd)"
LIBDIR="$LLAMA/build/bin"
OUT="${2:-$LIBDIR/golden}"
CXX="${CXX:-g++}"
CXXFLAGS="${CXXFLAGS:--O2 -g}"

for f in "$LLAMA/include/llama.h" "$LLAMA/ggml/include/ggml.h" "$LIBDIR/libllama.so" "$LIBDIR/libggml.so" "$LIBDIR/libggml-base.so"; do
    [ -e "$f" ] || { echo "build.sh: missing $f (build llama.cpp first)" >&2; exit 1; }
done
mkdir -p "$(dirname "$OUT")"

# shellcheck disable=SC2086
"$CXX" -std=c++17 $CXXFLAGS -Wall -Wextra \
    -I"$LLAMA/include" -I"$LLAMA/ggml/include" \
    "$HERE/golden.cpp" -o "$OUT" \
    -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lllama -lggml -lggml-base

echo "built $OUT" >&2

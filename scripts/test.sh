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
step "Chromium and chromedriver (Debian) for the browser GPU test"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
fi
# One build from scratch: incremental state would only take disk (~0.75 GB).
export CARGO_INCREMENTAL=0
# Mesa warns on every device creation without a writable runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

step "test models (PyPI) into .cache, sha256-verified"
bash scripts/fetch-models.sh

step "format, lints (native and wasm32) and doc links"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --lib --locked --target wasm32-unknown-unknown --no-default-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib

step "library builds for wasm32"
cargo build --lib --locked --target wasm32-unknown-unknown --no-default-features

step "native tests"
cargo test --locked

step "ternary GEMV with 16-lane subgroups too (lavapipe at LP_NATIVE_VECTOR_WIDTH=512: gemv.wgsl XQ_SG=16)"
out="$(LP_NATIVE_VECTOR_WIDTH=512 cargo test --locked --test gpu_ops_quant matmul_ternary -- --nocapture 2>&1)" ||
    { echo "$out"; exit 1; }
grep "x quantized by" <<<"$out"
grep -q "no_subgroups false: x quantized by subgroups of Some(16)" <<<"$out" ||
    { echo "$out"; echo "lavapipe did not take 16-lane subgroups: XQ_SG=16 was not tested" >&2; exit 1; }

step "kernel harness and GPU decode with checked shaders (TERNLM_GPU_CHECKED=1: loop bounding, index clamping and zeroed workgroup memory, as in the browser)"
TERNLM_GPU_CHECKED=1 cargo test --locked --test gpu_ops --test gpu_ops_attn --test gpu_ops_attn_prefill \
    --test gpu_ops_gemm --test gpu_ops_quant --test gpu_ops_topk --test gpu_decode

step "web package builds from the wasm-pack.toml contract"
bash scripts/build-web.sh
test -s www/pkg/ternlm_bg.wasm && test -s www/pkg/ternlm.js && test -s www/pkg/ternlm.d.ts

step "wasm tests under node (the browser's CPU fallback)"
cargo test --locked --target wasm32-unknown-unknown --no-default-features --test wasm_node --test session_wasm

step "GPU backend in headless Chromium: WebGPU on SwiftShader (webdriver.json has the flags)"
# The kernel harness, greedy decode, streamed loading, device loss and async sessions of
# tests/gpu_ops*.rs, gpu_decode.rs, gpu_stream_load.rs, gpu_device_lost.rs and
# session_async.rs, awaited in the browser; the runner's default 20 s limit is for the whole run
# (15+ minutes on a 2-core machine with Debian's current Chromium: SwiftShader compiles each
# pipeline on the CPU; 900 s cut the suite off at its 28th and 34th tests in two runs).
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=2400 \
    cargo test --locked --target wasm32-unknown-unknown --no-default-features --test gpu_browser

//! The GPU backend in headless Chromium on WebGPU (SwiftShader: no `shader-f16`, and wgpu's web
//! backend exposes no subgroups, so every kernel takes its f32 workgroup-reduction path). The
//! same test files as natively, compiled for wasm32 with `gpu_test` = `#[wasm_bindgen_test]`
//! (tests/gpu_util): the kernel harness against the CPU references (tests/gpu_ops*.rs), the
//! greedy decode of committed synthetic models with llama.cpp's ids (tests/gpu_decode.rs), the
//! same models streamed to the GPU in chunks (tests/gpu_stream_load.rs), a lost device
//! (tests/gpu_device_lost.rs) and sessions driven through their async API, greedy and sampled,
//! on the GPU and the wasm CPU engine (tests/session_async.rs). The prefill GEMM's file takes a
//! reduced case set here (tests/gpu_ops_gemm.rs `BROWSER`).
//! Every readback is awaited; nothing blocks.
//!
//! Run (scripts/test.sh; the browser and its flags are in webdriver.json):
//! `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown
//! --no-default-features --test gpu_browser`. No WebGPU adapter fails every GPU test (never a
//! skip).
#![cfg(target_arch = "wasm32")]
// Each included file declares `mod gpu_util;` itself, as it does as a native test binary.
#![allow(clippy::duplicate_mod)]

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

#[path = "gpu_decode.rs"]
mod gpu_decode;
#[path = "gpu_device_lost.rs"]
mod gpu_device_lost;
#[path = "gpu_ops.rs"]
mod gpu_ops;
#[path = "gpu_ops_attn.rs"]
mod gpu_ops_attn;
#[path = "gpu_ops_attn_prefill.rs"]
mod gpu_ops_attn_prefill;
#[path = "gpu_ops_gemm.rs"]
mod gpu_ops_gemm;
#[path = "gpu_ops_quant.rs"]
mod gpu_ops_quant;
#[path = "gpu_ops_topk.rs"]
mod gpu_ops_topk;
#[path = "gpu_stream_load.rs"]
mod gpu_stream_load;
#[path = "session_async.rs"]
mod session_async;

use ternlm::backend::gpu::{GpuContext, GpuOptions};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

/// The browser's adapter (SwiftShader in headless Chromium), logged; wgpu's web backend never
/// exposes subgroups, so the kernels above ran their workgroup-reduction forms.
#[wasm_bindgen_test]
async fn webgpu_adapter() {
    let ctx = GpuContext::new(&GpuOptions::default())
        .await
        .unwrap_or_else(|e| {
            panic!("no WebGPU adapter ({e}): Chromium needs --enable-unsafe-webgpu")
        });
    let l = &ctx.limits;
    console_log!(
        "adapter {:?}; shader-f16 {}, subgroups {}; binding {} B, buffer {} B, storage buffers \
         per stage {}, invocations {}",
        ctx.adapter,
        ctx.f16,
        ctx.subgroups,
        l.max_storage_buffer_binding_size,
        l.max_buffer_size,
        l.max_storage_buffers_per_shader_stage,
        l.max_compute_invocations_per_workgroup
    );
    assert!(!ctx.subgroups, "wgpu's web backend exposes no subgroups");
}

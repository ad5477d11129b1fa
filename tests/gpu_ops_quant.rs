//! matmul and embed of every quantized weight type against the CPU decoders (src/quant), on
//! the GPU layouts of src/backend/gpu/layout.rs: legacy 32-element blocks, K-quants and the
//! ternary types through T2R. The kernels dequantize exactly and accumulate in f32, so matmul
//! is held to the f32 bound against an f64 reference of the decoded weights, and embed must be
//! bit-exact.

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::{ops, GpuOptions};
use ternlm::quant::GgmlType;

/// Exact dequantization, f32 accumulation (testing.md §3).
const BOUND: f64 = 1e-7;

async fn run(types: &[GgmlType], shapes: &[(usize, usize)]) {
    for &ty in types {
        let e = matmul_cases(ty, shapes, BOUND, false).await;
        eprintln!("{ty:?}: worst matmul NMSE {e:.3e}");
        if matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0) {
            // Runs of rows of one scale, as BitNet's tensors have (gemv.wgsl T2R_ROW_SCALE).
            let e = matmul_cases(ty, shapes, BOUND, true).await;
            eprintln!("{ty:?} in runs of one scale: worst matmul NMSE {e:.3e}");
        }
    }
}

#[gpu_test]
async fn matmul_legacy_blocks() {
    use GgmlType::*;
    run(
        &[Q4_0, Q4_1, Q5_0, Q5_1, Q8_0],
        &[(32, 5), (96, 7), (608, 13), (96, 301), (9216, 3)],
    )
    .await;
}

#[gpu_test]
async fn matmul_k_quants() {
    use GgmlType::*;
    run(
        &[Q2_K, Q3_K, Q4_K, Q5_K, Q6_K],
        &[(256, 5), (768, 7), (256, 301), (9216, 3)],
    )
    .await;
    // An LM head's row count: one token takes x as int8 (ops::gemv_quantizes_x), in the head's
    // workgroup shape; 16,411 rows end inside a workgroup.
    run(&[Q6_K], &[(768, 16411)]).await;
}

#[gpu_test]
async fn matmul_ternary() {
    use GgmlType::*;
    // matmul_cases takes every shape with the adapter's subgroups and without; which way the
    // one-token products quantize x in each (gemv.wgsl XQ_SG or the workgroup-memory maxima):
    for no_subgroups in [false, true] {
        let ctx = ctx_with_async(&GpuOptions {
            no_subgroups,
            ..Default::default()
        })
        .await;
        let by = ops::gemv_subgroup_quantize(&ctx);
        assert!(!no_subgroups || by.is_none());
        eprintln!("no_subgroups {no_subgroups}: x quantized by subgroups of {by:?} (None: workgroup memory)");
    }
    run(
        &[TQ1_0, TQ2_0],
        // 2560 columns: three units a thread in the one-token product (gemv.wgsl PRE3).
        &[
            (256, 5),
            (768, 7),
            (2560, 5),
            (768, 301),
            (4864, 3),
            (9216, 3),
        ],
    )
    .await;
    // I2_S rows are whole 128-column chunks; K % 256 = 128 leaves a pad chunk in T2R.
    run(&[I2_S], &[(128, 3), (384, 7), (768, 301)]).await;
}

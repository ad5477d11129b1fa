//! WGSL kernels against the CPU reference (the backend-check harness, tests/gpu_util): fresh
//! random inputs, odd shapes, poisoned outputs, sentinels, NMSE bounds per op. Runs on
//! whatever adapter exists (lavapipe in CI).

mod gpu_util;

use gpu_util::*;
use ternlm::backend::cpu::ops as cpu;
use ternlm::backend::gpu::{ops, GpuContext};
use ternlm::model::arch::Activation;
use ternlm::quant::GgmlType;

/// f32 ops: the bound of testing.md §3.
const F32_BOUND: f64 = 1e-7;

#[test]
fn elementwise_ops() {
    let ctx = ctx();
    let mut rng = Rng::new(1);
    for &(rows, cols) in &[(1, 1), (3, 7), (5, 576), (2, 70_001)] {
        let n = rows * cols;
        let (a, b, bias) = (rng.values(n), rng.values(n), rng.values(cols));
        let case = format!("{rows}x{cols}");

        // add
        let x = ctx.storage_init("x", bytemuck::cast_slice(&a));
        let mut enc = encoder(&ctx);
        ops::add(&ctx, &mut enc, &x, &upload_f32(&ctx, &b), n).unwrap();
        let got = ctx.read_f32_blocking(Some(enc), &x, 0, n).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(got, want, "add {case}");

        // add_bias, scale, softcap
        let x = ctx.storage_init("x", bytemuck::cast_slice(&a));
        let mut enc = encoder(&ctx);
        ops::add_bias(&ctx, &mut enc, &x, &upload_f32(&ctx, &bias), n, cols).unwrap();
        ops::unary(&ctx, &mut enc, "scale", &x, n, 0.37).unwrap();
        ops::unary(&ctx, &mut enc, "softcap", &x, n, 5.5).unwrap();
        let got = ctx.read_f32_blocking(Some(enc), &x, 0, n).unwrap();
        let want: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let v = (v + bias[i % cols]) * 0.37;
                5.5 * (v / 5.5).tanh()
            })
            .collect();
        check(
            &format!("bias/scale/softcap {case}"),
            &got,
            &want,
            F32_BOUND,
        );

        // glu, every activation
        for act in [Activation::Silu, Activation::GeluTanh, Activation::Relu2] {
            let out = poisoned(&ctx, n);
            let mut enc = encoder(&ctx);
            let (g, u) = (upload_f32(&ctx, &a), upload_f32(&ctx, &b));
            ops::glu(&ctx, &mut enc, &g, &u, &out, n, act).unwrap();
            let got = finish(&ctx, enc, &out, n);
            let mut want = vec![0f32; n];
            cpu::glu(&a, &b, act, &mut want);
            check(&format!("glu {act:?} {case}"), &got, &want, F32_BOUND);
        }

        // copy_cols: the middle third of the columns (at least one)
        let (c0, w) = (cols / 3, (cols / 3).max(1).min(cols - cols / 3));
        let out = poisoned(&ctx, rows * w);
        let mut enc = encoder(&ctx);
        ops::copy_cols(
            &ctx,
            &mut enc,
            &upload_f32(&ctx, &a),
            cols,
            c0,
            &out,
            rows,
            w,
        )
        .unwrap();
        let got = finish(&ctx, enc, &out, rows * w);
        let want: Vec<f32> = (0..rows)
            .flat_map(|r| a[r * cols + c0..r * cols + c0 + w].to_vec())
            .collect();
        assert_eq!(got, want, "copy_cols {case}");
    }
}

#[test]
fn rms_norm_plain_and_per_head() {
    let ctx = ctx();
    let mut rng = Rng::new(2);
    for &(rows, cols, group, weighted) in &[
        (1, 1, 1, true),
        (3, 576, 576, true),
        (4, 576, 64, true),
        (2, 1000, 1000, false),
        (7, 4099, 4099, true),
    ] {
        let n = rows * cols;
        let x = rng.values(n);
        let w = rng.values(group);
        let out = poisoned(&ctx, n);
        let wb = upload_f32(&ctx, &w);
        let mut enc = encoder(&ctx);
        let wo = weighted.then_some(&wb);
        ops::rms_norm(
            &ctx,
            &mut enc,
            &upload_f32(&ctx, &x),
            wo,
            &out,
            n,
            group,
            1e-5,
        )
        .unwrap();
        let got = finish(&ctx, enc, &out, n);
        let mut want = vec![0f32; n];
        cpu::rms_norm(&x, weighted.then_some(&w[..]), group, 1e-5, &mut want);
        check(
            &format!("rms_norm {rows}x{cols}/{group}"),
            &got,
            &want,
            F32_BOUND,
        );
    }
}

#[test]
fn matmul_plain_types() {
    let shapes = [(1, 1), (7, 5), (64, 33), (577, 19), (2048, 9)];
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        matmul_cases(ty, &shapes, F32_BOUND);
    }
}

#[test]
fn grid_folds_past_the_dimension_limit() {
    let ctx: GpuContext = ctx();
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    assert_eq!(ctx.grid(5), [5, 1, 1]);
    let g = ctx.grid(max + 1);
    assert_eq!(g, [max, 2, 1]);
}

//! WGSL kernels against the CPU reference (the backend-check harness, tests/gpu_util): fresh
//! random inputs, odd shapes, poisoned outputs, sentinels, NMSE bounds per op. Runs on
//! whatever adapter exists (lavapipe in CI).

mod gpu_util;

use gpu_util::*;
use ternlm::backend::cpu::ops as cpu;
use ternlm::backend::gpu::{ops, upload, GpuContext, GpuOptions};
use ternlm::model::arch::Activation;
use ternlm::quant::{GgmlType, TensorView};

/// f32 ops: the bound of testing.md §3.
const F32_BOUND: f64 = 1e-7;

#[gpu_test]
async fn elementwise_ops() {
    let ctx = ctx_async().await;
    let mut rng = Rng::new(1);
    for &(rows, cols) in &[(1, 1), (3, 7), (5, 576), (2, 70_001)] {
        let n = rows * cols;
        let (a, b, bias) = (rng.values(n), rng.values(n), rng.values(cols));
        let case = format!("{rows}x{cols}");

        // add
        let x = ctx.storage_init("x", bytemuck::cast_slice(&a));
        let mut enc = encoder(&ctx);
        ops::add(&ctx, &mut enc, &x, &upload_f32(&ctx, &b), n).unwrap();
        let got = ctx.read_f32(Some(enc), &x, 0, n).await.unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(got, want, "add {case}");

        // add_bias, scale, softcap
        let x = ctx.storage_init("x", bytemuck::cast_slice(&a));
        let mut enc = encoder(&ctx);
        ops::add_bias(&ctx, &mut enc, &x, &upload_f32(&ctx, &bias), n, cols).unwrap();
        ops::unary(&ctx, &mut enc, "scale", &x, n, 0.37).unwrap();
        ops::unary(&ctx, &mut enc, "softcap", &x, n, 5.5).unwrap();
        let got = ctx.read_f32(Some(enc), &x, 0, n).await.unwrap();
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
            let got = finish_async(&ctx, enc, &out, n).await;
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
        let got = finish_async(&ctx, enc, &out, rows * w).await;
        let want: Vec<f32> = (0..rows)
            .flat_map(|r| a[r * cols + c0..r * cols + c0 + w].to_vec())
            .collect();
        assert_eq!(got, want, "copy_cols {case}");
    }
}

#[gpu_test]
async fn rms_norm_plain_and_per_head() {
    let ctx = ctx_async().await;
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
        let got = finish_async(&ctx, enc, &out, n).await;
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

#[gpu_test]
async fn matmul_plain_types() {
    let shapes = [(1, 1), (7, 5), (64, 33), (577, 19), (2048, 9)];
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        matmul_cases(ty, &shapes, F32_BOUND, false).await;
    }
}

#[gpu_test]
async fn grid_folds_past_the_dimension_limit() {
    let ctx: GpuContext = ctx_async().await;
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    assert_eq!(ctx.grid(5), [5, 1, 1]);
    let g = ctx.grid(max + 1);
    assert_eq!(g, [max, 2, 1]);
}

/// matmul.wgsl's fusions against the unfused CPU references: NORM (RMSNorm × weight first),
/// GLU (gate rows then up rows of one weight), RESIDUAL (accumulate into `y`), and a row range
/// of a weight (the halves of a gate+up weight), for plain, block, K and ternary types.
#[gpu_test]
async fn matmul_fusions_match_reference() {
    for &no_subgroups in NO_SUBGROUPS {
        let ctx = ctx_with_async(&GpuOptions {
            no_subgroups,
            ..Default::default()
        })
        .await;
        eprintln!("subgroups: {}", ctx.subgroups);
        matmul_fusions(&ctx).await;
    }
}

async fn matmul_fusions(ctx: &GpuContext) {
    let mut rng = Rng::new(21);
    const BOUND: f64 = 1e-7;
    // (type, K, rows / 2, three runs of rows of one scale: gemv.wgsl T2R_ROW_SCALE)
    for (ty, cols, n, runs) in [
        (GgmlType::F32, 70, 9, false),
        (GgmlType::Q4_0, 96, 13, false),
        (GgmlType::Q4_K, 256, 5, false),
        (GgmlType::Q8_0, 160, 6, false),
        (GgmlType::Q5_K, 512, 5, false),
        (GgmlType::Q6_K, 256, 9, false),
        (GgmlType::TQ2_0, 512, 7, false),
        (GgmlType::TQ2_0, 2560, 6, true),
        // BitNet-2B's down K: cut into slices natively (gemv.wgsl SPLITK: 3, under GLU 9).
        (GgmlType::TQ2_0, 6912, 5, true),
    ] {
        let mut bytes = random_tensor(&mut rng, ty, cols, 2 * n);
        if runs {
            share_scales(ty, &mut bytes, cols);
        }
        let v = TensorView::new("w", ty, &[cols as u64, 2 * n as u64], &bytes).unwrap();
        let w = upload(ctx, &v).unwrap();
        assert_eq!(
            w.scale_runs.len(),
            if runs { 3 } else { 0 },
            "{ty:?} {cols}"
        );
        let half = |i: usize| {
            let rb = bytes.len() / (2 * n);
            TensorView::new(
                "h",
                ty,
                &[cols as u64, n as u64],
                &bytes[i * n * rb..(i + 1) * n * rb],
            )
            .unwrap()
        };
        for tokens in [1usize, 5] {
            let case = format!("{ty:?} {cols}x{n} t{tokens}");
            let x = rng.values(tokens * cols);
            let nw: Vec<f32> = (0..cols).map(|_| 1.0 + 0.3 * rng.value()).collect();
            let eps = 1e-5;
            let mut xn = vec![0f32; x.len()];
            cpu::rms_norm(&x, Some(&nw), cols, eps, &mut xn);
            let (xb, nwb) = (upload_f32(ctx, &x), upload_f32(ctx, &nw));
            // What the kernel multiplies: x, or x quantized (ops::gemv_quantizes_x).
            let (xq, xnq) = (
                gemv_input(ctx, &w, &x, tokens),
                gemv_input(ctx, &w, &xn, tokens),
            );
            let run = async |fuse: ops::Fuse, y: &wgpu::Buffer, y_cols: usize| {
                let mut enc = encoder(ctx);
                ops::matmul(ctx, &mut enc, &w, &xb, tokens, y, y_cols, 0, fuse).unwrap();
                finish_async(ctx, enc, y, tokens * y_cols).await
            };
            let norm = Some((&nwb, eps));

            // NORM over all 2n rows.
            let y = poisoned(ctx, tokens * 2 * n);
            let got = run(
                ops::Fuse {
                    norm,
                    ..Default::default()
                },
                &y,
                2 * n,
            )
            .await;
            check(
                &format!("norm {case}"),
                &got,
                &reference_matmul(&v, &xnq, tokens),
                BOUND,
            );

            // Row range: the up half alone, on the plain input.
            let y = poisoned(ctx, tokens * n);
            let rows = Some((n, n));
            let got = run(
                ops::Fuse {
                    rows,
                    ..Default::default()
                },
                &y,
                n,
            )
            .await;
            check(
                &format!("rows {case}"),
                &got,
                &reference_matmul(&half(1), &xq, tokens),
                BOUND,
            );

            // NORM + GLU.
            for act in [Activation::Silu, Activation::GeluTanh, Activation::Relu2] {
                let y = poisoned(ctx, tokens * n);
                let glu = Some(act);
                let got = run(
                    ops::Fuse {
                        norm,
                        glu,
                        ..Default::default()
                    },
                    &y,
                    n,
                )
                .await;
                let (g, u) = (
                    reference_matmul(&half(0), &xnq, tokens),
                    reference_matmul(&half(1), &xnq, tokens),
                );
                let mut want = vec![0f32; g.len()];
                cpu::glu(&g, &u, act, &mut want);
                check(&format!("glu {act:?} {case}"), &got, &want, BOUND);
            }

            // One token through three row ranges into three buffers (the q, k, v split).
            if tokens == 1 {
                let counts = [n - 1, n / 2, n / 2];
                let bufs = counts.map(|c| poisoned(ctx, c));
                let outs = [0, 1, 2].map(|i| (&bufs[i], counts[i]));
                let mut enc = encoder(ctx);
                ops::matmul_split(ctx, &mut enc, &w, &xb, 1, 1, outs, norm).unwrap();
                ctx.submit(enc);
                let all = reference_matmul(&v, &xnq, 1);
                let mut first = 1;
                for (i, &c) in counts.iter().enumerate() {
                    let got = finish_async(ctx, encoder(ctx), &bufs[i], c).await;
                    let case = format!("split {i} {case}");
                    check(&case, &got, &all[first..first + c], BOUND);
                    first += c;
                }
            }

            // RESIDUAL onto random values.
            let y0 = rng.values(tokens * 2 * n);
            let mut init = y0.clone();
            init.extend(std::iter::repeat_n(f32::from_bits(SENTINEL), GUARD));
            let y = upload_f32(ctx, &init);
            let got = run(
                ops::Fuse {
                    residual: true,
                    ..Default::default()
                },
                &y,
                2 * n,
            )
            .await;
            let want: Vec<f32> = reference_matmul(&v, &xq, tokens)
                .iter()
                .zip(&y0)
                .map(|(a, b)| a + b)
                .collect();
            check(&format!("residual {case}"), &got, &want, BOUND);
        }
    }
    // A GLU over a weight of an odd row count is refused.
    let bytes = random_tensor(&mut rng, GgmlType::F32, 8, 3);
    let v = TensorView::new("w", GgmlType::F32, &[8, 3], &bytes).unwrap();
    let w = upload(ctx, &v).unwrap();
    let (x, y) = (upload_f32(ctx, &[0.0; 8]), poisoned(ctx, 3));
    let fuse = ops::Fuse {
        glu: Some(Activation::Silu),
        ..Default::default()
    };
    assert!(ops::matmul(ctx, &mut encoder(ctx), &w, &x, 1, &y, 1, 0, fuse).is_err());
}

/// The GPU argmax equals the CPU's (first maximum, NaN never wins, all-NaN → 0) on random rows,
/// rows with ties (within a chunk of the first pass and across chunks), NaN, ±inf, and a
/// 128k-wide LM-head row.
#[gpu_test]
async fn argmax_matches_cpu() {
    let ctx = ctx_async().await;
    let mut rng = Rng::new(33);
    for &(rows, cols) in &[(1, 1), (3, 7), (2, 257), (1, 128_256), (70, 50), (4, 9000)] {
        let mut x = rng.values(rows * cols);
        // Specials: a tie for the max, NaN, -inf, an all-NaN row.
        if cols > 3 {
            x[2] = 9.0;
            x[cols - 1] = 9.0;
            x[1] = f32::NAN;
        }
        if rows > 1 {
            x[cols..2 * cols].fill(f32::NAN);
        }
        if rows > 2 {
            x[2 * cols..3 * cols].fill(f32::NEG_INFINITY);
        }
        // Rows past those: the maximum in a later chunk, tied with a chunk after it, so that
        // every chunk's winner counts (the merge of argmax.wgsl's chunks, ops::ARGMAX_CHUNK).
        for r in 3..rows {
            let row = &mut x[r * cols..(r + 1) * cols];
            let at = (r * 7919) % cols;
            row[at] = 50.0;
            row[cols - 1] = 50.0;
        }
        if rows == 1 && cols > 8192 {
            x[cols / 2] = 12.0;
            x[cols - 3] = 12.0;
        }
        let ids = poisoned(&ctx, rows);
        let mut enc = encoder(&ctx);
        let scratch = poisoned(&ctx, ops::argmax_scratch(rows, cols));
        let xb = upload_f32(&ctx, &x);
        ops::argmax(&ctx, &mut enc, &xb, rows, cols, &scratch, &ids).unwrap();
        let got: Vec<u32> = finish_async(&ctx, enc, &ids, rows)
            .await
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want: Vec<u32> = x.chunks(cols).map(cpu::argmax).collect();
        assert_eq!(got, want, "{rows}x{cols}");
    }
}

//! The prefill GEMM (shaders/gemm.wgsl, `backend::gpu::gemm`) against the CPU decoders and
//! references: every weight type, odd shapes (rows not a multiple of the 128-row tile, tokens
//! not a multiple of the 64-token tile, columns not a multiple of the 16-column step for the
//! plain types and not of 256 for the legacy blocks), weights split into row parts, and every
//! fusion (NORM, GLU, RESIDUAL, row ranges, NORM with RESIDUAL) with and without subgroups;
//! poisoned outputs and sentinels (tests/gpu_util); the q/k/v SPLIT into three outputs (NORM on
//! and off); split-K (past 1024 columns, few tiles: gemm.wgsl KSPLIT + gemm_reduce.wgsl) in the
//! type, part and fusion cases. Also checks that `ops::matmul` and `ops::matmul_split` route
//! multi-token work here.

mod gpu_util;

use gpu_util::*;
use ternlm::backend::cpu::ops as cpu;
use ternlm::backend::gpu::gemm::{gemm, gemm_split, GEMM_MIN_TOKENS};
use ternlm::backend::gpu::{ops, upload, GpuContext, GpuOptions, GpuWeight};
use ternlm::model::arch::Activation;
use ternlm::quant::{GgmlType, TensorView};

/// Exact dequantization, f32 accumulation (testing.md §3).
const BOUND: f64 = 1e-7;

/// In headless Chromium (tests/gpu_browser.rs) SwiftShader runs every dispatch on the CPU and
/// compiles each pipeline anew per context, so there each test takes a reduced case set
/// ([`pick`]): every type, one odd shape per family across the row tile, token counts on both
/// sides of the token tile, no weights split into parts (the same shader with a row offset,
/// covered natively) and no subgroup pass (the web backend has none).
const BROWSER: bool = cfg!(target_arch = "wasm32");

/// `native`, or `browser` in the browser run.
fn pick<'a, T>(native: &'a [T], browser: &'a [T]) -> &'a [T] {
    if BROWSER {
        browser
    } else {
        native
    }
}

/// Token counts: below, at and across the 64-token tile, and one that `ops::matmul` routes
/// through matmul.wgsl (1).
const TOKENS: &[usize] = if BROWSER {
    &[3, 70]
} else {
    &[1, 3, 17, 64, 70]
};

/// `y = W·x` by gemm (or by `ops::matmul` when `routed`) on fresh inputs, against the f64
/// reference of the decoded weights; returns the NMSE.
#[allow(clippy::too_many_arguments)]
async fn run_plain(
    ctx: &GpuContext,
    rng: &mut Rng,
    v: &TensorView<'_>,
    w: &GpuWeight,
    tokens: usize,
    routed: bool,
    case: &str,
) -> f64 {
    let (cols, rows) = (v.ncols(), v.nrows());
    let x = rng.values(tokens * cols);
    let y = poisoned(ctx, tokens * rows);
    let mut enc = encoder(ctx);
    let xb = upload_f32(ctx, &x);
    let f = if routed { ops::matmul } else { gemm };
    f(
        ctx,
        &mut enc,
        w,
        &xb,
        tokens,
        &y,
        rows,
        0,
        Default::default(),
    )
    .unwrap();
    let got = finish_async(ctx, enc, &y, tokens * rows).await;
    let e = nmse(case, &got, &reference_matmul(v, &x, tokens));
    assert!(e <= BOUND, "{case}: NMSE {e:e} > {BOUND:e}");
    e
}

/// Every shape and token count of one type, whole and split into row parts (a binding limit of
/// a few rows, or about 130 for 256 rows or more: T2R parts are whole 128-row multiples).
async fn types(tys: &[GgmlType], shapes: &[(usize, usize)]) {
    for &ty in tys {
        let mut rng = Rng::new(ty as u64 + 500);
        let mut worst = 0f64;
        for &split in pick(&[false, true], &[false]) {
            for &(cols, rows) in shapes {
                let data = random_tensor(&mut rng, ty, cols, rows);
                let v = TensorView::new("w", ty, &[cols as u64, rows as u64], &data).unwrap();
                let row_bytes = data.len() / rows + cols / 4 + 16;
                let part_rows = if rows >= 256 { 130 } else { 3 };
                let limit = (row_bytes * part_rows).next_multiple_of(256);
                let ctx = ctx_with_async(&GpuOptions {
                    max_binding_size: split.then_some(limit as u64),
                    no_subgroups: split,
                    ..Default::default()
                })
                .await;
                let w = upload(&ctx, &v).unwrap();
                if split && data.len() > limit {
                    assert!(w.parts.len() > 1, "{ty:?} {cols}x{rows}: split");
                }
                for &tokens in TOKENS {
                    let case = format!("gemm {ty:?} {cols}x{rows} t{tokens} split={split}");
                    let e = run_plain(&ctx, &mut rng, &v, &w, tokens, false, &case).await;
                    worst = worst.max(e);
                }
            }
        }
        eprintln!("{ty:?}: worst gemm NMSE {worst:.3e}");
    }
}

#[gpu_test]
async fn gemm_plain_types() {
    use GgmlType::*;
    let shapes = pick(
        &[(1, 1), (37, 131), (70, 9), (272, 129), (1037, 131)],
        &[(37, 131)],
    );
    types(&[F32, F16, BF16], shapes).await;
}

#[gpu_test]
async fn gemm_legacy_blocks() {
    use GgmlType::*;
    types(
        &[Q4_0, Q4_1, Q5_0, Q5_1, Q8_0],
        pick(&[(32, 5), (96, 131), (608, 77), (1056, 77)], &[(96, 131)]),
    )
    .await;
}

#[gpu_test]
async fn gemm_k_quants() {
    use GgmlType::*;
    types(
        &[Q2_K, Q3_K, Q4_K, Q5_K, Q6_K],
        pick(
            &[(256, 5), (768, 131), (512, 301), (1280, 301)],
            &[(256, 131)],
        ),
    )
    .await;
    // An LM head's row count: Q6_K stored in tiles of 128 rows (GpuWeight::tiled), the last
    // one part-filled (natively; the browser's matmul_k_quants has such a head).
    types(&[Q6_K], pick(&[(256, 16411)], &[])).await;
}

#[gpu_test]
async fn gemm_ternary() {
    use GgmlType::*;
    types(
        &[TQ1_0, TQ2_0],
        pick(&[(256, 5), (768, 301), (1280, 131)], &[(256, 131)]),
    )
    .await;
    // K % 256 = 128 leaves a pad chunk in T2R; the I2_S tensor scale is the kernel multiplier.
    types(
        &[I2_S],
        pick(&[(384, 131), (768, 301), (1152, 131)], &[(384, 131)]),
    )
    .await;
}

/// `ops::matmul` takes the GEMM from GEMM_MIN_TOKENS tokens on (and matmul.wgsl below): both
/// sides of the threshold agree with the reference.
#[gpu_test]
async fn matmul_routes_prefill_to_gemm() {
    let ctx = ctx_async().await;
    let mut rng = Rng::new(77);
    let ty = GgmlType::Q4_K;
    let (cols, rows) = (512, 200);
    let data = random_tensor(&mut rng, ty, cols, rows);
    let v = TensorView::new("w", ty, &[cols as u64, rows as u64], &data).unwrap();
    let w = upload(&ctx, &v).unwrap();
    for tokens in [GEMM_MIN_TOKENS - 1, GEMM_MIN_TOKENS, 100] {
        let case = format!("matmul {ty:?} t{tokens}");
        run_plain(&ctx, &mut rng, &v, &w, tokens, true, &case).await;
    }
}

/// gemm.wgsl's fusions against the unfused CPU references, with and without subgroups.
#[gpu_test]
async fn gemm_fusions_match_reference() {
    for &no_subgroups in pick(&[false, true], &[true]) {
        let ctx = ctx_with_async(&GpuOptions {
            no_subgroups,
            ..Default::default()
        })
        .await;
        eprintln!("subgroups: {}", ctx.subgroups);
        fusions(&ctx).await;
    }
}

async fn fusions(ctx: &GpuContext) {
    let mut rng = Rng::new(41);
    // n rows per half: 70 is past one 64-output GLU tile, 131 past one 128-row tile.
    let cases = [
        (GgmlType::F32, 70, 70),
        (GgmlType::Q4_0, 96, 13),
        (GgmlType::Q4_K, 256, 131),
        (GgmlType::Q6_K, 512, 70),
        (GgmlType::TQ2_0, 512, 70),
        // Past 1024 columns: NORM, row ranges and RESIDUAL split along K (gemm::split_k).
        (GgmlType::Q6_K, 1280, 70),
    ];
    for &(ty, cols, n) in pick(&cases, &[cases[0], cases[2], cases[4], cases[5]]) {
        let bytes = random_tensor(&mut rng, ty, cols, 2 * n);
        let v = TensorView::new("w", ty, &[cols as u64, 2 * n as u64], &bytes).unwrap();
        let w = upload(ctx, &v).unwrap();
        let half = |i: usize| {
            let rb = bytes.len() / (2 * n);
            let b = &bytes[i * n * rb..(i + 1) * n * rb];
            TensorView::new("h", ty, &[cols as u64, n as u64], b).unwrap()
        };
        for &tokens in pick(&[3, 70], &[70]) {
            let case = format!("{ty:?} {cols}x{n} t{tokens}");
            let x = rng.values(tokens * cols);
            let nw: Vec<f32> = (0..cols).map(|_| 1.0 + 0.3 * rng.value()).collect();
            let eps = 1e-5;
            let mut xn = vec![0f32; x.len()];
            cpu::rms_norm(&x, Some(&nw), cols, eps, &mut xn);
            let (xb, nwb) = (upload_f32(ctx, &x), upload_f32(ctx, &nw));
            let run = async |fuse: ops::Fuse, y: &wgpu::Buffer, y_cols: usize| {
                let mut enc = encoder(ctx);
                gemm(ctx, &mut enc, &w, &xb, tokens, y, y_cols, 0, fuse).unwrap();
                finish_async(ctx, enc, y, tokens * y_cols).await
            };
            let norm = Some((&nwb, eps));
            let fuse = ops::Fuse::default;

            // NORM over all 2n rows.
            let y = poisoned(ctx, tokens * 2 * n);
            let got = run(ops::Fuse { norm, ..fuse() }, &y, 2 * n).await;
            let want = reference_matmul(&v, &xn, tokens);
            check(&format!("norm {case}"), &got, &want, BOUND);

            // Row range: the up half alone, on the plain input.
            let y = poisoned(ctx, tokens * n);
            let rows = Some((n, n));
            let got = run(ops::Fuse { rows, ..fuse() }, &y, n).await;
            let want = reference_matmul(&half(1), &x, tokens);
            check(&format!("rows {case}"), &got, &want, BOUND);

            // NORM + GLU, every activation.
            let (g, u) = (
                reference_matmul(&half(0), &xn, tokens),
                reference_matmul(&half(1), &xn, tokens),
            );
            for act in [Activation::Silu, Activation::GeluTanh, Activation::Relu2] {
                let y = poisoned(ctx, tokens * n);
                let glu = Some(act);
                let got = run(
                    ops::Fuse {
                        norm,
                        glu,
                        ..fuse()
                    },
                    &y,
                    n,
                )
                .await;
                let mut want = vec![0f32; g.len()];
                cpu::glu(&g, &u, act, &mut want);
                check(&format!("glu {act:?} {case}"), &got, &want, BOUND);
            }

            // RESIDUAL (plain and with NORM: BitNet's sub-norm before wo/down) onto random
            // values, and into a wider output at a column offset (the other columns untouched).
            for with_norm in [false, true] {
                let y_cols = 2 * n + 5;
                let y0 = rng.values(tokens * y_cols);
                let mut init = y0.clone();
                init.extend(std::iter::repeat_n(f32::from_bits(SENTINEL), GUARD));
                let y = upload_f32(ctx, &init);
                let f = ops::Fuse {
                    residual: true,
                    norm: if with_norm { norm } else { None },
                    ..fuse()
                };
                let mut enc = encoder(ctx);
                gemm(ctx, &mut enc, &w, &xb, tokens, &y, y_cols, 3, f).unwrap();
                let got = finish_async(ctx, enc, &y, tokens * y_cols).await;
                let prod = reference_matmul(&v, if with_norm { &xn } else { &x }, tokens);
                let mut want = y0.clone();
                for t in 0..tokens {
                    for r in 0..2 * n {
                        want[t * y_cols + 3 + r] += prod[t * 2 * n + r];
                    }
                }
                check(
                    &format!("residual norm={with_norm} {case}"),
                    &got,
                    &want,
                    BOUND,
                );
            }
        }
    }
    // A GLU over a weight of an odd row count is refused.
    let bytes = random_tensor(&mut rng, GgmlType::F32, 8, 3);
    let v = TensorView::new("w", GgmlType::F32, &[8, 3], &bytes).unwrap();
    let w = upload(ctx, &v).unwrap();
    let (x, y) = (upload_f32(ctx, &[0.0; 8 * 20]), poisoned(ctx, 20));
    let fuse = ops::Fuse {
        glu: Some(Activation::Silu),
        ..Default::default()
    };
    assert!(gemm(ctx, &mut encoder(ctx), &w, &x, 20, &y, 1, 0, fuse).is_err());
}

/// The q/k/v split (gemm.wgsl's SPLIT through `gemm_split`, and `ops::matmul_split` on both
/// sides of the GEMM threshold: gemv for one token, three matmuls for 2..15, the GEMM from 16)
/// against the reference, with NORM on and off, with and without subgroups.
#[gpu_test]
async fn gemm_split_matches_reference() {
    for &no_subgroups in pick(&[false, true], &[true]) {
        let ctx = ctx_with_async(&GpuOptions {
            no_subgroups,
            ..Default::default()
        })
        .await;
        split_cases(&ctx).await;
    }
}

/// Every type family; widths that straddle the 128-row tile and its 4-row thread slices, a
/// split point inside a tile, a width of 1, a first row past 0 and rows left after the range;
/// split-K past 1024 columns.
async fn split_cases(ctx: &GpuContext) {
    use GgmlType::*;
    let mut rng = Rng::new(61);
    let mut worst = 0f64;
    // (type, cols, first row, q/k/v widths, rows after the range)
    #[allow(clippy::type_complexity)]
    let all: &[(GgmlType, usize, usize, [usize; 3], usize)] = &[
        (F32, 70, 0, [131, 45, 45], 0),
        (F16, 37, 3, [9, 3, 5], 2),
        (BF16, 16, 0, [64, 64, 64], 1),
        (Q4_0, 96, 0, [131, 33, 33], 0),
        (Q5_1, 64, 5, [70, 7, 7], 3),
        (Q8_0, 32, 1, [1, 130, 2], 0),
        (Q4_K, 256, 0, [131, 45, 45], 0),
        (Q6_K, 512, 2, [64, 1, 63], 5),
        (Q3_K, 256, 0, [33, 17, 17], 0),
        (TQ2_0, 256, 0, [131, 45, 45], 0),
        (TQ1_0, 512, 7, [20, 10, 10], 1),
        (I2_S, 384, 0, [128, 64, 64], 0),
        // Past 1024 columns, few tiles: split along K (KSPLIT, gemm_reduce's SPLIT).
        (Q4_K, 1280, 2, [131, 45, 45], 3),
        (TQ2_0, 1536, 0, [64, 32, 32], 0),
    ];
    let browser = [all[0], all[5], all[6], all[9], all[12]];
    for &(ty, cols, first, widths, after) in pick(all, &browser) {
        let rows = first + widths.iter().sum::<usize>() + after;
        let data = random_tensor(&mut rng, ty, cols, rows);
        let v = TensorView::new("w", ty, &[cols as u64, rows as u64], &data).unwrap();
        let w = upload(ctx, &v).unwrap();
        let nw: Vec<f32> = (0..cols).map(|_| 1.0 + 0.3 * rng.value()).collect();
        let nwb = upload_f32(ctx, &nw);
        let eps = 1e-5;
        // Direct gemm_split at any token count; routed through ops::matmul_split below, at and
        // past the GEMM threshold.
        let runs = [
            (3, false),
            (17, false),
            (70, false),
            (1, true),
            (GEMM_MIN_TOKENS - 1, true),
            (GEMM_MIN_TOKENS, true),
            (64, true),
        ];
        for &(tokens, routed) in pick(
            &runs,
            &[
                (70, false),
                (1, true),
                (GEMM_MIN_TOKENS - 1, true),
                (GEMM_MIN_TOKENS, true),
            ],
        ) {
            for with_norm in [false, true] {
                let case = format!(
                    "split {ty:?} {cols}x{rows} first {first} {widths:?} t{tokens} \
                     norm={with_norm} routed={routed} subgroups={}",
                    ctx.subgroups
                );
                let x = rng.values(tokens * cols);
                let xin = if with_norm {
                    let mut xn = vec![0f32; x.len()];
                    cpu::rms_norm(&x, Some(&nw), cols, eps, &mut xn);
                    xn
                } else {
                    x.clone()
                };
                let xb = upload_f32(ctx, &x);
                let bufs = widths.map(|n| poisoned(ctx, tokens * n));
                let outs = [0, 1, 2].map(|i| (&bufs[i], widths[i]));
                let norm = with_norm.then_some((&nwb, eps));
                let mut enc = encoder(ctx);
                let f = if routed {
                    ops::matmul_split
                } else {
                    gemm_split
                };
                f(ctx, &mut enc, &w, &xb, tokens, first, outs, norm).unwrap();
                ctx.submit(enc);
                // One routed token is the GEMV's (which may quantize x).
                let xk = if routed {
                    gemv_input(ctx, &w, &xin, tokens)
                } else {
                    xin.clone()
                };
                let all = reference_matmul(&v, &xk, tokens);
                let mut at = first;
                for (i, &n) in widths.iter().enumerate() {
                    let got = finish_async(ctx, encoder(ctx), &bufs[i], tokens * n).await;
                    let want: Vec<f32> = (0..tokens)
                        .flat_map(|t| all[t * rows + at..t * rows + at + n].to_vec())
                        .collect();
                    let e = nmse(&format!("{case} out {i}"), &got, &want);
                    assert!(e <= BOUND, "{case} out {i}: NMSE {e:e} > {BOUND:e}");
                    worst = worst.max(e);
                    at += n;
                }
            }
        }
    }
    eprintln!("subgroups {}: worst split NMSE {worst:.3e}", ctx.subgroups);

    // A range past the weight's rows, and a weight in several parts, are refused.
    let bytes = random_tensor(&mut rng, F32, 8, 12);
    let v = TensorView::new("w", F32, &[8, 12], &bytes).unwrap();
    let w = upload(ctx, &v).unwrap();
    let x = upload_f32(ctx, &[0.0; 8 * 20]);
    let bufs = [4, 4, 4].map(|n| poisoned(ctx, 20 * n));
    let outs = [0, 1, 2].map(|i| (&bufs[i], 4));
    assert!(gemm_split(ctx, &mut encoder(ctx), &w, &x, 20, 1, outs, None).is_err());
    assert!(ops::matmul_split(ctx, &mut encoder(ctx), &w, &x, 20, 1, outs, None).is_err());
    let split_ctx = ctx_with_async(&GpuOptions {
        max_binding_size: Some(256),
        ..Default::default()
    })
    .await;
    let parts = upload(&split_ctx, &v).unwrap();
    assert!(parts.parts.len() > 1);
    let x = upload_f32(&split_ctx, &[0.0; 8 * 20]);
    let bufs = [4, 4, 4].map(|n| poisoned(&split_ctx, 20 * n));
    let outs = [0, 1, 2].map(|i| (&bufs[i], 4));
    let e = gemm_split(
        &split_ctx,
        &mut encoder(&split_ctx),
        &parts,
        &x,
        20,
        0,
        outs,
        None,
    );
    assert!(e.is_err());
}

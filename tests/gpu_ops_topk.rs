//! `ops::top_k` (shaders/topk.wgsl) against `backend::cpu::ops::top_k`, word for word: the k
//! best (value bits, index) pairs of each row, best first, ties to the lower index, NaN never
//! chosen, −0 equal to +0, empty slots `(NaN, u32::MAX)`. Fresh random rows of odd widths
//! (1 … 151,936, across the first pass's 4096-value chunks), k = 1, 2, 40, 255, 256 and k > cols;
//! rows of many ties (a few distinct values, so ties cross chunks and the k-th value's ties must
//! be cut at the lower indices), ±inf, NaN, all-NaN and all −inf rows, signed zeros; poisoned
//! outputs and scratch, sentinels behind the output.

mod gpu_util;

use gpu_util::*;
use ternlm::backend::cpu::ops as cpu;
use ternlm::backend::gpu::{ops, GpuContext};

/// How a row is filled.
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Random values (with zeros and large magnitudes).
    Random,
    /// One of 5 values: ties everywhere.
    Ties,
    /// Random with NaN, ±inf and ±0 sprinkled in.
    Specials,
    /// Every value NaN.
    AllNan,
    /// Every value −inf (the k first indices win).
    AllNegInf,
}

fn row(rng: &mut Rng, cols: usize, fill: Fill) -> Vec<f32> {
    (0..cols)
        .map(|_| match fill {
            Fill::Random => rng.value(),
            Fill::Ties => [1.5, -0.25, 3.0, 3.0, -0.0, 0.0][rng.below(6)],
            Fill::Specials => match rng.below(16) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => -0.0,
                4 => 0.0,
                _ => rng.value(),
            },
            Fill::AllNan => f32::NAN,
            Fill::AllNegInf => f32::NEG_INFINITY,
        })
        .collect()
}

/// The CPU reference as the GPU writes it: k (bits, index) words per row, empty slots padded.
fn want(x: &[f32], cols: usize, k: usize) -> Vec<u32> {
    x.chunks(cols)
        .flat_map(|r| {
            let mut t = cpu::top_k(r, k);
            t.resize(k, (u32::MAX, f32::from_bits(0x7fc0_0000)));
            t.into_iter().flat_map(|(i, v)| [v.to_bits(), i])
        })
        .collect()
}

async fn case(ctx: &GpuContext, rng: &mut Rng, rows: usize, cols: usize, k: usize, fills: &[Fill]) {
    let x: Vec<f32> = (0..rows)
        .flat_map(|r| row(rng, cols, fills[r % fills.len()]))
        .collect();
    let out = poisoned(ctx, 2 * rows * k);
    let scratch = poisoned(ctx, ops::top_k_scratch(rows, cols, k));
    let mut enc = encoder(ctx);
    ops::top_k(
        ctx,
        &mut enc,
        &upload_f32(ctx, &x),
        rows,
        cols,
        k,
        &scratch,
        &out,
    )
    .unwrap();
    let got: Vec<u32> = finish_async(ctx, enc, &out, 2 * rows * k)
        .await
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let want = want(&x, cols, k);
    for r in 0..rows {
        let s = 2 * r * k;
        if let Some(i) = (0..k).find(|i| got[s + 2 * i..s + 2 * i + 2] != want[s + 2 * i..][..2]) {
            let w = |v: &[u32]| (v[1], f32::from_bits(v[0]), v[0]);
            panic!(
                "top_k {rows}x{cols} k {k} row {r} ({:?}): slot {i} (index, value, bits) is \
                 {:?}, want {:?}",
                fills[r % fills.len()],
                w(&got[s + 2 * i..]),
                w(&want[s + 2 * i..])
            );
        }
    }
}

#[gpu_test]
async fn top_k_matches_cpu() {
    let ctx = ctx_async().await;
    let mut rng = Rng::new(71);
    use Fill::*;
    let all = [Random, Ties, Specials, AllNan, AllNegInf];
    for &cols in &[1, 7, 300, 4095, 4096, 4097, 9000] {
        for &k in &[1, 2, 40, 255, 256] {
            case(&ctx, &mut rng, all.len(), cols, k, &all).await;
        }
    }
    // LM-head widths (Qwen's 151,936; Llama 3's 128,256) with the sampler's usual k.
    for &(cols, k) in &[(151_936, 40), (151_936, 104), (128_256, 1), (128_256, 256)] {
        case(&ctx, &mut rng, 2, cols, k, &[Random, Ties]).await;
    }
    case(&ctx, &mut rng, 1, 151_936, 64, &[Specials]).await;
    // Many rows (the 2-D grid of the first pass is not needed here, but rows × chunks is > 1).
    case(&ctx, &mut rng, 70, 50, 7, &[Random, Ties, Specials]).await;
}

/// k = 0 and k above ops::TOPK_MAX are refused, as is a scratch buffer too small.
#[gpu_test]
async fn top_k_refuses_bad_arguments() {
    let ctx = ctx_async().await;
    let x = upload_f32(&ctx, &[1.0; 64]);
    let out = poisoned(&ctx, 2 * 300);
    let scratch = poisoned(&ctx, ops::top_k_scratch(1, 64, ops::TOPK_MAX + 1));
    for k in [0, ops::TOPK_MAX + 1] {
        let mut enc = encoder(&ctx);
        let e = ops::top_k(&ctx, &mut enc, &x, 1, 64, k, &scratch, &out).unwrap_err();
        assert_eq!(e.code(), "gpu_validation", "k {k}");
    }
    let small = ctx.storage("small", 16);
    let mut enc = encoder(&ctx);
    let e = ops::top_k(&ctx, &mut enc, &x, 1, 64, 8, &small, &out).unwrap_err();
    assert_eq!(e.code(), "gpu_validation");
}

//! The flash-style prefill attention (`backend::gpu::attn_prefill`, attention_prefill.wgsl)
//! against an f64 reference of `backend::cpu::ops::attend`'s math, over the KV cache in both
//! storages (f16 pairs: the reference reads the same rounded K/V; f32): causal, GQA (groups 1 to
//! 8), sliding windows, a chunk after cached rows (pos0 > 0), head dims 7 to 256 with
//! head_dim ≠ head_dim_v, token counts across the 32-row tile; poisoned outputs with sentinels
//! (tests/gpu_util). Also checks that `attn::attention` routes prefill here.

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::attn_prefill::{attention_prefill, PREFILL_MIN_TOKENS};
use ternlm::backend::gpu::{attn, GpuContext, GpuOptions};
use ternlm::backend::AttnParams;

/// f32 dot products and sums and GPU `exp` against f64 (as tests/gpu_ops_attn.rs).
const ATTN_BOUND: f64 = 1e-9;

/// One case on `ctx`: the prefill kernel directly, or `attn::attention` when `routed`.
#[allow(clippy::too_many_arguments)]
async fn case(
    ctx: &GpuContext,
    rng: &mut Rng,
    tokens: usize,
    pos0: usize,
    (n_head, n_head_kv): (usize, usize),
    (head_dim, head_dim_v): (usize, usize),
    window: Option<usize>,
    routed: bool,
) -> f64 {
    let p = AttnParams {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window,
        batched: true,
    };
    let name = format!(
        "t{tokens} pos0 {pos0} heads {n_head}/{n_head_kv} dims {head_dim}/{head_dim_v} \
         window {window:?} kv_f16 {} routed {routed}",
        ctx.kv_f16
    );
    let n_pos = pos0 + tokens;
    let (k_cols, v_cols) = (n_head_kv * head_dim, n_head_kv * head_dim_v);
    // Capacity past the valid rows: those rows hold garbage that must never be read.
    let cap = n_pos + 3;
    let q = rng.values(tokens * n_head * head_dim);
    let k: Vec<f32> = (0..cap * k_cols).map(|_| rng.unit()).collect();
    let v: Vec<f32> = (0..cap * v_cols).map(|_| rng.value()).collect();
    let ks: Vec<f32> = k.iter().map(|&x| kv_round(ctx, x)).collect();
    let vs: Vec<f32> = v.iter().map(|&x| kv_round(ctx, x)).collect();
    let mut kw = kv_encode(ctx, &k, k_cols);
    let mut vw = kv_encode(ctx, &v, v_cols);
    // Rows past n_pos: NaN, so reading one fails the NMSE check.
    let (krw, vrw) = (kw.len() / cap, vw.len() / cap);
    kw[n_pos * krw..].fill(0x7fc0_0001);
    vw[n_pos * vrw..].fill(0x7fc0_0001);
    let kb = ctx.storage_init("k", bytemuck::cast_slice(&kw));
    let vb = ctx.storage_init("v", bytemuck::cast_slice(&vw));
    let out_n = tokens * n_head * head_dim_v;
    let o = poisoned(ctx, out_n);
    let qb = upload_f32(ctx, &q);
    let mut enc = encoder(ctx);
    if routed {
        let scratch_n = attn::attention_splits(tokens, pos0, &p).2.max(1);
        let scratch = ctx.storage("scratch", (scratch_n * 4) as u64);
        attn::attention(ctx, &mut enc, &qb, &kb, &vb, &o, &scratch, tokens, pos0, &p).unwrap();
    } else {
        attention_prefill(ctx, &mut enc, &qb, &kb, &vb, &o, tokens, pos0, &p).unwrap();
    }
    let got = finish_async(ctx, enc, &o, out_n).await;
    let want = attention_ref(&q, &ks, &vs, tokens, pos0, &p);
    let e = nmse(&name, &got, &want);
    assert!(e <= ATTN_BOUND, "{name}: NMSE {e:e} > {ATTN_BOUND:e}");
    e
}

#[gpu_test]
async fn attention_prefill_matches_reference() {
    for kv_f32 in [false, true] {
        let ctx = ctx_with_async(&GpuOptions {
            kv_f32,
            ..Default::default()
        })
        .await;
        let mut rng = Rng::new(91);
        let mut worst = 0f64;
        // (tokens, pos0, heads, dims, window)
        #[allow(clippy::type_complexity)]
        let cases: &[(usize, usize, (usize, usize), (usize, usize), Option<usize>)] = &[
            (1, 0, (4, 1), (64, 64), None),
            (5, 3, (2, 2), (24, 24), Some(5)),
            (33, 0, (32, 8), (64, 64), None),
            (70, 0, (8, 2), (64, 64), Some(5)),
            (64, 40, (4, 4), (80, 80), None),
            (37, 100, (8, 1), (128, 128), Some(40)),
            (20, 130, (2, 1), (256, 256), Some(100)),
            (45, 7, (6, 3), (20, 36), None),
            (17, 2, (3, 3), (7, 9), None),
            (100, 0, (16, 2), (32, 48), Some(33)),
        ];
        for &(tokens, pos0, heads, dims, window) in cases {
            let e = case(&ctx, &mut rng, tokens, pos0, heads, dims, window, false).await;
            worst = worst.max(e);
        }
        // attn::attention: split-K below the threshold, this kernel from it on.
        for tokens in [PREFILL_MIN_TOKENS - 1, PREFILL_MIN_TOKENS, 50] {
            let e = case(&ctx, &mut rng, tokens, 9, (8, 2), (64, 64), None, true).await;
            worst = worst.max(e);
        }
        eprintln!("kv_f16 {}: worst NMSE {worst:.3e}", ctx.kv_f16);
    }
}

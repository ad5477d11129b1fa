//! RoPE and attention kernels (`backend::gpu::attn`) against the CPU: RoPE against
//! `backend::cpu::ops::rope`, attention against a plain f64 reference of the same math
//! (`backend::cpu::ops::attend` in f64, without ggml's rounding). Fresh random inputs,
//! poisoned outputs, sentinels behind them, NMSE bounds (tests/gpu_util).

mod gpu_util;

use gpu_util::*;
use ternlm::backend::cpu::ops as cpu;
use ternlm::backend::gpu::{attn, GpuContext, GpuOptions};
use ternlm::backend::{AttnParams, RopeFreqs, RopeParams};
use ternlm::model::arch::RopeStyle;

/// RoPE rotates by the CPU's own cos/sin with the same FMAs: near exact.
const ROPE_BOUND: f64 = 1e-7;
/// Attention against f64: f32 dot products and sums, GPU `exp` (lavapipe's worst case is
/// about 7e-13; the op-harness bound for f32 is 1e-7).
const ATTN_BOUND: f64 = 1e-9;

/// The KV cache in f16 against the CPU's values rounded to f16: the GPU rotates to within an
/// ulp of the CPU, which may round to the other f16 neighbour (2^-11 relative).
const KV_F16_BOUND: f64 = 1e-7;

/// A device storing the KV cache in f32 (the default context stores f16 pairs).
fn kv_f32() -> GpuOptions {
    GpuOptions {
        kv_f32: true,
        ..GpuOptions::default()
    }
}

/// Cache rows of `cols` elements from the words read back (f16 pairs or f32); the pad half
/// of an odd f16 row must be 0.
fn kv_decode(ctx: &GpuContext, words: &[f32], cols: usize) -> Vec<f32> {
    if !ctx.kv_f16 {
        return words.to_vec();
    }
    let mut out = Vec::new();
    for row in words.chunks_exact(cols.div_ceil(2)) {
        let halves: Vec<u16> = row
            .iter()
            .flat_map(|w| [w.to_bits() as u16, (w.to_bits() >> 16) as u16])
            .collect();
        if cols % 2 == 1 {
            assert_eq!(halves[cols], 0, "pad half of an odd row");
        }
        out.extend(
            halves[..cols]
                .iter()
                .map(|&h| half::f16::from_bits(h).to_f32()),
        );
    }
    out
}

/// `v` followed by [`GUARD`] sentinel words (an in-place output that [`finish`] checks).
fn guarded(ctx: &GpuContext, v: &[f32]) -> wgpu::Buffer {
    let mut w: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    w.extend(std::iter::repeat_n(SENTINEL, GUARD));
    ctx.storage_init("x", bytemuck::cast_slice(&w))
}

/// One RoPE case: shape, position and frequencies.
#[derive(Clone, Copy)]
struct RopeCase {
    style: RopeStyle,
    tokens: usize,
    pos0: usize,
    heads: usize,
    hd: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    custom_factors: bool,
    attn_factor: f32,
}

impl RopeCase {
    fn new(
        style: RopeStyle,
        tokens: usize,
        pos0: usize,
        heads: usize,
        hd: usize,
        n_rot: usize,
    ) -> Self {
        RopeCase {
            style,
            tokens,
            pos0,
            heads,
            hd,
            n_rot,
            base: 10_000.0,
            freq_scale: 1.0,
            custom_factors: false,
            attn_factor: 1.0,
        }
    }
    fn base(self, base: f32) -> Self {
        RopeCase { base, ..self }
    }
    fn scaled(self, freq_scale: f32, custom_factors: bool, attn_factor: f32) -> Self {
        RopeCase {
            freq_scale,
            custom_factors,
            attn_factor,
            ..self
        }
    }
}

#[gpu_test]
async fn rope_matches_cpu() {
    let ctx = ctx_async().await;
    let ctx32 = ctx_with_async(&kv_f32()).await;
    let mut rng = Rng::new(7);
    let cases = [
        RopeCase::new(RopeStyle::Norm, 3, 0, 4, 64, 64),
        RopeCase::new(RopeStyle::Neox, 2, 4990, 3, 128, 128).base(1e6),
        // Partial rotary, linear scaling, per-pair factors, attn_factor.
        RopeCase::new(RopeStyle::Neox, 5, 1000, 3, 80, 32).scaled(0.25, true, 1.1),
        RopeCase::new(RopeStyle::Norm, 7, 4093, 2, 96, 48)
            .base(5e5)
            .scaled(1.0, true, 1.0),
        RopeCase::new(RopeStyle::Neox, 33, 0, 5, 256, 64).scaled(0.5, false, 0.9),
        RopeCase::new(RopeStyle::Norm, 1, 1, 1, 24, 24),
    ];
    for c in cases {
        let RopeCase {
            style,
            tokens,
            pos0,
            heads,
            hd,
            n_rot,
            ..
        } = c;
        let case = format!("rope {style:?} t{tokens} pos0 {pos0} h{heads} hd{hd} rot{n_rot}");
        let factors = (0..n_rot / 2)
            .map(|_| {
                if c.custom_factors {
                    1.0 + 3.0 * rng.unit().abs()
                } else {
                    1.0
                }
            })
            .collect();
        let (freq_scale, attn_factor) = (c.freq_scale, c.attn_factor);
        let freqs = RopeFreqs {
            theta_scale: c.base.powf(-2.0 / n_rot as f32),
            freq_scale,
            factors,
        };
        let cols = heads * hd;
        let x = rng.values(tokens * cols);

        let mut want = x.clone();
        let rp = RopeParams {
            style,
            head_dim: hd,
            n_rot,
            freqs: &freqs,
            attn_factor,
        };
        cpu::rope(&mut want, cols, pos0, &rp);

        // The table covers exactly the positions used.
        let table = attn::rope_table(&ctx, &freqs, attn_factor, pos0 + tokens);
        let buf = guarded(&ctx, &x);
        let mut enc = encoder(&ctx);
        attn::rope(
            &ctx, &mut enc, &buf, &table, tokens, pos0, heads, hd, n_rot, style,
        )
        .unwrap();
        let got = finish_async(&ctx, enc, &buf, x.len()).await;
        let e = nmse(&case, &got, &want);
        let exact = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        eprintln!("{case}: NMSE {e:e}, {exact}/{} bit-exact", got.len());
        assert!(e <= ROPE_BOUND, "{case}: NMSE {e:e} > {ROPE_BOUND:e}");

        // rope_kv: the same rotation of q in place and of k into the cache rows at pos0..,
        // v copied, in each KV storage (f16 pairs rounded as the CPU rounds, or f32); cache
        // words around them stay poisoned. Odd row lengths pad their last word with 0.
        for kctx in [&ctx, &ctx32] {
            let case = format!("{case} kv_f16 {}", kctx.kv_f16);
            let (kvh, hdv) = (heads.div_ceil(2), 20 + hd % 2);
            let (k_cols, v_cols) = (kvh * hd, kvh * hdv);
            let (k, v) = (rng.values(tokens * k_cols), rng.values(tokens * v_cols));
            let mut k_want = k.clone();
            cpu::rope(&mut k_want, k_cols, pos0, &rp);
            let cap = pos0 + tokens + 2;
            let (kw, vw) = (
                attn::kv_row_words(kctx, k_cols),
                attn::kv_row_words(kctx, v_cols),
            );
            let table = attn::rope_table(kctx, &freqs, attn_factor, pos0 + tokens);
            let (qb, kc, vc) = (
                guarded(kctx, &x),
                poisoned(kctx, cap * kw),
                poisoned(kctx, cap * vw),
            );
            let dest = attn::KvDest { k: &kc, v: &vc };
            let (kb, vb) = (upload_f32(kctx, &k), upload_f32(kctx, &v));
            let mut enc = encoder(kctx);
            attn::rope_kv(
                kctx,
                &mut enc,
                (&qb, &kb, &vb),
                &table,
                dest,
                tokens,
                pos0,
                (heads, k_cols, v_cols),
                hd,
                n_rot,
                style,
            )
            .unwrap();
            let q_got = finish_async(kctx, enc, &qb, x.len()).await;
            check(&format!("{case} rope_kv q"), &q_got, &want, ROPE_BOUND);
            let rows = pos0..pos0 + tokens;
            let kc_got = finish_async(kctx, encoder(kctx), &kc, cap * kw).await;
            let vc_got = finish_async(kctx, encoder(kctx), &vc, cap * vw).await;
            let k_got = kv_decode(kctx, &kc_got[rows.start * kw..rows.end * kw], k_cols);
            let v_got = kv_decode(kctx, &vc_got[rows.start * vw..rows.end * vw], v_cols);
            // The CPU's rotation, rounded as the storage rounds.
            let k_want: Vec<f32> = k_want.iter().map(|&x| kv_round(kctx, x)).collect();
            let bound = if kctx.kv_f16 {
                KV_F16_BOUND
            } else {
                ROPE_BOUND
            };
            check(&format!("{case} rope_kv k"), &k_got, &k_want, bound);
            let v_want: Vec<f32> = v.iter().map(|&x| kv_round(kctx, x)).collect();
            assert_eq!(v_got, v_want, "{case}: v rows");
            let untouched = |all: &[f32], w: usize| {
                all[..rows.start * w]
                    .iter()
                    .chain(&all[rows.end * w..])
                    .all(|x| x.to_bits() == POISON)
            };
            assert!(
                untouched(&kc_got, kw) && untouched(&vc_got, vw),
                "{case}: other rows"
            );

            // store_kv: rows already rotated, written as they are.
            let (kc2, vc2) = (poisoned(kctx, cap * kw), poisoned(kctx, cap * vw));
            let mut enc = encoder(kctx);
            let dest = attn::KvDest { k: &kc2, v: &vc2 };
            attn::store_kv(
                kctx,
                &mut enc,
                (&kb, &vb),
                dest,
                tokens,
                pos0,
                (k_cols, v_cols),
            )
            .unwrap();
            let kc2_got = finish_async(kctx, enc, &kc2, cap * kw).await;
            let vc2_got = finish_async(kctx, encoder(kctx), &vc2, cap * vw).await;
            let k_got = kv_decode(kctx, &kc2_got[rows.start * kw..rows.end * kw], k_cols);
            let k_want: Vec<f32> = k.iter().map(|&x| kv_round(kctx, x)).collect();
            assert_eq!(k_got, k_want, "{case}: store_kv k rows");
            let v_got = kv_decode(kctx, &vc2_got[rows.start * vw..rows.end * vw], v_cols);
            assert_eq!(v_got, v_want, "{case}: store_kv v rows");
            assert!(
                untouched(&kc2_got, kw) && untouched(&vc2_got, vw),
                "{case}: store_kv other rows"
            );
        }
    }

    // A table too short for the positions is an error, not an out-of-bounds read.
    let freqs = RopeFreqs {
        theta_scale: 0.5,
        freq_scale: 1.0,
        factors: vec![1.0; 4],
    };
    let table = attn::rope_table(&ctx, &freqs, 1.0, 10);
    let buf = ctx.storage("x", 4 * 8 * 4);
    let mut enc = encoder(&ctx);
    assert!(attn::rope(&ctx, &mut enc, &buf, &table, 4, 7, 1, 8, 8, RopeStyle::Norm).is_err());
}

/// The f16 KV storage rounds every f32 to nearest, ties to even, as the CPU cache (the `half`
/// crate) does, bit for bit: ties, subnormals, the overflow edge, infinities, NaN and random
/// values of every exponent, written by `attn::store_kv` (kv.wgsl `f16_bits`).
#[gpu_test]
async fn kv_f16_rounds_as_cpu() {
    let ctx = ctx_async().await;
    assert!(ctx.kv_f16, "the default KV storage is f16");
    let p = |e: i32| 2f32.powi(e);
    let mut vals = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        p(-14),
        p(-14) - p(-26),
        p(-24),
        p(-25),
        p(-25) * 1.0000001,
        3.0 * p(-25),
        5.0 * p(-25),
        p(-26),
        f32::MIN_POSITIVE,
        1.0 + p(-11),
        1.0 + 3.0 * p(-11),
        1.0 + p(-11) + p(-20),
        -(2.0 + 3.0 * p(-10)),
    ];
    let mut rng = Rng::new(11);
    while vals.len() < 64 * 64 {
        let m = rng.values(1)[0];
        let e = (rng.values(1)[0].abs() * 30.0) as i32 - 28;
        vals.push(m * p(e));
    }
    let cols = 64;
    let rows = vals.len() / cols;
    let words = attn::kv_row_words(&ctx, cols);
    let (kc, vc) = (poisoned(&ctx, rows * words), poisoned(&ctx, rows * words));
    let src = upload_f32(&ctx, &vals);
    let mut enc = encoder(&ctx);
    let dest = attn::KvDest { k: &kc, v: &vc };
    attn::store_kv(&ctx, &mut enc, (&src, &src), dest, rows, 0, (cols, cols)).unwrap();
    let got = finish_async(&ctx, enc, &kc, rows * words).await;
    let halves = got.iter().flat_map(|w| {
        let b = w.to_bits();
        [b as u16, (b >> 16) as u16]
    });
    for (i, (g, &x)) in halves.zip(&vals).enumerate() {
        let want = half::f16::from_f32(x);
        if want.is_nan() {
            assert!(
                half::f16::from_bits(g).is_nan(),
                "value {i} ({x:e}): {g:#06x}, not NaN"
            );
        } else {
            assert_eq!(
                g,
                want.to_bits(),
                "value {i} ({x:e}): {g:#06x}, want {:#06x}",
                want.to_bits()
            );
        }
    }
}

#[gpu_test]
async fn attention_matches_reference() {
    // Both KV storages, with the adapter's subgroups (shuffle reductions where the smallest
    // subgroup holds their lanes) and without (the browser's workgroup-memory reductions).
    let mut ctxs = Vec::new();
    for &no_subgroups in NO_SUBGROUPS {
        for kv_f32 in [false, true] {
            let opts = GpuOptions {
                kv_f32,
                no_subgroups,
                ..GpuOptions::default()
            };
            ctxs.push(ctx_with_async(&opts).await);
        }
    }
    eprintln!(
        "attention: subgroups {} (smallest {})",
        ctxs[0].subgroups, ctxs[0].subgroup_min
    );
    let ctx = &ctxs[0];
    let mut rng = Rng::new(11);
    // (tokens, pos0, n_head, n_head_kv, head_dim, head_dim_v, window, scale)
    #[allow(clippy::type_complexity)]
    let cases: &[(usize, usize, usize, usize, usize, usize, Option<usize>, f32)] = &[
        (1, 0, 8, 2, 64, 64, None, 0.125),
        (1, 1, 4, 4, 80, 80, None, 0.125),
        (1, 37, 8, 2, 256, 256, None, 0.125),
        (1, 700, 4, 1, 64, 64, None, 0.125),
        (1, 700, 4, 4, 80, 80, Some(5), 0.125),
        (5, 3, 4, 1, 24, 24, Some(5), 0.125),
        (5, 3, 2, 2, 24, 24, None, 0.125),
        (33, 0, 4, 4, 80, 80, None, 1.0 / 80f32.sqrt()),
        (33, 0, 8, 2, 64, 64, Some(5), 0.125),
        (3, 100, 4, 2, 64, 32, Some(40), 0.125),
        (2, 130, 2, 1, 256, 256, Some(100), 0.125),
        (1, 3000, 2, 1, 128, 128, None, 0.125),
        (4, 61, 6, 3, 20, 36, None, 0.125),
        // Odd rows: f16 rows end in a padded word.
        (3, 20, 3, 3, 7, 9, None, 0.3),
        (2, 5, 2, 1, 5, 3, Some(4), 0.5),
        // Decode (attention.wgsl): one workgroup per (token, KV head, split) serves the group's
        // query heads. Group sizes 1-8 in one workgroup, 9 and 12 in chunks of ≤ 8 (the last
        // one short for 9), the real shapes (SmolLM2 9/3 × 64, BitNet 20/5 × 128, gemma3
        // 4/1 × 256), contexts 1-5000 on both sides of the 64-key split and of the 32-key pass.
        (1, 0, 3, 3, 64, 64, None, 0.125),
        (1, 63, 9, 3, 64, 64, None, 0.125),
        (1, 64, 9, 3, 64, 64, None, 0.125),
        (1, 47, 20, 5, 128, 128, None, 0.088),
        (1, 2047, 20, 5, 128, 128, None, 0.088),
        (1, 4095, 4, 1, 256, 256, Some(1024), 0.0625),
        (1, 40, 8, 8, 12, 12, None, 0.3),
        (1, 97, 6, 3, 128, 128, Some(33), 0.088),
        (1, 65, 5, 1, 96, 96, None, 0.1),
        (1, 129, 12, 2, 80, 80, None, 0.11),
        (2, 31, 7, 1, 33, 33, None, 0.17),
        (3, 200, 16, 2, 100, 100, None, 0.1),
        (1, 90, 9, 1, 64, 64, None, 0.125),
        (1, 300, 24, 2, 32, 32, Some(200), 0.18),
        // gq 8 × head_dim 256 leaves 64-key chunks: 79-key splits take two (online softmax
        // across chunks); 15 tokens × 32 KV heads need no split and walk 715 keys in 512s.
        (1, 5000, 8, 1, 256, 256, None, 0.0625),
        (15, 700, 32, 32, 16, 16, None, 0.25),
        (1, 1, 2, 1, 7, 256, None, 0.4),
    ];
    let mut worst = 0f64;
    for &(tokens, pos0, n_head, n_head_kv, hd, hdv, window, scale) in cases {
        let case = format!(
            "attention t{tokens} pos0 {pos0} heads {n_head}/{n_head_kv} hd {hd}/{hdv} window {window:?}"
        );
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim: hd,
            head_dim_v: hdv,
            scale,
            window,
            batched: tokens > 1,
        };
        let n_kv = pos0 + tokens;
        // Cache rows past the valid ones are NaN: reading one poisons the output.
        let capacity = n_kv + 3;
        let (k_row, v_row) = (n_head_kv * hd, n_head_kv * hdv);
        let q = rng.values(tokens * n_head * hd);
        let mut k = rng.values(capacity * k_row);
        let mut v = rng.values(capacity * v_row);
        k[n_kv * k_row..].fill(f32::NAN);
        v[n_kv * v_row..].fill(f32::NAN);
        // So are the rows no query's window reaches.
        let lo = window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
        k[..lo * k_row].fill(f32::NAN);
        v[..lo * v_row].fill(f32::NAN);

        // Each KV storage against the reference on the values it stores (f16: rounded).
        // (The reference once per storage: the contexts come f16, f32, f16, f32.)
        let mut wants: Vec<Vec<f32>> = Vec::new();
        for (ci, kctx) in ctxs.iter().enumerate() {
            let case = format!("{case} kv_f16 {} sg {}", kctx.kv_f16, kctx.subgroups);
            let (k, v): (Vec<f32>, Vec<f32>) = (
                k.iter().map(|&x| kv_round(kctx, x)).collect(),
                v.iter().map(|&x| kv_round(kctx, x)).collect(),
            );
            if wants.len() <= ci % 2 {
                wants.push(attention_ref(&q, &k, &v, tokens, pos0, &p));
            }
            let want = &wants[ci % 2];
            let n_out = tokens * n_head * hdv;
            let out = poisoned(kctx, n_out);
            let mut enc = encoder(kctx);
            let (qb, kb, vb) = (
                upload_f32(kctx, &q),
                kctx.storage_init("k", bytemuck::cast_slice(&kv_encode(kctx, &k, k_row))),
                kctx.storage_init("v", bytemuck::cast_slice(&kv_encode(kctx, &v, v_row))),
            );
            // Split-K partials go to a poisoned scratch (every split must write its slot).
            let (n_splits, _, scratch_len) = attn::attention_splits(tokens, pos0, &p);
            let scratch = poisoned(kctx, scratch_len.max(1));
            attn::attention(
                kctx, &mut enc, &qb, &kb, &vb, &out, &scratch, tokens, pos0, &p,
            )
            .unwrap();
            let got = finish_async(kctx, enc, &out, n_out).await;
            let e = nmse(&case, &got, want);
            eprintln!("{case} ({n_splits} splits): NMSE {e:e}");
            worst = worst.max(e);
            assert!(e <= ATTN_BOUND, "{case}: NMSE {e:e} > {ATTN_BOUND:e}");
            arrivals_reset(kctx, &case).await;
        }
    }
    eprintln!("attention: worst NMSE {worst:e}");

    // Head dims past the kernel's limit are refused.
    let p = AttnParams {
        n_head: 1,
        n_head_kv: 1,
        head_dim: 512,
        head_dim_v: 512,
        scale: 1.0,
        window: None,
        batched: false,
    };
    let b = ctx.storage("b", 4096);
    let mut enc = encoder(ctx);
    assert!(attn::attention(ctx, &mut enc, &b, &b, &b, &b, &b, 1, 0, &p).is_err());
}

/// The shape of one case of the fused decode attention (RoPE and window: its RopeParams and
/// AttnParams).
#[derive(Clone, Copy)]
struct FusedCase {
    tokens: usize,
    pos0: usize,
    n_head: usize,
    n_head_kv: usize,
    hd: usize,
    hdv: usize,
    q_scale: Option<f32>,
}

/// After a split attention merged in place (attention.wgsl `MERGE_LAST`), every arrival counter
/// is back at 0 for the next dispatch.
async fn arrivals_reset(ctx: &GpuContext, case: &str) {
    let a = ctx.arrivals(1);
    let n = (a.size() / 4) as usize;
    let got = ctx.read_f32(None, &a, 0, n).await.unwrap();
    assert!(
        got.iter().all(|x| x.to_bits() == 0),
        "{case}: arrival counters left set"
    );
}

/// `attn::attention_rope_kv` (RoPE of q and k, the KV write and attention in the decode
/// attention dispatch) against the CPU sequence it replaces: `cpu::rope` of q and k, q times
/// the query scale, k and v stored (rounded as the device's KV storage rounds), then attention
/// in f64 over the cache. The cache rows of the chunk start poisoned (a NaN the kernel must
/// not read: it takes the chunk's keys from k and v), and after the dispatch hold the rotated
/// k and the v rows; every other cache word is unchanged, the sentinels behind the caches and
/// the output intact, q, k and v untouched.
#[gpu_test]
async fn attention_rope_kv_matches_cpu() {
    let mut ctxs = Vec::new();
    for &no_subgroups in NO_SUBGROUPS {
        for kv_f32 in [false, true] {
            let opts = GpuOptions {
                kv_f32,
                no_subgroups,
                ..GpuOptions::default()
            };
            ctxs.push(ctx_with_async(&opts).await);
        }
    }
    let mut rng = Rng::new(23);
    use RopeStyle::{Neox, Norm};
    #[rustfmt::skip]
    let cases = [
        // (tokens, pos0, n_head, n_head_kv, hd, hdv, n_rot, style, window, q_scale)
        // The first token (its own key only); the real shapes (SmolLM2 9/3 × 64 Neox around
        // the 64-key split, BitNet 20/5 × 128 Norm over many splits, gemma3 4/1 × 256 with its
        // query scale and window); group sizes 1-9 (9: two chunks of heads, only the first
        // writes); partial rotation; windows down to the new key alone.
        (1, 0, 8, 2, 64, 64, 64, Norm, None, None),
        (1, 63, 9, 3, 64, 64, 64, Neox, None, None),
        (1, 64, 9, 3, 64, 64, 64, Neox, None, None),
        (1, 2047, 20, 5, 128, 128, 128, Norm, None, None),
        (1, 4095, 4, 1, 256, 256, 256, Neox, Some(1024), Some(0.0625)),
        (1, 700, 4, 4, 80, 80, 32, Neox, Some(5), None),
        (1, 97, 6, 3, 128, 128, 64, Norm, Some(33), None),
        (1, 40, 8, 8, 12, 12, 12, Norm, None, Some(0.3)),
        (1, 65, 5, 1, 96, 96, 96, Norm, None, None),
        (1, 129, 12, 2, 80, 80, 80, Neox, None, Some(1.5)),
        (1, 90, 9, 1, 64, 64, 32, Norm, None, None),
        (1, 300, 16, 2, 32, 32, 32, Neox, Some(200), None),
        (1, 5000, 8, 1, 256, 256, 128, Norm, None, None),
        (1, 1000, 2, 1, 64, 64, 64, Neox, Some(1), None),
        (1, 10, 2, 1, 16, 16, 0, Norm, None, None),
        // Odd head dims: f16 cache words that end in the next head or in a row's pad.
        (1, 20, 3, 3, 7, 9, 6, Norm, None, None),
        (1, 5, 4, 2, 5, 3, 4, Neox, Some(4), None),
        (1, 31, 7, 1, 33, 33, 32, Neox, None, None),
        (1, 1, 2, 1, 6, 256, 6, Neox, None, None),
        // A few query rows: each writes its own row and reads the chunk's earlier ones.
        (3, 100, 4, 2, 64, 32, 64, Norm, Some(40), None),
        (2, 0, 2, 2, 24, 24, 24, Neox, None, Some(0.5)),
        (15, 700, 32, 32, 16, 16, 16, Norm, None, None),
    ];
    let (mut worst, mut worst_k) = (0f64, 0f64);
    for (ci, &(tokens, pos0, n_head, n_head_kv, hd, hdv, n_rot, style, window, q_scale)) in
        cases.iter().enumerate()
    {
        let c = FusedCase {
            tokens,
            pos0,
            n_head,
            n_head_kv,
            hd,
            hdv,
            q_scale,
        };
        let case = format!(
            "attention_rope_kv t{tokens} pos0 {pos0} heads {n_head}/{n_head_kv} hd {hd}/{hdv} \
             rot {n_rot} {style:?} window {window:?} q_scale {q_scale:?}"
        );
        // Per-pair factors and an attn_factor on some cases, as llama3 / YaRN scaling give.
        let freqs = RopeFreqs {
            theta_scale: [1e4f32, 5e5, 1e6][ci % 3].powf(-2.0 / n_rot.max(2) as f32),
            freq_scale: if ci % 4 == 1 { 0.5 } else { 1.0 },
            factors: (0..n_rot / 2)
                .map(|_| {
                    if ci % 3 == 0 {
                        1.0 + 3.0 * rng.unit().abs()
                    } else {
                        1.0
                    }
                })
                .collect(),
        };
        let attn_factor = if ci % 5 == 2 { 1.1 } else { 1.0 };
        let rp = RopeParams {
            style,
            head_dim: hd,
            n_rot,
            freqs: &freqs,
            attn_factor,
        };
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim: hd,
            head_dim_v: hdv,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
            batched: false,
        };
        for kctx in &ctxs {
            let case = format!("{case} kv_f16 {} sg {}", kctx.kv_f16, kctx.subgroups);
            let e = fused_case(kctx, &mut rng, &c, &rp, &p, &case).await;
            worst = worst.max(e.0);
            worst_k = worst_k.max(e.1);
        }
    }
    eprintln!("attention_rope_kv: worst NMSE {worst:e} (k rows {worst_k:e})");

    // Prefill chunks and odd rotations are refused.
    let ctx = &ctxs[0];
    let b = ctx.storage("b", 4096);
    let p = AttnParams {
        n_head: 1,
        n_head_kv: 1,
        head_dim: 8,
        head_dim_v: 8,
        scale: 1.0,
        window: None,
        batched: false,
    };
    for (tokens, n_rot) in [(16, 8), (1, 10), (1, 3)] {
        let mut enc = encoder(ctx);
        let dest = attn::KvDest { k: &b, v: &b };
        let rot = (n_rot, RopeStyle::Norm, 1.0);
        let r = attn::attention_rope_kv(
            ctx,
            &mut enc,
            (&b, &b, &b),
            &b,
            rot,
            dest,
            &b,
            &b,
            tokens,
            0,
            &p,
        );
        assert!(r.is_err(), "tokens {tokens} n_rot {n_rot}");
    }
}

/// One [`attention_rope_kv_matches_cpu`] case on one device: (NMSE of the output, of the K rows).
async fn fused_case(
    ctx: &GpuContext,
    rng: &mut Rng,
    c: &FusedCase,
    rp: &RopeParams<'_>,
    p: &AttnParams,
    case: &str,
) -> (f64, f64) {
    let FusedCase {
        tokens,
        pos0,
        n_head,
        n_head_kv,
        hd,
        hdv,
        q_scale,
        ..
    } = *c;
    let (q_cols, k_cols, v_cols) = (n_head * hd, n_head_kv * hd, n_head_kv * hdv);
    let n_kv = pos0 + tokens;
    let cap = n_kv + 2;
    let q = rng.values(tokens * q_cols);
    let (k, v) = (rng.values(tokens * k_cols), rng.values(tokens * v_cols));
    // The cached rows before the chunk, as the storage holds them; rows no window reaches
    // are NaN.
    let lo = p.window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
    let mut k_cache: Vec<f32> = rng.values(pos0 * k_cols);
    let mut v_cache: Vec<f32> = rng.values(pos0 * v_cols);
    k_cache[..lo * k_cols].fill(f32::NAN);
    v_cache[..lo * v_cols].fill(f32::NAN);
    k_cache.iter_mut().for_each(|x| *x = kv_round(ctx, *x));
    v_cache.iter_mut().for_each(|x| *x = kv_round(ctx, *x));

    // The CPU sequence: rope, scale, store (rounded), attend.
    let mut q_want = q.clone();
    cpu::rope(&mut q_want, q_cols, pos0, rp);
    if let Some(s) = q_scale {
        q_want.iter_mut().for_each(|x| *x *= s);
    }
    let mut k_rot = k.clone();
    cpu::rope(&mut k_rot, k_cols, pos0, rp);
    let k_new: Vec<f32> = k_rot.iter().map(|&x| kv_round(ctx, x)).collect();
    let v_new: Vec<f32> = v.iter().map(|&x| kv_round(ctx, x)).collect();
    let k_all = [&k_cache[..], &k_new].concat();
    let v_all = [&v_cache[..], &v_new].concat();
    let want = attention_ref(&q_want, &k_all, &v_all, tokens, pos0, p);

    // The cache: rows < pos0 filled, the rest poisoned, sentinels behind.
    let (kw, vw) = (
        attn::kv_row_words(ctx, k_cols),
        attn::kv_row_words(ctx, v_cols),
    );
    let cache_words = |vals: &[f32], cols: usize, w: usize| -> Vec<u32> {
        let mut words = kv_encode(ctx, vals, cols);
        words.resize(cap * w, POISON);
        words.extend(std::iter::repeat_n(SENTINEL, GUARD));
        words
    };
    let (kc0, vc0) = (
        cache_words(&k_cache, k_cols, kw),
        cache_words(&v_cache, v_cols, vw),
    );
    let kc = ctx.storage_init("kc", bytemuck::cast_slice(&kc0));
    let vc = ctx.storage_init("vc", bytemuck::cast_slice(&vc0));
    let (qb, kb, vb) = (guarded(ctx, &q), guarded(ctx, &k), guarded(ctx, &v));
    let table = attn::rope_table(ctx, rp.freqs, rp.attn_factor, n_kv);
    let n_out = tokens * n_head * hdv;
    let out = poisoned(ctx, n_out);
    let (n_splits, _, scratch_len) = attn::attention_splits(tokens, pos0, p);
    let scratch = poisoned(ctx, scratch_len.max(1));
    let mut enc = encoder(ctx);
    let rot = (rp.n_rot, rp.style, q_scale.unwrap_or(1.0));
    attn::attention_rope_kv(
        ctx,
        &mut enc,
        (&qb, &kb, &vb),
        &table,
        rot,
        attn::KvDest { k: &kc, v: &vc },
        &out,
        &scratch,
        tokens,
        pos0,
        p,
    )
    .unwrap();
    let got = finish_async(ctx, enc, &out, n_out).await;
    let e = nmse(case, &got, &want);
    eprintln!("{case} ({n_splits} splits): NMSE {e:e}");
    assert!(e <= ATTN_BOUND, "{case}: NMSE {e:e} > {ATTN_BOUND:e}");
    arrivals_reset(ctx, case).await;

    // The inputs are left as they are.
    for (buf, vals, name) in [(&qb, &q, "q"), (&kb, &k, "k"), (&vb, &v, "v")] {
        let back = finish_async(ctx, encoder(ctx), buf, vals.len()).await;
        assert!(
            back.iter()
                .zip(vals)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{case}: {name} changed"
        );
    }

    // The cache: rows < pos0 and > the chunk's as they were, the chunk's rows written.
    let kc_got = finish_async(ctx, encoder(ctx), &kc, cap * kw).await;
    let vc_got = finish_async(ctx, encoder(ctx), &vc, cap * vw).await;
    for (got, init, w, name) in [(&kc_got, &kc0, kw, "k"), (&vc_got, &vc0, vw, "v")] {
        let same = |r: std::ops::Range<usize>| {
            got[r.start * w..r.end * w]
                .iter()
                .zip(&init[r.start * w..r.end * w])
                .all(|(a, &b)| a.to_bits() == b)
        };
        assert!(same(0..pos0), "{case}: {name} cache rows before the chunk");
        assert!(same(n_kv..cap), "{case}: {name} cache rows after the chunk");
    }
    let k_got = kv_decode(ctx, &kc_got[pos0 * kw..n_kv * kw], k_cols);
    let v_got = kv_decode(ctx, &vc_got[pos0 * vw..n_kv * vw], v_cols);
    let bound = if ctx.kv_f16 { KV_F16_BOUND } else { ROPE_BOUND };
    let ek = nmse(&format!("{case} k rows"), &k_got, &k_new);
    assert!(ek <= bound, "{case}: k rows NMSE {ek:e} > {bound:e}");
    assert_eq!(v_got, v_new, "{case}: v rows");
    (e, ek)
}

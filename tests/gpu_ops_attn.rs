//! RoPE and attention kernels (`backend::gpu::attn`) against the CPU: RoPE against
//! `backend::cpu::ops::rope`, attention against a plain f64 reference of the same math
//! (`backend::cpu::ops::attend` in f64, without ggml's rounding). Fresh random inputs,
//! poisoned outputs, sentinels behind them, NMSE bounds (tests/gpu_util).

mod gpu_util;

use gpu_util::*;
use ternlm::backend::cpu::ops as cpu;
use ternlm::backend::gpu::{attn, GpuContext};
use ternlm::backend::{AttnParams, RopeFreqs, RopeParams};
use ternlm::model::arch::RopeStyle;

/// RoPE rotates by the CPU's own cos/sin with the same FMAs: near exact.
const ROPE_BOUND: f64 = 1e-7;
/// Attention against f64: f32 dot products and sums, GPU `exp` (lavapipe's worst case is
/// about 7e-13; the op-harness bound for f32 is 1e-7).
const ATTN_BOUND: f64 = 1e-9;

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

#[test]
fn rope_matches_cpu() {
    let ctx = ctx();
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
        let got = finish(&ctx, enc, &buf, x.len());
        let e = nmse(&case, &got, &want);
        let exact = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        eprintln!("{case}: NMSE {e:e}, {exact}/{} bit-exact", got.len());
        assert!(e <= ROPE_BOUND, "{case}: NMSE {e:e} > {ROPE_BOUND:e}");

        // rope_kv: the same rotation of q in place and of k into the cache rows at pos0..,
        // v copied, both also gathered into `out`; cache rows around them stay poisoned.
        let (kvh, hdv) = (heads.div_ceil(2), 20);
        let (k_cols, v_cols) = (kvh * hd, kvh * hdv);
        let (k, v) = (rng.values(tokens * k_cols), rng.values(tokens * v_cols));
        let mut k_want = k.clone();
        cpu::rope(&mut k_want, k_cols, pos0, &rp);
        let cap = pos0 + tokens + 2;
        let (qb, kc, vc) = (
            guarded(&ctx, &x),
            poisoned(&ctx, cap * k_cols),
            poisoned(&ctx, cap * v_cols),
        );
        let out_k = 5;
        let out = poisoned(&ctx, out_k + tokens * (k_cols + v_cols));
        let dest = attn::KvDest {
            k: &kc,
            v: &vc,
            out: &out,
            out_k,
        };
        let (kb, vb) = (upload_f32(&ctx, &k), upload_f32(&ctx, &v));
        let mut enc = encoder(&ctx);
        attn::rope_kv(
            &ctx,
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
        let q_got = finish(&ctx, enc, &qb, x.len());
        check(&format!("{case} rope_kv q"), &q_got, &want, ROPE_BOUND);
        let (rows, enc) = (pos0..pos0 + tokens, encoder(&ctx));
        let kc_got = finish(&ctx, enc, &kc, cap * k_cols);
        check(
            &format!("{case} rope_kv k"),
            &kc_got[rows.start * k_cols..rows.end * k_cols],
            &k_want,
            ROPE_BOUND,
        );
        let vc_got = finish(&ctx, encoder(&ctx), &vc, cap * v_cols);
        assert_eq!(
            &vc_got[rows.start * v_cols..rows.end * v_cols],
            &v[..],
            "{case}: v rows"
        );
        let untouched = |all: &[f32], cols: usize| {
            all[..rows.start * cols]
                .iter()
                .chain(&all[rows.end * cols..])
                .all(|x| x.to_bits() == POISON)
        };
        assert!(
            untouched(&kc_got, k_cols) && untouched(&vc_got, v_cols),
            "{case}: other rows"
        );
        let out_got = finish(
            &ctx,
            encoder(&ctx),
            &out,
            out_k + tokens * (k_cols + v_cols),
        );
        assert!(out_got[..out_k].iter().all(|x| x.to_bits() == POISON));
        let (ok, ov) = out_got[out_k..].split_at(tokens * k_cols);
        assert_eq!(
            ok,
            &kc_got[rows.start * k_cols..rows.end * k_cols],
            "{case}: out k"
        );
        assert_eq!(ov, &v[..], "{case}: out v");
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

/// Attention in f64: query row `t` at `pos0 + t` over cache rows `lo..=pos`.
fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tokens: usize,
    pos0: usize,
    p: &AttnParams,
) -> Vec<f32> {
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let (k_row, v_row) = (p.n_head_kv * hd, p.n_head_kv * hdv);
    let mut out = vec![0f32; tokens * p.n_head * hdv];
    for t in 0..tokens {
        let pos = pos0 + t;
        let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        for h in 0..p.n_head {
            let g = h / (p.n_head / p.n_head_kv);
            let qh = &q[(t * p.n_head + h) * hd..][..hd];
            let s: Vec<f64> = (lo..=pos)
                .map(|j| {
                    let kj = &k[j * k_row + g * hd..][..hd];
                    let d: f64 = qh.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    d * p.scale as f64
                })
                .collect();
            let m = s.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            let o = &mut out[(t * p.n_head + h) * hdv..][..hdv];
            for (d, od) in o.iter_mut().enumerate() {
                let acc: f64 = e
                    .iter()
                    .enumerate()
                    .map(|(jj, &w)| w * v[(lo + jj) * v_row + g * hdv + d] as f64)
                    .sum();
                *od = (acc / sum) as f32;
            }
        }
    }
    out
}

#[test]
fn attention_matches_reference() {
    let ctx = ctx();
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

        let want = attention_ref(&q, &k, &v, tokens, pos0, &p);
        let n_out = tokens * n_head * hdv;
        let out = poisoned(&ctx, n_out);
        let mut enc = encoder(&ctx);
        let (qb, kb, vb) = (
            upload_f32(&ctx, &q),
            upload_f32(&ctx, &k),
            upload_f32(&ctx, &v),
        );
        // Split-K partials go to a poisoned scratch (every split must write its slot).
        let (n_splits, _, scratch_len) = attn::attention_splits(tokens, pos0, &p);
        let scratch = poisoned(&ctx, scratch_len.max(1));
        attn::attention(
            &ctx, &mut enc, &qb, &kb, &vb, &out, &scratch, tokens, pos0, &p,
        )
        .unwrap();
        let got = finish(&ctx, enc, &out, n_out);
        let e = nmse(&case, &got, &want);
        eprintln!("{case} ({n_splits} splits): NMSE {e:e}");
        worst = worst.max(e);
        assert!(e <= ATTN_BOUND, "{case}: NMSE {e:e} > {ATTN_BOUND:e}");
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
    let mut enc = encoder(&ctx);
    assert!(attn::attention(&ctx, &mut enc, &b, &b, &b, &b, &b, 1, 0, &p).is_err());
}

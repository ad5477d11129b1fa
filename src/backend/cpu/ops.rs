//! Reference element-wise and attention ops on f32 slices (spec/architectures.md §1).
//!
//! Each op reproduces ggml's CPU arithmetic where it matters for parity
//! (`ggml/src/ggml-cpu/ops.cpp`, `vec.h`):
//! - RMSNorm: squares summed in f64 (`ggml_float`), `scale = 1/sqrtf(mean + eps)` in f32, then
//!   `x·scale`, then `·w` (two roundings, as ggml's `rms_norm` followed by `mul`).
//! - RoPE: `θ` and the angle in f64 (see [`crate::model::spec`]); the rotation in f32.
//! - Softmax: subtract the max, `expf` in f32, sum in f64, multiply by `1/sum`.
//! - SiLU `x/(1+expf(−x))`; GELU tanh form; ReLU².

use crate::backend::{AttnParams, RopeParams};
use crate::model::arch::{Activation, RopeStyle};

/// RMSNorm of each `group`-long slice of `x` into `out`, times `w` if given.
pub fn rms_norm(x: &[f32], w: Option<&[f32]>, group: usize, eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    debug_assert!(group > 0 && x.len().is_multiple_of(group));
    for (xs, ys) in x.chunks_exact(group).zip(out.chunks_exact_mut(group)) {
        let sum: f64 = xs.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / group as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        match w {
            Some(w) => {
                for ((y, &v), &wv) in ys.iter_mut().zip(xs).zip(w) {
                    *y = (v * scale) * wv;
                }
            }
            None => {
                for (y, &v) in ys.iter_mut().zip(xs) {
                    *y = v * scale;
                }
            }
        }
    }
}

/// cos/sin of `pos·θ_i` for one position (angles in f64), times `attn_factor`.
pub fn rope_cos_sin(pos: usize, theta: &[f64], attn_factor: f32, cs: &mut Vec<(f32, f32)>) {
    cs.clear();
    cs.extend(theta.iter().map(|&t| {
        let a = pos as f64 * t;
        (a.cos() as f32 * attn_factor, a.sin() as f32 * attn_factor)
    }));
}

/// Rotates one head in place with precomputed `cs` (`n_rot/2` pairs).
#[inline]
pub fn rope_head(head: &mut [f32], style: RopeStyle, cs: &[(f32, f32)]) {
    let half = cs.len();
    for (i, &(c, s)) in cs.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::Norm => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}

/// RoPE over rows of `n_heads·head_dim`; row `t` is at `pos0 + t`.
pub fn rope(x: &mut [f32], cols: usize, pos0: usize, p: &RopeParams) {
    let mut cs = Vec::with_capacity(p.theta.len());
    for (t, row) in x.chunks_exact_mut(cols).enumerate() {
        rope_cos_sin(pos0 + t, p.theta, p.attn_factor, &mut cs);
        for head in row.chunks_exact_mut(p.head_dim) {
            rope_head(&mut head[..p.n_rot], p.style, &cs);
        }
    }
}

/// `e^x` for the softmax (`x ≤ 0` after the max is subtracted), written so that a loop over it
/// vectorizes: ggml's `ggml_v_expf` (Arm's optimized-routines algorithm, ≤ 1.5 ulp; the same
/// constants) with plain multiply-adds instead of FMAs, and inputs below −87 flushed to 0.
#[inline(always)]
pub fn exp_softmax(x: f32) -> f32 {
    let xc = x.max(-87.0);
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23: rounds to an integer in the low bits
    let z = xc * f32::from_bits(0x3fb8_aa3b) + r; // x·log2(e)
    let n = z - r;
    let b = xc - n * f32::from_bits(0x3f31_7200) - n * f32::from_bits(0x35bf_be8e); // x − n·ln2
    let k = f32::from_bits((z.to_bits() << 23).wrapping_add(1f32.to_bits())); // 2^n
    let u = b * b;
    let j = ((f32::from_bits(0x3c07_2010) * b + f32::from_bits(0x3d2b_9f17)) * u
        + (f32::from_bits(0x3e2a_af33) * b + f32::from_bits(0x3eff_fedb)))
        * u
        + f32::from_bits(0x3f7f_fff6) * b;
    if x < -87.0 {
        0.0
    } else {
        k + j * k
    }
}

/// `x/(1+e^−x)` as ggml's `ggml_silu_f32`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The tanh GELU of `ggml_gelu_f32`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// `act(g) ⊙ u` into `out`.
pub fn glu(gate: &[f32], up: &[f32], act: Activation, out: &mut [f32]) {
    let it = out.iter_mut().zip(gate).zip(up);
    match act {
        Activation::Silu => it.for_each(|((o, &g), &u)| *o = silu(g) * u),
        Activation::GeluTanh => it.for_each(|((o, &g), &u)| *o = gelu_tanh(g) * u),
        Activation::Relu2 => it.for_each(|((o, &g), &u)| {
            let r = g.max(0.0);
            *o = r * r * u
        }),
    }
}

/// f32 dot product with 8 independent accumulators (vectorizes; the sum order differs from a
/// sequential loop by rounding only).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Where the keys come from: the token-major cache rows, or (prefill) one KV head's keys
/// transposed to `[head_dim][n_kv]` so that scores are computed as vector AXPYs over keys.
#[derive(Clone, Copy)]
pub enum Keys<'a> {
    Rows(&'a [f32]),
    Transposed { kt: &'a [f32], n_kv: usize },
}

/// [`attend_one`], compiled for AVX2+FMA where the CPU has them (the same code; wider vectors
/// for its dot products and accumulations).
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k: Keys,
    v: &[f32],
    g: usize,
    pos: usize,
    p: &AttnParams,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::has_avx2()
        && p.head_dim.is_multiple_of(8)
        && p.head_dim_v.is_multiple_of(8)
    {
        // SAFETY: the features were detected; head sizes are multiples of 8.
        unsafe { avx2::attend(q, k, v, g, pos, p, scores, out) };
        return;
    }
    attend_keys(q, k, v, g, pos, p, scores, out)
}

/// Transposes the keys of KV head `g` of `n_kv` cache rows to `[head_dim][n_kv]`.
pub fn transpose_keys(k: &[f32], n_kv: usize, g: usize, p: &AttnParams, kt: &mut Vec<f32>) {
    let (hd, k_row) = (p.head_dim, p.n_head_kv * p.head_dim);
    kt.clear();
    kt.resize(hd * n_kv, 0.0);
    for j in 0..n_kv {
        for (d, &x) in k[j * k_row + g * hd..j * k_row + (g + 1) * hd]
            .iter()
            .enumerate()
        {
            kt[d * n_kv + j] = x;
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_keys(
    q: &[f32],
    k: Keys,
    v: &[f32],
    g: usize,
    pos: usize,
    p: &AttnParams,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    match k {
        Keys::Rows(k) => attend_one(q, k, v, g, pos, p, scores, out),
        Keys::Transposed { kt, n_kv } => {
            // The arithmetic of `dot_f32` (8 unfused accumulators, then its pairing; head
            // sizes here are multiples of 8 or go through the tail below), vectorized over
            // keys, so the scores equal the `Rows` path bit for bit.
            let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let n = pos + 1 - lo;
            let hd8 = q.len() / 8 * 8;
            let mut lanes = vec![0f32; 8 * n];
            for (d, &qd) in q[..hd8].iter().enumerate() {
                let lane = &mut lanes[(d % 8) * n..(d % 8 + 1) * n];
                let row = &kt[d * n_kv + lo..d * n_kv + pos + 1];
                for (s, &x) in lane.iter_mut().zip(row) {
                    *s += qd * x;
                }
            }
            scores.clear();
            scores.resize(n, 0.0);
            let l = |i: usize| &lanes[i * n..(i + 1) * n];
            let (l0, l1, l2, l3, l4, l5, l6, l7) = (l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7));
            for (j, s) in scores.iter_mut().enumerate() {
                *s = ((l0[j] + l4[j]) + (l1[j] + l5[j])) + ((l2[j] + l6[j]) + (l3[j] + l7[j]));
            }
            for (d, &qd) in q.iter().enumerate().skip(hd8) {
                let row = &kt[d * n_kv + lo..d * n_kv + pos + 1];
                for (s, &x) in scores.iter_mut().zip(row) {
                    *s += qd * x;
                }
            }
            for s in scores.iter_mut() {
                *s *= p.scale;
            }
            softmax_and_mix(v, g, lo, p, scores, out);
        }
    }
}

/// Attention of one query head `q` (`head_dim`) at absolute position `pos` over the rows of
/// `k` (`[n][k_row]`) and `v` (`[n][v_row]`), KV head `g`; writes `out` (`head_dim_v`).
/// `scores` is scratch.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn attend_one(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: usize,
    pos: usize,
    p: &AttnParams,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let k_row = p.n_head_kv * hd;
    let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    scores.clear();
    for j in lo..=pos {
        let kj = &k[j * k_row + g * hd..j * k_row + (g + 1) * hd];
        scores.push(dot_f32(q, kj) * p.scale);
    }
    softmax_and_mix(v, g, lo, p, scores, out);
}

/// Softmax of `scores` (keys `lo..`) in place, then `out = Σ_j w_j·v_j` over V head `g`.
#[inline(always)]
fn softmax_and_mix(
    v: &[f32],
    g: usize,
    lo: usize,
    p: &AttnParams,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hdv = p.head_dim_v;
    let v_row = p.n_head_kv * hdv;
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for s in scores.iter_mut() {
        *s = exp_softmax(*s - max);
    }
    // Sums of 8 in f32, accumulated in f64 (ggml_vec_soft_max_f32).
    let mut sum = 0f64;
    let chunks = scores.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        sum += (((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]))) as f64;
    }
    sum += tail as f64;
    let inv = (1.0 / sum) as f32;
    out.fill(0.0);
    for (jj, &w) in scores.iter().enumerate() {
        let j = lo + jj;
        let w = w * inv;
        let vj = &v[j * v_row + g * hdv..j * v_row + (g + 1) * hdv];
        for (o, &x) in out.iter_mut().zip(vj) {
            *o += w * x;
        }
    }
}

/// AVX2 attention: scores of 8 keys per pass with one horizontal-add tree (instead of a
/// horizontal sum per key), V accumulated in registers 64 dims at a time. Same math as the
/// portable [`attend_one`] up to f32 summation order.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{exp_softmax, AttnParams, Keys};
    use std::arch::x86_64::*;

    /// `q·k_j` for 8 consecutive keys starting at `k` (rows `k_row` apart), `hd % 8 == 0`.
    #[inline(always)]
    unsafe fn scores8(q: *const f32, k: *const f32, k_row: usize, hd: usize) -> __m256 {
        let mut a = [_mm256_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let qv = _mm256_loadu_ps(q.add(c));
            for (kk, acc) in a.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.add(kk * k_row + c)), *acc);
            }
        }
        let s01 = _mm256_hadd_ps(a[0], a[1]);
        let s23 = _mm256_hadd_ps(a[2], a[3]);
        let s45 = _mm256_hadd_ps(a[4], a[5]);
        let s67 = _mm256_hadd_ps(a[6], a[7]);
        let s0123 = _mm256_hadd_ps(s01, s23);
        let s4567 = _mm256_hadd_ps(s45, s67);
        _mm256_add_ps(
            _mm256_permute2f128_ps(s0123, s4567, 0x20),
            _mm256_permute2f128_ps(s0123, s4567, 0x31),
        )
    }

    /// One key's score with exactly the arithmetic of a lane of [`scores8`]: per-lane FMA
    /// chains, then `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`. A key's score must not depend on
    /// whether it falls in a block of 8 or in the tail (chunked prefill is bit-exact).
    #[inline(always)]
    unsafe fn dot(q: *const f32, k: *const f32, hd: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for c in (0..hd).step_by(8) {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), _mm256_loadu_ps(k.add(c)), acc);
        }
        let h = _mm256_hadd_ps(acc, acc);
        let h = _mm256_hadd_ps(h, h);
        _mm_cvtss_f32(_mm_add_ss(
            _mm256_castps256_ps128(h),
            _mm256_extractf128_ps(h, 1),
        ))
    }

    /// # Safety
    /// AVX2 and FMA present; `head_dim` and `head_dim_v` multiples of 8.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attend(
        q: &[f32],
        k: Keys,
        v: &[f32],
        g: usize,
        pos: usize,
        p: &AttnParams,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let (hd, hdv) = (p.head_dim, p.head_dim_v);
        let (k_row, v_row) = (p.n_head_kv * hd, p.n_head_kv * hdv);
        let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let n = pos + 1 - lo;
        scores.clear();
        scores.resize(n, 0.0);
        match k {
            Keys::Rows(k) => {
                debug_assert!(k.len() >= (pos + 1) * k_row);
                let base = k.as_ptr().add(lo * k_row + g * hd);
                let mut j = 0;
                while j + 8 <= n {
                    let s = scores8(q.as_ptr(), base.add(j * k_row), k_row, hd);
                    _mm256_storeu_ps(scores.as_mut_ptr().add(j), s);
                    j += 8;
                }
                for (j, s) in scores.iter_mut().enumerate().skip(j) {
                    *s = dot(q.as_ptr(), base.add(j * k_row), hd);
                }
            }
            Keys::Transposed { kt, n_kv } => {
                // The same arithmetic as `scores8`, vectorized over keys: lane l of the FMA
                // chain sums dims l, l+8, …; then the same pairing of the 8 lanes.
                let mut lanes = vec![0f32; 8 * n];
                for (d, &qd) in q.iter().enumerate() {
                    let lane = &mut lanes[(d % 8) * n..(d % 8 + 1) * n];
                    let row = &kt[d * n_kv + lo..d * n_kv + pos + 1];
                    for (s, &x) in lane.iter_mut().zip(row) {
                        *s = qd.mul_add(x, *s);
                    }
                }
                let l = |i: usize| &lanes[i * n..(i + 1) * n];
                let (l0, l1, l2, l3, l4, l5, l6, l7) =
                    (l(0), l(1), l(2), l(3), l(4), l(5), l(6), l(7));
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = ((l0[j] + l1[j]) + (l2[j] + l3[j])) + ((l4[j] + l5[j]) + (l6[j] + l7[j]));
                }
            }
        }
        let mut max = f32::NEG_INFINITY;
        for s in scores.iter_mut() {
            *s *= p.scale;
            max = max.max(*s);
        }
        for s in scores.iter_mut() {
            *s = exp_softmax(*s - max);
        }
        let mut sum = 0f64;
        let chunks = scores.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            sum += (((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]))) as f64;
        }
        sum += tail as f64;
        let inv = (1.0 / sum) as f32;
        // out = Σ_j w_j·v_j, 64 output dims (8 registers) per pass over the keys.
        let vb = v.as_ptr().add(lo * v_row + g * hdv);
        for c0 in (0..hdv).step_by(64) {
            let w8 = (hdv - c0).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, &s) in scores.iter().enumerate() {
                let w = _mm256_set1_ps(s * inv);
                let row = vb.add(j * v_row + c0);
                for (i, a) in acc.iter_mut().enumerate().take(w8) {
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(row.add(8 * i)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate().take(w8) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * i), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_plain_and_per_head() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut y = [0f32; 4];
        rms_norm(&x, None, 4, 0.0, &mut y);
        let r = (30.0f32 / 4.0).sqrt();
        for i in 0..4 {
            assert!((y[i] - x[i] / r).abs() < 1e-6);
        }
        rms_norm(&x, Some(&[2.0, 3.0]), 2, 0.0, &mut y);
        let (r0, r1) = ((5.0f32 / 2.0).sqrt(), (25.0f32 / 2.0).sqrt());
        assert!((y[0] - 2.0 / r0).abs() < 1e-6 && (y[1] - 6.0 / r0).abs() < 1e-6);
        assert!((y[2] - 6.0 / r1).abs() < 1e-6 && (y[3] - 12.0 / r1).abs() < 1e-6);
    }

    #[test]
    fn rope_styles_pair_the_right_dims() {
        let theta = [1.0f64, 0.5];
        let p = |style| RopeParams {
            style,
            head_dim: 6,
            n_rot: 4,
            theta: &theta,
            attn_factor: 1.0,
        };
        let x0 = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut x = x0;
        rope(&mut x, 6, 1, &p(RopeStyle::Norm));
        let (c0, s0, c1, s1) = (1f32.cos(), 1f32.sin(), 0.5f32.cos(), 0.5f32.sin());
        let want = [
            1.0 * c0 - 2.0 * s0,
            1.0 * s0 + 2.0 * c0,
            3.0 * c1 - 4.0 * s1,
            3.0 * s1 + 4.0 * c1,
            5.0,
            6.0,
        ];
        for i in 0..6 {
            assert!((x[i] - want[i]).abs() < 1e-6, "norm {i}");
        }
        let mut x = x0;
        rope(&mut x, 6, 1, &p(RopeStyle::Neox));
        let want = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            1.0 * s0 + 3.0 * c0,
            2.0 * s1 + 4.0 * c1,
            5.0,
            6.0,
        ];
        for i in 0..6 {
            assert!((x[i] - want[i]).abs() < 1e-6, "neox {i}");
        }
        // Position 0 is the identity.
        let mut x = x0;
        rope(&mut x, 6, 0, &p(RopeStyle::Neox));
        assert_eq!(x, x0);
    }

    #[test]
    fn attention_window_and_gqa() {
        // 1 kv head, hd 1: k = 0 everywhere → uniform weights over the visible keys.
        let p = AttnParams {
            n_head: 2,
            n_head_kv: 1,
            head_dim: 1,
            head_dim_v: 1,
            scale: 1.0,
            window: Some(2),
        };
        let k = [0.0f32; 5];
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let mut s = Vec::new();
        let mut o = [0f32];
        attend_one(&[1.0], &k, &v, 0, 4, &p, &mut s, &mut o);
        assert!(
            (o[0] - 4.5).abs() < 1e-6,
            "window of 2 sees positions 3 and 4"
        );
        let full = AttnParams { window: None, ..p };
        attend_one(&[1.0], &k, &v, 0, 4, &full, &mut s, &mut o);
        assert!((o[0] - 3.0).abs() < 1e-6);
        attend_one(&[1.0], &k, &v, 0, 0, &full, &mut s, &mut o);
        assert_eq!(o[0], 1.0);
    }

    #[test]
    fn softmax_exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 4.4e-4; // 0 … −88
            let want = (x as f64).exp();
            let got = exp_softmax(x) as f64;
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 4e-7, "relative error {worst:e}");
        assert_eq!(exp_softmax(0.0), 1.0);
        assert_eq!(exp_softmax(-100.0), 0.0);
        assert_eq!(exp_softmax(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn transposed_keys_give_the_same_attention() {
        let p = AttnParams {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 8,
            head_dim_v: 8,
            scale: 0.35,
            window: Some(5),
        };
        let n = 9;
        let k: Vec<f32> = (0..n * 16)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0)
            .collect();
        let v: Vec<f32> = (0..n * 16)
            .map(|i| ((i * 11 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let q: Vec<f32> = (0..8).map(|i| i as f32 / 8.0 - 0.4).collect();
        let mut kt = Vec::new();
        transpose_keys(&k, n, 1, &p, &mut kt);
        let (mut s, mut a, mut b) = (Vec::new(), [0f32; 8], [0f32; 8]);
        for pos in 0..n {
            for w in [None, Some(5)] {
                let p = AttnParams { window: w, ..p };
                attend(&q, Keys::Rows(&k), &v, 1, pos, &p, &mut s, &mut a);
                attend(
                    &q,
                    Keys::Transposed { kt: &kt, n_kv: n },
                    &v,
                    1,
                    pos,
                    &p,
                    &mut s,
                    &mut b,
                );
                // Bit-exact: batched (prefill) and single-query (decode) attention agree.
                assert_eq!(a, b, "pos {pos} {w:?}");
            }
        }
    }

    #[test]
    fn portable_transposed_keys_are_bit_exact() {
        for hd in [8, 12] {
            let p = AttnParams {
                n_head: 2,
                n_head_kv: 1,
                head_dim: hd,
                head_dim_v: 4,
                scale: 0.3,
                window: None,
            };
            let n = 11;
            let k: Vec<f32> = (0..n * hd)
                .map(|i| ((i * 29 % 31) as f32 - 15.0) / 7.0)
                .collect();
            let v: Vec<f32> = (0..n * 4)
                .map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0)
                .collect();
            let q: Vec<f32> = (0..hd).map(|i| (i as f32 - 5.0) / 3.0).collect();
            let mut kt = Vec::new();
            transpose_keys(&k, n, 0, &p, &mut kt);
            let (mut s, mut a, mut b) = (Vec::new(), [0f32; 4], [0f32; 4]);
            for pos in 0..n {
                attend_keys(&q, Keys::Rows(&k), &v, 0, pos, &p, &mut s, &mut a);
                let t = Keys::Transposed { kt: &kt, n_kv: n };
                attend_keys(&q, t, &v, 0, pos, &p, &mut s, &mut b);
                assert_eq!(a, b, "hd {hd} pos {pos}");
            }
        }
    }

    #[test]
    fn dispatched_attention_matches_the_portable_one() {
        // hd 64 and 37 keys: the AVX2 path's 8-key blocks, its tail and two 64-dim V passes.
        for (hd, hdv) in [(64, 64), (16, 128)] {
            let p = AttnParams {
                n_head: 6,
                n_head_kv: 3,
                head_dim: hd,
                head_dim_v: hdv,
                scale: 0.125,
                window: None,
            };
            let n = 37;
            let k: Vec<f32> = (0..n * 3 * hd)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            let v: Vec<f32> = (0..n * 3 * hdv)
                .map(|i| ((i * 13 % 97) as f32 - 48.0) / 30.0)
                .collect();
            let q: Vec<f32> = (0..hd)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
                .collect();
            let (mut s, mut a, mut b) = (Vec::new(), vec![0f32; hdv], vec![0f32; hdv]);
            for pos in [0, 7, 8, 20, 36] {
                for w in [None, Some(9)] {
                    let p = AttnParams { window: w, ..p };
                    attend_one(&q, &k, &v, 2, pos, &p, &mut s, &mut a);
                    attend(&q, Keys::Rows(&k), &v, 2, pos, &p, &mut s, &mut b);
                    for i in 0..hdv {
                        assert!(
                            (a[i] - b[i]).abs() < 1e-5,
                            "hd {hd} pos {pos} {w:?} dim {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activations() {
        assert_eq!(silu(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        let mut o = [0f32; 2];
        glu(&[-1.0, 2.0], &[3.0, 3.0], Activation::Relu2, &mut o);
        assert_eq!(o, [0.0, 12.0]);
    }
}

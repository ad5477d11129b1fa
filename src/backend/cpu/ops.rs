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
    debug_assert!(group > 0 && x.len() % group == 0);
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

/// [`attend_one`], compiled for AVX2+FMA where the CPU has them (the same code; wider vectors
/// for its dot products and accumulations).
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: usize,
    pos: usize,
    p: &AttnParams,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn attend_avx2(
            q: &[f32],
            k: &[f32],
            v: &[f32],
            g: usize,
            pos: usize,
            p: &AttnParams,
            scores: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            attend_one(q, k, v, g, pos, p, scores, out)
        }
        // SAFETY: the features were detected.
        unsafe { attend_avx2(q, k, v, g, pos, p, scores, out) };
        return;
    }
    attend_one(q, k, v, g, pos, p, scores, out)
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
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let (k_row, v_row) = (p.n_head_kv * hd, p.n_head_kv * hdv);
    let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in lo..=pos {
        let kj = &k[j * k_row + g * hd..j * k_row + (g + 1) * hd];
        let s = dot_f32(q, kj) * p.scale;
        max = max.max(s);
        scores.push(s);
    }
    let mut sum = 0f64;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s as f64;
    }
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
    fn activations() {
        assert_eq!(silu(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        let mut o = [0f32; 2];
        glu(&[-1.0, 2.0], &[3.0, 3.0], Activation::Relu2, &mut o);
        assert_eq!(o, [0.0, 12.0]);
    }
}

//! Reference element-wise and attention ops on f32 slices (spec/architectures.md §1).
//!
//! Each op reproduces ggml's CPU arithmetic where it matters for parity
//! (`ggml/src/ggml-cpu/ops.cpp`, `vec.h`):
//! - RMSNorm: squares summed in f64 (`ggml_float`), `scale = 1/sqrtf(mean + eps)` in f32, then
//!   `x·scale`, then `·w` (two roundings, as ggml's `rms_norm` followed by `mul`).
//! - RoPE: the angles in f32 as llama.cpp's cache ([`RopeFreqs`]); the rotation with GCC's FMAs.
//! - Softmax: subtract the max, ggml's vector `expf`, sum blocks of 8 in f32 and those in f64,
//!   multiply by `1/sum`; attention's dot products as `ggml_vec_dot_f32` (see [`attend`]).
//! - SiLU `x/(1+expf(−x))` with ggml's vector `expf`; GELU tanh form; ReLU².

use crate::backend::{AttnParams, RopeFreqs, RopeParams};
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

/// cos/sin of each pair's angle at one position (f32, as llama.cpp), times `attn_factor`.
pub fn rope_cos_sin(pos: usize, freqs: &RopeFreqs, attn_factor: f32, cs: &mut Vec<(f32, f32)>) {
    cs.clear();
    cs.extend(
        freqs
            .angles(pos)
            .map(|a| (a.cos() * attn_factor, a.sin() * attn_factor)),
    );
}

/// Rotates one head in place with precomputed `cs` (`n_rot/2` pairs).
#[inline]
pub fn rope_head(head: &mut [f32], style: RopeStyle, cs: &[(f32, f32)]) {
    // GCC contracts llama.cpp's `rotate_pairs` (x86-64, both styles) into
    // `fma(x0, cos, −(x1·sin))` and `fma(x0, sin, x1·cos)`: one rounding fewer than the plain
    // expressions, and bit-identical to llama.cpp's rotated Q and K.
    let half = cs.len();
    for (i, &(c, s)) in cs.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::Norm => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0.mul_add(c, -(x1 * s));
        head[b] = x0.mul_add(s, x1 * c);
    }
}

/// RoPE over rows of `n_heads·head_dim`; row `t` is at `pos0 + t`.
pub fn rope(x: &mut [f32], cols: usize, pos0: usize, p: &RopeParams) {
    let mut cs = Vec::with_capacity(p.n_rot / 2);
    for (t, row) in x.chunks_exact_mut(cols).enumerate() {
        rope_cos_sin(pos0 + t, p.freqs, p.attn_factor, &mut cs);
        for head in row.chunks_exact_mut(p.head_dim) {
            rope_head(&mut head[..p.n_rot], p.style, &cs);
        }
    }
}

/// `e^x` bit-identical to ggml's AVX2+FMA vector `ggml_v_expf`, which its softmax and SiLU
/// use (Arm's optimized-routines algorithm, ≤ 1.5 ulp): the same constants and fused
/// multiply-adds, and its scaled path for `|n| > 126` (subnormal results, 0 past `|n| > 192`;
/// +∞ for large positive `x`). Branch-free per element, so a loop over it vectorizes.
#[inline(always)]
pub fn ggml_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23: rounds to an integer in the low bits
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // x·log2(e)
    let n = z - r;
    // x − n·ln2 in two parts (fnmadd: −(n·c) + a).
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits())); // 2^n
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    // 2^n = s1·s2 when 2^n alone would overflow or underflow.
    let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else if n.abs() > 126.0 {
        s2.mul_add(j, s2) * s1
    } else {
        j.mul_add(k, k)
    }
}

/// `x/(1+e^−x)` as ggml's vector `ggml_v_silu`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + ggml_expf(-x))
}

/// `x/(1+expf(−x))` with the C library's `expf`: ggml's scalar `ggml_silu_f32`, which takes
/// the elements of a row after its last block of 8.
#[inline]
fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The tanh GELU of `ggml_gelu_f32`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const GELU_COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// `act(g) ⊙ u` of one row into `out` (see [`glu_rows`]).
pub fn glu(gate: &[f32], up: &[f32], act: Activation, out: &mut [f32]) {
    glu_rows(gate, up, out.len(), act, out)
}

/// `act(g) ⊙ u` into `out`, over rows of `cols` (ggml's SiLU treats a row's tail apart). Uses
/// AVX2+FMA where the CPU has them (the same code and bits, wider vectors and hardware FMAs).
pub fn glu_rows(gate: &[f32], up: &[f32], cols: usize, act: Activation, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::has_avx2() {
        // SAFETY: the features were detected.
        unsafe { glu_avx2(gate, up, cols, act, out) };
        return;
    }
    glu_impl(gate, up, cols, act, out)
}

/// [`glu_impl`] compiled for AVX2+FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn glu_avx2(gate: &[f32], up: &[f32], cols: usize, act: Activation, out: &mut [f32]) {
    glu_impl(gate, up, cols, act, out)
}

#[inline(always)]
fn glu_impl(gate: &[f32], up: &[f32], cols: usize, act: Activation, out: &mut [f32]) {
    debug_assert!(gate.len() == out.len() && up.len() == out.len());
    debug_assert!(cols > 0 && out.len().is_multiple_of(cols));
    let rows = out
        .chunks_exact_mut(cols)
        .zip(gate.chunks_exact(cols).zip(up.chunks_exact(cols)));
    for (o, (g, u)) in rows {
        match act {
            // `ggml_vec_swiglu_f32`: the vector SiLU over blocks of 8, the scalar one after.
            Activation::Silu => {
                let v = cols / 8 * 8;
                let (o8, ot) = o.split_at_mut(v);
                for ((o, &g), &u) in o8.iter_mut().zip(&g[..v]).zip(&u[..v]) {
                    *o = silu(g) * u;
                }
                for ((o, &g), &u) in ot.iter_mut().zip(&g[v..]).zip(&u[v..]) {
                    *o = silu_scalar(g) * u;
                }
            }
            Activation::GeluTanh => {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = gelu_tanh(g) * u;
                }
            }
            Activation::Relu2 => {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    let r = g.max(0.0);
                    *o = r * r * u;
                }
            }
        }
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

// Attention reproduces llama.cpp's CPU graph without flash attention (`build_attn_mha`):
// `kq = mul_mat(k, q)`, `soft_max_ext(kq, mask, scale)`, `kqv = mul_mat(v, kq)` over an f32 KV
// cache whose `n_kv` cells are a multiple of 256 (cell = position here; masked cells weigh
// exactly 0, so leaving them out changes no sum). The scores always go through
// `ggml_vec_dot_f32` (llamafile's sgemm wants a contiguous `q` and two or more tokens). `kqv`
// goes through sgemm (one 8-lane FMA accumulator per output) for a batch of two or more
// tokens and through `ggml_vec_dot_f32` for one, and so does ours (`AttnParams::batched`): a
// prompt prefilled in one batch then decoded token by token is llama.cpp's run to the bit, and
// a position's logits depend (in the last bits) on whether it was decoded alone or in a batch.
// On x86-64 with AVX2+FMA (`GGML_F32_STEP` 32), `ggml_vec_dot_f32` keeps 4 accumulators of 8
// lanes: element `i` of the first `n/32·32` goes to slot `i % 32` by FMA, in order of `i`.

/// Slots of `ggml_vec_dot_f32`'s partial sums (4 accumulators × 8 lanes).
const DOT_SLOTS: usize = 32;

/// `GGML_F32x8_REDUCE` of the 32 slots (`p[8a + l]`: lane `l` of accumulator `a`): accumulators
/// `(a0+a2) + (a1+a3)` lane-wise, the high 4 lanes onto the low 4, then two `hadd`s.
#[inline(always)]
fn reduce_slots(p: [f32; DOT_SLOTS]) -> f32 {
    let v: [f32; 8] = std::array::from_fn(|l| (p[l] + p[16 + l]) + (p[8 + l] + p[24 + l]));
    let t: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

/// [`reduce_slots`] of `m` interleaved sums at once: `parts` is `[32][m]`, `out` gets `m`.
#[inline(always)]
fn reduce_slots_into(parts: &[f32], out: &mut [f32]) {
    let m = out.len();
    debug_assert_eq!(parts.len(), DOT_SLOTS * m);
    let s: [&[f32]; DOT_SLOTS] = std::array::from_fn(|c| &parts[c * m..(c + 1) * m]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = reduce_slots(std::array::from_fn(|c| s[c][i]));
    }
}

/// The leftover elements `n/32·32..n` of `ggml_vec_dot_f32`, added to its reduced sum in
/// order: GCC vectorizes that loop for the first `⌊rest/4⌋·4` of them (products rounded, then
/// added) and contracts the last `rest % 4` into scalar FMAs. Returns where the FMAs start.
#[inline(always)]
fn dot_tail_split(np: usize, n: usize) -> usize {
    np + (n - np) / 4 * 4
}

/// `ggml_vec_dot_f32(x, y)` with its x86-64 AVX2+FMA arithmetic.
#[inline(always)]
fn ggml_dot(x: &[f32], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let np = x.len() / DOT_SLOTS * DOT_SLOTS;
    let mut p = [0f32; DOT_SLOTS];
    for (xs, ys) in x[..np]
        .chunks_exact(DOT_SLOTS)
        .zip(y[..np].chunks_exact(DOT_SLOTS))
    {
        for c in 0..DOT_SLOTS {
            p[c] = xs[c].mul_add(ys[c], p[c]);
        }
    }
    let mut s = reduce_slots(p);
    let nf = dot_tail_split(np, x.len());
    for i in np..nf {
        s += x[i] * y[i];
    }
    for i in nf..x.len() {
        s = x[i].mul_add(y[i], s);
    }
    s
}

/// Attention of one query head `q` (`head_dim`) at absolute position `pos`, KV head `g`, over
/// the keys `k` and the token-major value rows `v` (`[n][v_row]`); writes `out`
/// (`head_dim_v`). `scores` is scratch. Uses AVX2+FMA where the CPU has them: the same code
/// compiled with wider vectors and hardware FMAs, so the result is the same to the bit.
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
    if crate::backend::cpu::has_avx2() {
        // SAFETY: the features were detected.
        unsafe { attend_avx2(q, k, v, g, pos, p, scores, out) };
        return;
    }
    attend_keys(q, k, v, g, pos, p, scores, out)
}

/// [`attend_keys`] compiled for AVX2+FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    q: &[f32],
    k: Keys,
    v: &[f32],
    g: usize,
    pos: usize,
    p: &AttnParams,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
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

/// The first key visible from `pos`.
#[inline(always)]
fn first_key(pos: usize, p: &AttnParams) -> usize {
    p.window.map_or(0, |w| (pos + 1).saturating_sub(w))
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
            // [`ggml_dot`] vectorized over keys: slot `d % 32` of every key accumulates dim
            // `d`, then the same reduction and tail, so the scores equal the `Rows` path's.
            let lo = first_key(pos, p);
            let n = pos + 1 - lo;
            let hd = q.len();
            let np = hd / DOT_SLOTS * DOT_SLOTS;
            let row = |d: usize| &kt[d * n_kv + lo..d * n_kv + pos + 1];
            let mut parts = vec![0f32; DOT_SLOTS * n];
            for (d, &qd) in q[..np].iter().enumerate() {
                let c = d % DOT_SLOTS;
                for (s, &x) in parts[c * n..(c + 1) * n].iter_mut().zip(row(d)) {
                    *s = x.mul_add(qd, *s);
                }
            }
            scores.clear();
            scores.resize(n, 0.0);
            reduce_slots_into(&parts, scores);
            let nf = dot_tail_split(np, hd);
            for (d, &qd) in q.iter().enumerate().take(nf).skip(np) {
                for (s, &x) in scores.iter_mut().zip(row(d)) {
                    *s += x * qd;
                }
            }
            for (d, &qd) in q.iter().enumerate().skip(nf) {
                for (s, &x) in scores.iter_mut().zip(row(d)) {
                    *s = x.mul_add(qd, *s);
                }
            }
            for s in scores.iter_mut() {
                *s *= p.scale;
            }
            softmax_and_mix(v, g, lo, p, scores, out);
        }
    }
}

/// Attention of one query head over the token-major key rows `k` (`[n][k_row]`); see
/// [`attend`]. The portable code, without the AVX2 dispatch.
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
    let lo = first_key(pos, p);
    scores.clear();
    for j in lo..=pos {
        let kj = &k[j * k_row + g * hd..j * k_row + (g + 1) * hd];
        scores.push(ggml_dot(kj, q) * p.scale);
    }
    softmax_and_mix(v, g, lo, p, scores, out);
}

/// Softmax of `scores` (keys `lo..`) in place, then `out = Σ_j w_j·v_j` over V head `g`, as
/// `ggml_compute_forward_soft_max_f32` and `ggml_vec_dot_f32` compute them.
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
        *s = ggml_expf(*s - max);
    }
    // `ggml_vec_soft_max_f32`: blocks of 8 cells (by absolute position; masked cells are 0)
    // summed in f32 like its AVX2 loop (high half onto the low one, then `movehl`,
    // `movehdup`), accumulated in f64.
    let mut sum = 0f64;
    for b in (lo / 8 * 8..=lo + scores.len() - 1).step_by(8) {
        let c: [f32; 8] = std::array::from_fn(|l| {
            (b + l)
                .checked_sub(lo)
                .and_then(|i| scores.get(i))
                .map_or(0.0, |&s| s)
        });
        sum += (((c[0] + c[4]) + (c[2] + c[6])) + ((c[1] + c[5]) + (c[3] + c[7]))) as f64;
    }
    let inv = (1.0 / sum) as f32;
    // `kqv`: out[d] sums the cells of V's transposed row d, all dims at once. One token:
    // `ggml_vec_dot_f32`, cell j in slot j % 32 (`[32][hdv]`). A batch: llamafile's sgemm, one
    // 8-lane FMA accumulator (cell j in lane j % 8, `[8][hdv]`), then its `hsum`.
    let slots = if p.batched { 8 } else { DOT_SLOTS };
    let mut parts = vec![0f32; slots * hdv];
    for (jj, &e) in scores.iter().enumerate() {
        let j = lo + jj;
        let w = e * inv;
        let vj = &v[j * v_row + g * hdv..j * v_row + (g + 1) * hdv];
        let c = j % slots;
        for (a, &x) in parts[c * hdv..(c + 1) * hdv].iter_mut().zip(vj) {
            *a = x.mul_add(w, *a);
        }
    }
    if p.batched {
        let s: [&[f32]; 8] = std::array::from_fn(|c| &parts[c * hdv..(c + 1) * hdv]);
        for (i, o) in out.iter_mut().enumerate() {
            // `hsum(__m256)`: high half onto the low one, then `movehl`, `movehdup`.
            let t: [f32; 4] = std::array::from_fn(|l| s[l + 4][i] + s[l][i]);
            *o = (t[0] + t[2]) + (t[1] + t[3]);
        }
    } else {
        reduce_slots_into(&parts, out);
    }
}

/// The first maximum (NaN never wins); 0 for an empty or all-NaN slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v || (!found && !v.is_nan()) {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

/// The order of [`argmax`] and [`top_k`] on `(id, value)` pairs: larger value first, −0 equal
/// to +0, then the lower id (NaN must be filtered out first: it sorts first).
pub fn rank_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    let z = |v: f32| if v == 0.0 { 0.0 } else { v };
    z(b.1).total_cmp(&z(a.1)).then(a.0.cmp(&b.0))
}

/// The `k` largest values of `row` with their indices, best first in [`rank_desc`] order (ties
/// to the lower index), NaN never chosen: fewer than `k` pairs when fewer values are not NaN.
/// Its first pair is [`argmax`]'s (when any value is not NaN).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    if k == 0 {
        return Vec::new();
    }
    if k < c.len() {
        c.select_nth_unstable_by(k - 1, rank_desc);
        c.truncate(k);
    }
    c.sort_by(rank_desc);
    c
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
        // θ_0 = 1, θ_1 = 0.5.
        let freqs = RopeFreqs {
            theta_scale: 0.5,
            freq_scale: 1.0,
            factors: vec![1.0, 1.0],
        };
        let p = |style| RopeParams {
            style,
            head_dim: 6,
            n_rot: 4,
            freqs: &freqs,
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
            batched: false,
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
            let got = ggml_expf(x) as f64;
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 4e-7, "relative error {worst:e}");
        assert_eq!(ggml_expf(0.0), 1.0);
        // ggml's scaled path: subnormal results, then 0.
        let sub = ggml_expf(-100.0) as f64;
        assert!((sub / (-100f64).exp() - 1.0).abs() < 0.05, "{sub:e}");
        assert_eq!(ggml_expf(-140.0), 0.0);
        assert_eq!(ggml_expf(f32::NEG_INFINITY), 0.0);
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
            batched: false,
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
        // Dims in 32-slots only, in the tail only (products added, then FMAs), and both.
        for hd in [8, 12, 38, 64] {
            let p = AttnParams {
                n_head: 2,
                n_head_kv: 1,
                head_dim: hd,
                head_dim_v: 4,
                scale: 0.3,
                window: None,
                batched: false,
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
        // The AVX2 build of the same code computes the same bits.
        for (hd, hdv) in [(64, 64), (38, 40), (16, 128)] {
            let p = AttnParams {
                n_head: 6,
                n_head_kv: 3,
                head_dim: hd,
                head_dim_v: hdv,
                scale: 0.125,
                window: None,
                batched: false,
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
                for (w, batched) in [(None, false), (Some(9), false), (None, true)] {
                    let p = AttnParams {
                        window: w,
                        batched,
                        ..p
                    };
                    attend_one(&q, &k, &v, 2, pos, &p, &mut s, &mut a);
                    attend(&q, Keys::Rows(&k), &v, 2, pos, &p, &mut s, &mut b);
                    assert_eq!(a, b, "hd {hd} pos {pos} {w:?} batched {batched}");
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

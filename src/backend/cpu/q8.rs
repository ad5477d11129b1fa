//! The fast CPU matmul path: activations quantized to int8 per 32-block and weight rows unpacked
//! once to int8 codes with per-group f32 scale and offset, then integer dot products that the
//! compiler vectorizes (llama.cpp's `vec_dot_type` scheme, spec/architectures.md §6 "activation
//! quantization"; STYLE.md practice 3 keeps the scalar reference beside it: [`dot_reference`]).
//!
//! - Activation block (32 values): `d = max|x|/127`, `q = round(x/d)` (half away from zero, as
//!   ggml's `quantize_row_q8_0`), plus `Σq` per 16 values for formats with offsets. Unlike
//!   ggml we keep `d` in f32 (ggml rounds it to f16) and use 32-blocks for the K-quants too
//!   (ggml's Q8_K uses one scale per 256), which is slightly more precise.
//! - Weight row: every supported quantized format decodes to `w = s_g·q + m_g` with `q` an i8
//!   and `(s_g, m_g)` per group of `G = 16` or `32` values (`m_g = 0` for symmetric formats).
//!   `s_g·q + m_g` reproduces the reference decoder bit for bit (tested).
//! - Dot: `Σ_b d_b · Σ_{g∈b} (s_g·Σ q·a + m_g·Σ a)`, integer inner sums.
//!
//! A weight row is unpacked once and dotted with every token of a batch, so prefill decodes each
//! weight once per batch. F32/F16/BF16 weights never take this path (the f32 kernel keeps them
//! exact).

use crate::quant::kquants::{scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
use crate::quant::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::quant::ternary::{BlockTQ1_0, BlockTQ2_0};
use crate::quant::GgmlType;

/// Activation block size of the dot products (a Q8_K block is handled as eight of them).
pub const QB: usize = 32;

/// How activations are quantized: the scheme ggml pairs with each weight type (its
/// `vec_dot_type`), reproduced as the x86 AVX2 build of the oracle computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `block_q8_0`/`block_q8_1` (`quantize_row_q8_0`/`_q8_1`, AVX2 path): per 32 values
    /// `id = 127/max|x|`, `q = round_half_even(x·id)`, scale `d = f16(max|x|/127)`; for Q8_1 also
    /// `s = f16(d_unrounded·Σq)`. Paired with Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (and our I2_S).
    Q8_0,
    /// `block_q8_K` (`quantize_row_q8_K_ref`): per 256 values `iscale = −127/x_m` where `x_m` is
    /// the first value of largest magnitude, `q = min(127, round_half_even(iscale·x))`,
    /// `d = 1/iscale` in f32. Paired with the K-quants, TQ1_0 and TQ2_0.
    Q8K,
}

/// `n` rows of `k` activations quantized by one [`Scheme`].
#[derive(Debug, Clone)]
pub struct Q8Acts {
    pub k: usize,
    pub scheme: Scheme,
    /// `[n][k]` codes.
    pub qs: Vec<i8>,
    /// `[n][k/32]` scale of each 32 values (a Q8_K scale repeated over its 8 sub-blocks).
    pub d: Vec<f32>,
    /// `[n][k/16]` sums of the codes of each 16 values.
    pub sum16: Vec<i32>,
    /// `[n][k/32]` the activation sum that multiplies a weight offset: ggml's Q8_1 `s`
    /// (`f16(d·Σq)`) for [`Scheme::Q8_0`], `d·Σq` for [`Scheme::Q8K`].
    pub off32: Vec<f32>,
}

/// ggml's `nearest_int` / `_mm256_round_ps(…, _MM_ROUND_NEAREST)`: round half to even.
#[inline]
fn round_even(v: f32) -> i32 {
    v.round_ties_even() as i32
}

impl Q8Acts {
    /// Quantizes `x` (`[n][k]`, `k` a multiple of 32, of 256 for [`Scheme::Q8K`]).
    pub fn quantize(x: &[f32], k: usize, scheme: Scheme) -> Q8Acts {
        #[cfg(target_arch = "x86_64")]
        if crate::backend::cpu::has_avx2() {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn quantize_avx2(x: &[f32], k: usize, scheme: Scheme) -> Q8Acts {
                Q8Acts::quantize_body(x, k, scheme)
            }
            // SAFETY: the features were detected (inlines `round_ties_even` as `vroundps`).
            return unsafe { quantize_avx2(x, k, scheme) };
        }
        Q8Acts::quantize_body(x, k, scheme)
    }

    #[inline(always)]
    fn quantize_body(x: &[f32], k: usize, scheme: Scheme) -> Q8Acts {
        debug_assert!(k.is_multiple_of(QB) && x.len().is_multiple_of(k));
        let nb = x.len() / QB;
        let mut a = Q8Acts {
            k,
            scheme,
            qs: vec![0; x.len()],
            d: vec![0.0; nb],
            sum16: vec![0; 2 * nb],
            off32: vec![0.0; nb],
        };
        match scheme {
            Scheme::Q8_0 => {
                for (b, (xs, qs)) in x
                    .chunks_exact(QB)
                    .zip(a.qs.chunks_exact_mut(QB))
                    .enumerate()
                {
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    for (q, &v) in qs.iter_mut().zip(xs) {
                        *q = round_even(v * id) as i8;
                    }
                    a.d[b] = half::f16::from_f32(d).to_f32();
                    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                    a.off32[b] = half::f16::from_f32(sum as f32 * d).to_f32();
                }
            }
            Scheme::Q8K => {
                debug_assert!(k.is_multiple_of(256));
                for (b, (xs, qs)) in x
                    .chunks_exact(256)
                    .zip(a.qs.chunks_exact_mut(256))
                    .enumerate()
                {
                    let (mut amax, mut max) = (0f32, 0f32);
                    for &v in xs {
                        if v.abs() > amax {
                            amax = v.abs();
                            max = v;
                        }
                    }
                    let d = if amax == 0.0 {
                        qs.fill(0);
                        0.0
                    } else {
                        let iscale = -127.0 / max;
                        for (q, &v) in qs.iter_mut().zip(xs) {
                            *q = round_even(iscale * v).min(127) as i8;
                        }
                        1.0 / iscale
                    };
                    for j in 0..8 {
                        let sum: i32 = qs[32 * j..32 * j + 32].iter().map(|&q| q as i32).sum();
                        a.d[8 * b + j] = d;
                        a.off32[8 * b + j] = d * sum as f32;
                    }
                }
            }
        }
        for (s, q) in a.sum16.iter_mut().zip(a.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i32).sum();
        }
        a
    }

    /// Token `t`'s codes, scales, 16-sums and offset sums.
    #[inline]
    pub fn row(&self, t: usize) -> ActRow<'_> {
        let (k, nb) = (self.k, self.k / QB);
        ActRow {
            qs: &self.qs[t * k..(t + 1) * k],
            d: &self.d[t * nb..(t + 1) * nb],
            sum16: &self.sum16[2 * t * nb..2 * (t + 1) * nb],
            off32: &self.off32[t * nb..(t + 1) * nb],
        }
    }
}

/// One token's quantized activations.
#[derive(Debug, Clone, Copy)]
pub struct ActRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub sum16: &'a [i32],
    pub off32: &'a [f32],
}

/// The unpacked shape of a format: group size, whether it has offsets, and the activation
/// scheme it is paired with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub group: usize,
    pub offsets: bool,
    pub scheme: Scheme,
}

/// The layout of a quantized type, or `None` for types that take the f32 path.
pub fn layout(ty: GgmlType) -> Option<Layout> {
    use GgmlType::*;
    // I2_S rows may be 128·odd long, so it cannot use 256-blocks.
    let (group, offsets, scheme) = match ty {
        Q4_0 | Q5_0 | Q8_0 | I2_S => (32, false, Scheme::Q8_0),
        Q4_1 | Q5_1 => (32, true, Scheme::Q8_0),
        TQ1_0 | TQ2_0 => (32, false, Scheme::Q8K),
        Q4_K | Q5_K => (32, true, Scheme::Q8K),
        Q3_K | Q6_K => (16, false, Scheme::Q8K),
        Q2_K => (16, true, Scheme::Q8K),
        _ => return None,
    };
    Some(Layout {
        group,
        offsets,
        scheme,
    })
}

/// One weight row unpacked to `s_g·q + m_g`.
#[derive(Debug, Clone, Default)]
pub struct Unpacked {
    pub q: Vec<i8>,
    pub s: Vec<f32>,
    pub m: Vec<f32>,
}

impl Unpacked {
    fn reset(&mut self, k: usize, l: Layout) {
        self.q.resize(k, 0);
        self.s.resize(k / l.group, 0.0);
        self.m.resize(if l.offsets { k / l.group } else { 0 }, 0.0);
    }

    /// The decoded row (for tests).
    pub fn values(&self, group: usize) -> Vec<f32> {
        self.q
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let g = i / group;
                let v = self.s[g] * q as f32;
                if self.m.is_empty() {
                    v
                } else {
                    v + self.m[g]
                }
            })
            .collect()
    }
}

#[inline]
fn blocks<B: bytemuck::Pod>(src: &[u8]) -> &[B] {
    bytemuck::cast_slice(src)
}

/// binary16 → f32, exact for every input, branch-light and inlinable (the `half` crate's
/// conversion is an out-of-line call per block in the hot loop). Normal and subnormal values:
/// the f16 bits shifted into an f32 exponent/mantissa and rescaled by 2^112.
#[inline(always)]
pub fn f16(b: [u8; 2]) -> f32 {
    let h = u16::from_le_bytes(b) as u32;
    let em = h & 0x7fff;
    let v = if em >= 0x7c00 {
        f32::from_bits((em << 13) | 0x7f80_0000)
    } else {
        f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)
    };
    f32::from_bits(v.to_bits() | ((h & 0x8000) << 16))
}

/// 32 codes: low nibbles of `qs` then high nibbles, minus `bias`.
#[inline(always)]
fn nibbles(qs: &[u8; 16], bias: i8, q: &mut [i8]) {
    let (lo, hi) = q.split_at_mut(16);
    for j in 0..16 {
        lo[j] = (qs[j] & 15) as i8 - bias;
        hi[j] = (qs[j] >> 4) as i8 - bias;
    }
}

/// 32 five-bit codes (Q5_0/Q5_1): nibbles plus bit `e` of `qh` as bit 4, minus `bias`.
#[inline(always)]
fn five_bits(qs: &[u8; 16], qh: [u8; 4], bias: i8, q: &mut [i8]) {
    let qh = u32::from_le_bytes(qh);
    let (lo, hi) = q.split_at_mut(16);
    for j in 0..16 {
        lo[j] = ((qs[j] & 15) | ((((qh >> j) & 1) as u8) << 4)) as i8 - bias;
        hi[j] = ((qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4)) as i8 - bias;
    }
}

/// A 2-bit ternary code to its value, 3 → 0 (formats.md §4).
#[inline(always)]
fn ternary(c: u8) -> i8 {
    c as i8 - 1 - 2 * ((c >> 1) & c & 1) as i8
}

/// Unpacks one packed row of `k` values of type `ty` (`tensor_mult`: the I2_S scale).
/// The caller guarantees `src` is a whole row of `ty` with a [`layout`].
#[inline(always)]
pub fn unpack_row(ty: GgmlType, src: &[u8], k: usize, tensor_mult: f32, u: &mut Unpacked) {
    let l = layout(ty).expect("unpack_row on a type without a q8 layout");
    u.reset(k, l);
    let (q, s, m) = (&mut u.q, &mut u.s, &mut u.m);
    match ty {
        GgmlType::Q4_0 => {
            for ((blk, q), s) in blocks::<BlockQ4_0>(src)
                .iter()
                .zip(q.chunks_exact_mut(32))
                .zip(s.iter_mut())
            {
                *s = f16(blk.d);
                nibbles(&blk.qs, 8, q);
            }
        }
        GgmlType::Q4_1 => {
            for (b, (blk, q)) in blocks::<BlockQ4_1>(src)
                .iter()
                .zip(q.chunks_exact_mut(32))
                .enumerate()
            {
                s[b] = f16(blk.d);
                m[b] = f16(blk.m);
                nibbles(&blk.qs, 0, q);
            }
        }
        GgmlType::Q5_0 => {
            for ((blk, q), s) in blocks::<BlockQ5_0>(src)
                .iter()
                .zip(q.chunks_exact_mut(32))
                .zip(s.iter_mut())
            {
                *s = f16(blk.d);
                five_bits(&blk.qs, blk.qh, 16, q);
            }
        }
        GgmlType::Q5_1 => {
            for (b, (blk, q)) in blocks::<BlockQ5_1>(src)
                .iter()
                .zip(q.chunks_exact_mut(32))
                .enumerate()
            {
                s[b] = f16(blk.d);
                m[b] = f16(blk.m);
                five_bits(&blk.qs, blk.qh, 0, q);
            }
        }
        GgmlType::Q8_0 => {
            for ((blk, q), s) in blocks::<BlockQ8_0>(src)
                .iter()
                .zip(q.chunks_exact_mut(32))
                .zip(s.iter_mut())
            {
                *s = f16(blk.d);
                for (o, &v) in q.iter_mut().zip(&blk.qs) {
                    *o = v as i8;
                }
            }
        }
        GgmlType::Q2_K => {
            for (b, (blk, q)) in blocks::<BlockQ2K>(src)
                .iter()
                .zip(q.chunks_exact_mut(256))
                .enumerate()
            {
                let (d, dmin) = (f16(blk.d), f16(blk.dmin));
                for j in 0..16 {
                    s[16 * b + j] = d * (blk.scales[j] & 15) as f32;
                    m[16 * b + j] = -(dmin * (blk.scales[j] >> 4) as f32);
                }
                // Element 128h + 32sh + l (l < 32) is bits 2sh of qs[32h + l].
                for h in 0..2 {
                    for sh in 0..4 {
                        let o = &mut q[128 * h + 32 * sh..128 * h + 32 * sh + 32];
                        for (l, v) in o.iter_mut().enumerate() {
                            *v = ((blk.qs[32 * h + l] >> (2 * sh)) & 3) as i8;
                        }
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            for (b, (blk, q)) in blocks::<BlockQ3K>(src)
                .iter()
                .zip(q.chunks_exact_mut(256))
                .enumerate()
            {
                let d = f16(blk.d);
                for j in 0..16 {
                    s[16 * b + j] = d * blk.scale(j) as f32;
                }
                for h in 0..2 {
                    for sh in 0..4 {
                        let o = &mut q[128 * h + 32 * sh..128 * h + 32 * sh + 32];
                        for (l, v) in o.iter_mut().enumerate() {
                            let lo2 = ((blk.qs[32 * h + l] >> (2 * sh)) & 3) as i8;
                            let hb = ((blk.hmask[l] >> (4 * h + sh)) & 1) as i8;
                            *v = lo2 - 4 + 4 * hb;
                        }
                    }
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let is5 = ty == GgmlType::Q5_K;
            let step = if is5 { 176 } else { 144 };
            for (b, (raw, q)) in src
                .chunks_exact(step)
                .zip(q.chunks_exact_mut(256))
                .enumerate()
            {
                let (d, dmin, scales, qh, qs): (_, _, &[u8; 12], Option<&[u8; 32]>, &[u8; 128]) =
                    if is5 {
                        let blk: &BlockQ5K = bytemuck::from_bytes(raw);
                        (blk.d, blk.dmin, &blk.scales, Some(&blk.qh), &blk.qs)
                    } else {
                        let blk: &BlockQ4K = bytemuck::from_bytes(raw);
                        (blk.d, blk.dmin, &blk.scales, None, &blk.qs)
                    };
                let (d, dmin) = (f16(d), f16(dmin));
                for j in 0..8 {
                    let (sc, mn) = scale_min_k4(scales, j);
                    s[8 * b + j] = d * sc as f32;
                    m[8 * b + j] = -(dmin * mn as f32);
                }
                for c in 0..4 {
                    let (lo, hi) = q[64 * c..64 * c + 64].split_at_mut(32);
                    let qs = &qs[32 * c..32 * c + 32];
                    for i in 0..32 {
                        lo[i] = (qs[i] & 15) as i8;
                        hi[i] = (qs[i] >> 4) as i8;
                    }
                    if let Some(qh) = qh {
                        for i in 0..32 {
                            lo[i] |= (((qh[i] >> (2 * c)) & 1) << 4) as i8;
                            hi[i] |= (((qh[i] >> (2 * c + 1)) & 1) << 4) as i8;
                        }
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (b, (blk, q)) in blocks::<BlockQ6K>(src)
                .iter()
                .zip(q.chunks_exact_mut(256))
                .enumerate()
            {
                let d = f16(blk.d);
                for j in 0..16 {
                    s[16 * b + j] = d * blk.scales[j] as i8 as f32;
                }
                // llama.cpp dequantize_row_q6_K: per 128 values, l < 32 gives elements
                // l, l+32, l+64, l+96 from ql[l], ql[l+32] (low/high nibbles) and qh[l].
                for h in 0..2 {
                    let ql = &blk.ql[64 * h..64 * h + 64];
                    let qh = &blk.qh[32 * h..32 * h + 32];
                    let o = &mut q[128 * h..128 * h + 128];
                    for l in 0..32 {
                        o[l] = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i8 - 32;
                        o[l + 32] = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                        o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                        o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
            }
        }
        GgmlType::TQ2_0 => {
            for (b, (blk, q)) in blocks::<BlockTQ2_0>(src)
                .iter()
                .zip(q.chunks_exact_mut(256))
                .enumerate()
            {
                s[8 * b..8 * b + 8].fill(f16(blk.d));
                for h in 0..2 {
                    for l2 in 0..4 {
                        let o = &mut q[128 * h + 32 * l2..128 * h + 32 * l2 + 32];
                        for (mm, v) in o.iter_mut().enumerate() {
                            *v = ternary((blk.qs[32 * h + mm] >> (2 * l2)) & 3);
                        }
                    }
                }
            }
        }
        GgmlType::TQ1_0 => {
            for (b, (blk, q)) in blocks::<BlockTQ1_0>(src)
                .iter()
                .zip(q.chunks_exact_mut(256))
                .enumerate()
            {
                s[8 * b..8 * b + 8].fill(f16(blk.d));
                for (o, &t) in q.iter_mut().zip(blk.trits().iter()) {
                    *o = t as i8 - 1;
                }
            }
        }
        GgmlType::I2_S => {
            s.fill(tensor_mult);
            for (chunk, q) in src.chunks_exact(32).zip(q.chunks_exact_mut(128)) {
                for f in 0..4 {
                    for (g, v) in q[32 * f..32 * f + 32].iter_mut().enumerate() {
                        *v = ternary((chunk[g] >> (6 - 2 * f)) & 3);
                    }
                }
            }
        }
        _ => unreachable!("checked by layout"),
    }
}

/// Σ a·b over `N` i8 pairs (N = 16 or 32). Fixed sizes let the compiler fully unroll and
/// vectorize it to widening multiply-adds (`pmaddwd`).
#[inline(always)]
fn idot<const N: usize>(a: &[i8], b: &[i8]) -> i32 {
    let (a, b): (&[i8; N], &[i8; N]) = (a.try_into().unwrap(), b.try_into().unwrap());
    let mut s = 0i32;
    for i in 0..N {
        s += a[i] as i16 as i32 * b[i] as i16 as i32;
    }
    s
}

/// Dot product of an unpacked weight row with one quantized activation row.
#[inline(always)]
pub fn dot(u: &Unpacked, l: Layout, a: ActRow) -> f32 {
    let (qa, da) = (a.qs, a.d);
    let mut acc = 0f32;
    match (l.group, l.offsets) {
        (32, false) => {
            for (b, (wq, aq)) in u.q.chunks_exact(32).zip(qa.chunks_exact(32)).enumerate() {
                acc += da[b] * u.s[b] * idot::<32>(wq, aq) as f32;
            }
        }
        (32, true) => {
            for (b, (wq, aq)) in u.q.chunks_exact(32).zip(qa.chunks_exact(32)).enumerate() {
                acc += da[b] * u.s[b] * idot::<32>(wq, aq) as f32 + u.m[b] * a.off32[b];
            }
        }
        (16, offsets) => {
            for (b, (wq, aq)) in u.q.chunks_exact(32).zip(qa.chunks_exact(32)).enumerate() {
                let lo = u.s[2 * b] * idot::<16>(&wq[..16], &aq[..16]) as f32;
                let hi = u.s[2 * b + 1] * idot::<16>(&wq[16..], &aq[16..]) as f32;
                let mut v = lo + hi;
                if offsets {
                    v += u.m[2 * b] * a.sum16[2 * b] as f32
                        + u.m[2 * b + 1] * a.sum16[2 * b + 1] as f32;
                }
                acc += da[b] * v;
            }
        }
        _ => unreachable!("groups are 16 or 32"),
    }
    acc
}

/// AVX2 version of [`dot`] (llama.cpp's `mul_sum_i8_pairs_float` idiom: `|w|` times
/// `sign(a, w)` with `maddubs`, pairs summed with `madd`, one FMA per block with the combined
/// scale, one horizontal sum per row). Same result as [`dot`] up to f32 summation order.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{ActRow, Layout, Unpacked};
    use crate::quant::kquants::{scale_min_k4, BlockQ4K, BlockQ6K};
    use crate::quant::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
    use crate::quant::GgmlType;
    use std::arch::x86_64::*;

    /// binary16 → f32 with the F16C instruction (same value as [`super::f16`]).
    #[inline(always)]
    unsafe fn h(b: [u8; 2]) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(
            _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32),
        ))
    }

    /// 8 lanes of i32 sums: lane `k` holds `Σ w·a` over elements `4k..4k+3` of the 32.
    #[inline(always)]
    unsafe fn madd32(w: *const i8, a: *const i8) -> __m256i {
        let (w, a) = (
            _mm256_loadu_si256(w as *const __m256i),
            _mm256_loadu_si256(a as *const __m256i),
        );
        // |w| (unsigned) · (a with w's sign): maddubs sums adjacent pairs into i16 without
        // overflow (2·127·127 < 2^15; w = −128 never occurs).
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// [`dot`] for `N` tokens at once: each weight block is loaded and sign-split once and used
    /// for every token (the prefill micro-kernel).
    ///
    /// # Safety
    /// As [`dot`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_n<const N: usize>(u: &Unpacked, l: Layout, a: [ActRow; N]) -> [f32; N] {
        let mut out = if l.group == 32 {
            dot_n_impl::<N, false>(u, &a)
        } else {
            dot_n_impl::<N, true>(u, &a)
        };
        if l.offsets {
            // The offset terms in block order, exactly as `dot` adds them (bit-identical
            // results for every batch size are a tested invariant).
            for (o, r) in out.iter_mut().zip(&a) {
                let mut offs = 0f32;
                for b in 0..u.q.len() / 32 {
                    offs += if l.group == 32 {
                        u.m[b] * r.off32[b]
                    } else {
                        r.d[b]
                            * (u.m[2 * b] * r.sum16[2 * b] as f32
                                + u.m[2 * b + 1] * r.sum16[2 * b + 1] as f32)
                    };
                }
                *o += offs;
            }
        }
        out
    }

    #[inline(always)]
    unsafe fn dot_n_impl<const N: usize, const G16: bool>(
        u: &Unpacked,
        a: &[ActRow; N],
    ) -> [f32; N] {
        let nb = u.q.len() / 32;
        let (wq, ws) = (u.q.as_ptr(), u.s.as_ptr());
        let aq: [*const i8; N] = std::array::from_fn(|j| a[j].qs.as_ptr());
        let ad: [*const f32; N] = std::array::from_fn(|j| a[j].d.as_ptr());
        let mut acc = [_mm256_setzero_ps(); N];
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            let w = _mm256_loadu_si256(wq.add(32 * b) as *const __m256i);
            let aw = _mm256_sign_epi8(w, w);
            let sc = if G16 {
                _mm256_set_m128(_mm_set1_ps(*ws.add(2 * b + 1)), _mm_set1_ps(*ws.add(2 * b)))
            } else {
                _mm256_set1_ps(*ws.add(b))
            };
            for j in 0..N {
                let x = _mm256_loadu_si256(aq[j].add(32 * b) as *const __m256i);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones);
                let scj = _mm256_mul_ps(sc, _mm256_broadcast_ss(&*ad[j].add(b)));
                acc[j] = _mm256_fmadd_ps(scj, _mm256_cvtepi32_ps(p), acc[j]);
            }
        }
        let mut out = [0f32; N];
        for j in 0..N {
            out[j] = hsum(acc[j]);
        }
        out
    }

    /// 32 bytes, one per bit of `qh`: 0xFF where the bit is set (llama.cpp `bytes_from_bits_32`).
    #[inline(always)]
    unsafe fn bytes_from_bits(qh: [u8; 4]) -> __m256i {
        let x = _mm256_set1_epi32(i32::from_le_bytes(qh));
        let shuf = _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        );
        let x = _mm256_shuffle_epi8(x, shuf);
        let bit = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(x, bit), _mm256_set1_epi64x(-1))
    }

    /// 16 packed bytes to 32 nibbles: low nibbles in bytes 0..15, high in 16..31.
    #[inline(always)]
    unsafe fn nibbles(qs: *const u8) -> __m256i {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let m4 = _mm_set1_epi8(15);
        _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16(q, 4), m4),
            _mm_and_si128(q, m4),
        )
    }

    /// Signed weights × activations, 8 lanes of i32.
    #[inline(always)]
    unsafe fn madd_signed(w: __m256i, a: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }

    /// Unsigned weights (< 128) × activations, 8 lanes of i32.
    #[inline(always)]
    unsafe fn madd_unsigned(w: __m256i, a: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
    }

    /// Dot product of one packed row of a 32-block format straight from its bytes (no unpack),
    /// for small batches; `None` for the formats that go through [`super::unpack_row`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `row` must be a whole row of `ty` whose length in
    /// elements equals `a.qs.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_packed(ty: GgmlType, row: &[u8], a: ActRow) -> Option<f32> {
        let aq = a.qs.as_ptr();
        let mut acc = _mm256_setzero_ps();
        let mut offs = 0f32;
        let act = |b: usize| _mm256_loadu_si256(aq.add(32 * b) as *const __m256i);
        match ty {
            GgmlType::Q4_0 => {
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ4_0>(row)
                    .iter()
                    .enumerate()
                {
                    let w = _mm256_sub_epi8(nibbles(blk.qs.as_ptr()), _mm256_set1_epi8(8));
                    let p = _mm256_cvtepi32_ps(madd_signed(w, act(b)));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(h(blk.d) * a.d[b]), p, acc);
                }
            }
            GgmlType::Q4_1 => {
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ4_1>(row)
                    .iter()
                    .enumerate()
                {
                    let p = _mm256_cvtepi32_ps(madd_unsigned(nibbles(blk.qs.as_ptr()), act(b)));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(h(blk.d) * a.d[b]), p, acc);
                    offs += h(blk.m) * a.off32[b];
                }
            }
            GgmlType::Q5_0 => {
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ5_0>(row)
                    .iter()
                    .enumerate()
                {
                    // nibble | (bit ? 0 : 0xF0) is the signed value nibble + 16·bit − 16.
                    let hi = _mm256_andnot_si256(bytes_from_bits(blk.qh), _mm256_set1_epi8(-16));
                    let w = _mm256_or_si256(nibbles(blk.qs.as_ptr()), hi);
                    let p = _mm256_cvtepi32_ps(madd_signed(w, act(b)));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(h(blk.d) * a.d[b]), p, acc);
                }
            }
            GgmlType::Q5_1 => {
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ5_1>(row)
                    .iter()
                    .enumerate()
                {
                    let hi = _mm256_and_si256(bytes_from_bits(blk.qh), _mm256_set1_epi8(16));
                    let w = _mm256_or_si256(nibbles(blk.qs.as_ptr()), hi);
                    let p = _mm256_cvtepi32_ps(madd_unsigned(w, act(b)));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(h(blk.d) * a.d[b]), p, acc);
                    offs += h(blk.m) * a.off32[b];
                }
            }
            GgmlType::Q8_0 => {
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ8_0>(row)
                    .iter()
                    .enumerate()
                {
                    let w = _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i);
                    let p = _mm256_cvtepi32_ps(madd_signed(w, act(b)));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(h(blk.d) * a.d[b]), p, acc);
                }
            }
            GgmlType::Q4_K => {
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ4K>(row).iter().enumerate() {
                    let (d, dmin) = (h(blk.d), h(blk.dmin));
                    for c in 0..4 {
                        let q = _mm256_loadu_si256(blk.qs.as_ptr().add(32 * c) as *const __m256i);
                        let m4 = _mm256_set1_epi8(15);
                        let halves = [
                            _mm256_and_si256(q, m4),
                            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                        ];
                        for (t, w) in halves.into_iter().enumerate() {
                            let (j, ab) = (2 * c + t, 8 * b + 2 * c + t);
                            let (sc, mn) = scale_min_k4(&blk.scales, j);
                            let p = _mm256_cvtepi32_ps(madd_unsigned(w, act(ab)));
                            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc as f32 * a.d[ab]), p, acc);
                            offs -= dmin * mn as f32 * a.off32[ab];
                        }
                    }
                }
            }
            GgmlType::Q6_K => {
                let (m4, m2, k32) = (
                    _mm256_set1_epi8(15),
                    _mm256_set1_epi8(3),
                    _mm256_set1_epi8(32),
                );
                for (b, blk) in bytemuck::cast_slice::<u8, BlockQ6K>(row).iter().enumerate() {
                    let d = h(blk.d);
                    for h in 0..2 {
                        let ql0 = _mm256_loadu_si256(blk.ql.as_ptr().add(64 * h) as *const __m256i);
                        let ql1 =
                            _mm256_loadu_si256(blk.ql.as_ptr().add(64 * h + 32) as *const __m256i);
                        let qh = _mm256_loadu_si256(blk.qh.as_ptr().add(32 * h) as *const __m256i);
                        // llama.cpp dequantize_row_q6_K: elements 32u.. of this half.
                        let hi = |sh: i32| {
                            let v = match sh {
                                0 => qh,
                                2 => _mm256_srli_epi16(qh, 2),
                                4 => _mm256_srli_epi16(qh, 4),
                                _ => _mm256_srli_epi16(qh, 6),
                            };
                            _mm256_slli_epi16(_mm256_and_si256(v, m2), 4)
                        };
                        let ws = [
                            _mm256_or_si256(_mm256_and_si256(ql0, m4), hi(0)),
                            _mm256_or_si256(_mm256_and_si256(ql1, m4), hi(2)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), hi(4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), hi(6)),
                        ];
                        for (u, w) in ws.into_iter().enumerate() {
                            let ab = 8 * b + 4 * h + u;
                            let is = 8 * h + 2 * u;
                            let p =
                                _mm256_cvtepi32_ps(madd_signed(_mm256_sub_epi8(w, k32), act(ab)));
                            // (d·scale)·d_a, the order of the unpacked path.
                            let sc = _mm256_set_m128(
                                _mm_set1_ps(d * blk.scales[is + 1] as i8 as f32),
                                _mm_set1_ps(d * blk.scales[is] as i8 as f32),
                            );
                            let sc = _mm256_mul_ps(sc, _mm256_set1_ps(a.d[ab]));
                            acc = _mm256_fmadd_ps(sc, p, acc);
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(hsum(acc) + offs)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `u` and `a` must have the lengths [`super::dot`] needs.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(u: &Unpacked, l: Layout, a: ActRow) -> f32 {
        let nb = u.q.len() / 32;
        debug_assert!(a.qs.len() >= nb * 32 && a.d.len() >= nb);
        let (wq, aq) = (u.q.as_ptr(), a.qs.as_ptr());
        let mut acc = _mm256_setzero_ps();
        let mut offs = 0f32;
        match (l.group, l.offsets) {
            (32, offsets) => {
                for b in 0..nb {
                    let p = _mm256_cvtepi32_ps(madd32(wq.add(32 * b), aq.add(32 * b)));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(a.d[b] * u.s[b]), p, acc);
                    if offsets {
                        offs += u.m[b] * a.off32[b];
                    }
                }
            }
            (_, offsets) => {
                for b in 0..nb {
                    let p = _mm256_cvtepi32_ps(madd32(wq.add(32 * b), aq.add(32 * b)));
                    let sc = _mm256_set_m128(_mm_set1_ps(u.s[2 * b + 1]), _mm_set1_ps(u.s[2 * b]));
                    let sc = _mm256_mul_ps(sc, _mm256_set1_ps(a.d[b]));
                    acc = _mm256_fmadd_ps(sc, p, acc);
                    if offsets {
                        offs += a.d[b]
                            * (u.m[2 * b] * a.sum16[2 * b] as f32
                                + u.m[2 * b + 1] * a.sum16[2 * b + 1] as f32);
                    }
                }
            }
        }
        hsum(acc) + offs
    }
}

/// The scalar reference of [`dot`]: decoded weights times decoded activations, in f64.
pub fn dot_reference(u: &Unpacked, l: Layout, a: ActRow) -> f64 {
    u.values(l.group)
        .iter()
        .enumerate()
        .map(|(i, &w)| w as f64 * a.qs[i] as f64 * a.d[i / QB] as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::TensorView;

    /// xorshift64* in [-1, 1).
    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed.max(1);
        move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    #[test]
    fn f16_conversion_is_exact() {
        for bits in 0..=u16::MAX {
            let want = crate::quant::f16_to_f32(bits.to_le_bytes());
            let got = f16(bits.to_le_bytes());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#x}"
            );
        }
        for c in 0..4u8 {
            assert_eq!(ternary(c), crate::quant::ternary::code_value(c));
        }
    }

    #[test]
    fn activation_quantization_round_trips() {
        let mut r = rng(7);
        let x: Vec<f32> = (0..512).map(|_| r() * 3.0).collect();
        for scheme in [Scheme::Q8_0, Scheme::Q8K] {
            let a = Q8Acts::quantize(&x, 512, scheme);
            for (i, &v) in x.iter().enumerate() {
                let back = a.qs[i] as f32 * a.d[i / 32];
                // f16 rounding of the Q8_0 scale adds up to 2^-11 relative; the Q8_K scale is
                // negative when the largest value is positive (ggml: iscale = −127/max).
                assert!(
                    (back - v).abs() <= a.d[i / 32].abs() * 0.5 + 3.0 * 1e-3,
                    "{scheme:?} {i}"
                );
            }
            assert_eq!(
                a.sum16[0],
                a.qs[..16].iter().map(|&q| q as i32).sum::<i32>()
            );
            let z = Q8Acts::quantize(&[0.0; 256], 256, scheme);
            assert!(z.qs.iter().all(|&q| q == 0) && z.d[0] == 0.0);
        }
        // Ties go to even, as ggml's AVX2 rounding: 2.5·(127/127) → 2.
        let mut t = [0f32; 32];
        t[0] = 127.0;
        t[1] = 2.5;
        t[2] = -3.5;
        let a = Q8Acts::quantize(&t, 32, Scheme::Q8_0);
        assert_eq!(&a.qs[..3], &[127, 2, -4]);
    }

    /// Random bytes are valid blocks for every format here except for f16 fields that decode to
    /// NaN/inf; patch every f16 to a small finite value.
    fn random_row(ty: GgmlType, k: usize, seed: u64) -> Vec<u8> {
        let n = ty.row_bytes("t", k as u64).unwrap() as usize
            + if ty == GgmlType::I2_S { 32 } else { 0 };
        let mut s = seed;
        let mut bytes: Vec<u8> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect();
        let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
        let bsz = ty.type_size() as usize;
        let patch: &[usize] = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::TQ2_0 => &[64],
            GgmlType::TQ1_0 => &[52],
            _ => &[],
        };
        if ty == GgmlType::I2_S {
            let at = k / 4;
            bytes[at..at + 4].copy_from_slice(&0.75f32.to_le_bytes());
        } else {
            for (bi, blk) in bytes.chunks_exact_mut(bsz).enumerate() {
                for &o in patch {
                    let v = 0.01 + 0.001 * (bi % 7) as f32;
                    blk[o..o + 2].copy_from_slice(&f16(if o == patch[0] { v } else { -v }));
                }
            }
        }
        bytes
    }

    #[test]
    fn unpack_matches_the_reference_decoder_and_dot_matches_scalar() {
        use GgmlType::*;
        let k = 512;
        for ty in [
            Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0, I2_S,
        ] {
            let bytes = random_row(ty, k, ty as u64 + 1);
            let v = TensorView::new("w", ty, &[k as u64, 1], &bytes).unwrap();
            let want = v.dequantize().unwrap();
            let l = layout(ty).unwrap();
            let mut u = Unpacked::default();
            let mult = v.i2s_scale().unwrap_or(1.0);
            unpack_row(ty, v.row_bytes(0), k, mult, &mut u);
            let got = u.values(l.group);
            for i in 0..k {
                assert_eq!(got[i].to_bits(), want[i].to_bits(), "{ty} element {i}");
            }
            let mut r = rng(ty as u64);
            let x: Vec<f32> = (0..k).map(|_| r()).collect();
            let a = Q8Acts::quantize(&x, k, l.scheme);
            let fast = dot(&u, l, a.row(0)) as f64;
            let slow = dot_reference(&u, l, a.row(0));
            let scale: f64 = want.iter().map(|w| w.abs() as f64).sum::<f64>().max(1e-3);
            // Q8_1's offset sum is f16-rounded, as in ggml.
            let tol = if l.offsets && l.scheme == Scheme::Q8_0 {
                2e-3
            } else {
                1e-5
            };
            assert!((fast - slow).abs() <= tol * scale, "{ty}: {fast} vs {slow}");
            #[cfg(target_arch = "x86_64")]
            if crate::backend::cpu::has_avx2() {
                // SAFETY: features detected; lengths as for `dot`.
                let simd = unsafe { avx2::dot(&u, l, a.row(0)) } as f64;
                assert!(
                    (simd - fast).abs() <= 1e-5 * scale,
                    "{ty}: avx2 {simd} vs {fast}"
                );
                // SAFETY: as above.
                let four = unsafe { avx2::dot_n::<4>(&u, l, [a.row(0); 4]) };
                for f in four {
                    assert!(
                        (f as f64 - fast).abs() <= 1e-5 * scale,
                        "{ty}: dot_n {f} vs {fast}"
                    );
                }
                // SAFETY: as above; the row is whole.
                if let Some(p) = unsafe { avx2::dot_packed(ty, v.row_bytes(0), a.row(0)) } {
                    let p = p as f64;
                    assert!(
                        (p - fast).abs() <= 1e-5 * scale,
                        "{ty}: packed {p} vs {fast}"
                    );
                }
            }
            // And against the f32 activations: the int8 rounding error only.
            let exact: f64 = want
                .iter()
                .zip(&x)
                .map(|(&w, &xv)| w as f64 * xv as f64)
                .sum();
            assert!(
                (fast - exact).abs() <= 2e-2 * scale,
                "{ty}: {fast} vs {exact}"
            );
        }
    }
}

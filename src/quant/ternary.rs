//! Ternary formats TQ1_0, TQ2_0 (upstream ggml) and I2_S (BitNet fork): decoders, dot products
//! and reference quantizers (formats.md §4.1–4.3).
//!
//! The 2-bit formats store `code = t + 1` (0 → −1, 1 → 0, 2 → +1). Code 3 is never written and
//! decodes to 0 here, unlike llama.cpp's TQ2_0 decoder (which yields +2).
//!
//! - TQ2_0 (66 B / 256): `qs[64]` @0, `d` (f16) @64. Element `128h + 32l + m` is bits `2l..2l+1`
//!   of `qs[32h + m]` (LSB-first).
//! - TQ1_0 (54 B / 256): `qs[48]` @0, `qh[4]` @48, `d` @52; five trits per byte in base 3, first
//!   element most significant, stored as `ceil(q·256/243)`; the qh bytes hold four trits shifted up
//!   one trit. Trit `n` of byte `b` is `((b·3ⁿ) mod 256)·3 >> 8`.
//! - I2_S (whole tensor, `n/4 + 32` B): 128-element chunks of 32 bytes; byte `g` of chunk `c`
//!   holds elements `128c + {g, 32+g, 64+g, 96+g}` MSB-first (bits 7:6 first); then a 32-byte
//!   trailer whose first f32 is the one scale of the tensor.
//!
//! The quantizers are the reference ones (absmax scale, `round(x/scale)` to −1..1); they exist for
//! tests and fixtures, not for converting non-ternary models.

use super::{f16_to_f32, Block, GgmlType};
use bytemuck::{Pod, Zeroable};
use std::mem::size_of;

/// Values per TQ block.
pub const QK_K: usize = 256;
/// Elements per I2_S chunk and bytes per chunk.
pub const I2S_CHUNK: usize = 128;
pub const I2S_CHUNK_BYTES: usize = 32;
/// Bytes after the I2_S codes: one f32 scale, then padding.
pub const I2S_TRAILER: usize = 32;

/// The ternary value of a 2-bit code: `{0: −1, 1: 0, 2: +1, 3: 0}`.
#[inline]
pub fn code_value(code: u8) -> i8 {
    const T: [i8; 4] = [-1, 0, 1, 0];
    T[(code & 3) as usize]
}

/// TQ2_0: 256 two-bit codes then the f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockTQ2_0 {
    pub qs: [u8; 64],
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockTQ2_0>() == 66);

impl BlockTQ2_0 {
    /// The code (0..3) of element `e`.
    #[inline]
    pub fn code(&self, e: usize) -> u8 {
        let (h, l, m) = (e / 128, (e / 32) % 4, e % 32);
        (self.qs[32 * h + m] >> (2 * l)) & 3
    }
}

impl Block for BlockTQ2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (e, o) in out[..QK_K].iter_mut().enumerate() {
            *o = code_value(self.code(e)) as f32 * d;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..QK_K]
            .iter()
            .enumerate()
            .map(|(e, &xv)| code_value(self.code(e)) as f32 * xv)
            .sum();
        f16_to_f32(self.d) * s
    }
}

/// TQ1_0: 240 trits in `qs` (five per byte), 16 in `qh` (four per byte), then the f16 scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockTQ1_0 {
    pub qs: [u8; 48],
    pub qh: [u8; 4],
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockTQ1_0>() == 54);

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Trit `n` (0..4, 0 = most significant) of a TQ1_0 byte: `((b·3ⁿ) mod 256)·3 >> 8`, in 0..2.
#[inline]
pub fn tq1_trit(b: u8, n: usize) -> u8 {
    ((b.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as u8
}

impl BlockTQ1_0 {
    /// All 256 trits (0..2, i.e. codes) of the block in element order.
    pub fn trits(&self) -> [u8; QK_K] {
        let mut t = [0u8; QK_K];
        for (e, v) in t.iter_mut().enumerate() {
            *v = match e {
                0..160 => tq1_trit(self.qs[e % 32], e / 32),
                160..240 => tq1_trit(self.qs[32 + (e - 160) % 16], (e - 160) / 16),
                _ => tq1_trit(self.qh[(e - 240) % 4], (e - 240) / 4),
            };
        }
        t
    }
}

impl Block for BlockTQ1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &t) in out[..QK_K].iter_mut().zip(&self.trits()) {
            *o = (t as i32 - 1) as f32 * d;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..QK_K]
            .iter()
            .zip(&self.trits())
            .map(|(&xv, &t)| (t as i32 - 1) as f32 * xv)
            .sum();
        f16_to_f32(self.d) * s
    }
}

/// One I2_S chunk: 128 codes, MSB-first. I2_S has no per-block scale; see [`i2s_dequantize_row`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ChunkI2S {
    pub qs: [u8; 32],
}
const _: () = assert!(size_of::<ChunkI2S>() == I2S_CHUNK_BYTES);

impl ChunkI2S {
    /// The code (0..3) of element `e` (0..127): byte `e % 32`, field `e / 32` counted from bit 7.
    #[inline]
    pub fn code(&self, e: usize) -> u8 {
        (self.qs[e % 32] >> (6 - 2 * (e / 32))) & 3
    }

    /// Decode the chunk times the tensor scale.
    pub fn dequantize(&self, scale: f32, out: &mut [f32]) {
        for (e, o) in out[..I2S_CHUNK].iter_mut().enumerate() {
            *o = code_value(self.code(e)) as f32 * scale;
        }
    }

    /// `Σ t·x` over the chunk, without the tensor scale.
    pub fn vec_dot_unscaled(&self, x: &[f32]) -> f32 {
        x[..I2S_CHUNK]
            .iter()
            .enumerate()
            .map(|(e, &xv)| code_value(self.code(e)) as f32 * xv)
            .sum()
    }
}

/// Decode one I2_S row of packed codes (`src.len() * 4 == out.len()`, a multiple of 128).
pub fn i2s_dequantize_row(src: &[u8], scale: f32, out: &mut [f32]) {
    let chunks: &[ChunkI2S] = bytemuck::cast_slice(src);
    assert_eq!(out.len(), chunks.len() * I2S_CHUNK, "i2_s: output length");
    for (c, o) in chunks.iter().zip(out.chunks_exact_mut(I2S_CHUNK)) {
        c.dequantize(scale, o);
    }
}

/// Dot product of one I2_S row of packed codes with `x` (`x.len() == src.len() * 4`).
pub fn i2s_vec_dot_row(src: &[u8], scale: f32, x: &[f32]) -> f32 {
    let chunks: &[ChunkI2S] = bytemuck::cast_slice(src);
    assert_eq!(x.len(), chunks.len() * I2S_CHUNK, "i2_s: activation length");
    let s: f32 = chunks
        .iter()
        .zip(x.chunks_exact(I2S_CHUNK))
        .map(|(c, xs)| c.vec_dot_unscaled(xs))
        .sum();
    s * scale
}

/// Round half away from zero (C `roundf`, gguf-py `np_roundf`).
fn round_away(v: f32) -> f32 {
    v.abs().round().copysign(v)
}

/// Ternary codes (0..2) of `x` against `scale`: `round(x / scale)` clamped to −1..1, plus 1.
fn ternary_codes(x: &[f32], scale: f32) -> impl Iterator<Item = u8> + '_ {
    let inv = if scale == 0.0 { 0.0 } else { 1.0 / scale };
    x.iter()
        .map(move |&v| (round_away(v * inv).clamp(-1.0, 1.0) as i8 + 1) as u8)
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Reference TQ2_0 quantizer (as gguf-py): per 256 values, `d = max|x|` (f16), codes
/// `round(x/d) + 1`. Panics unless `x.len()` is a multiple of 256.
pub fn quantize_tq2_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(
        x.len() % QK_K,
        0,
        "tq2_0: {} values are not whole blocks of 256",
        x.len()
    );
    let mut out = Vec::with_capacity(x.len() / QK_K * size_of::<BlockTQ2_0>());
    for xb in x.chunks_exact(QK_K) {
        let d = absmax(xb);
        let mut b = BlockTQ2_0::zeroed();
        for (e, c) in ternary_codes(xb, d).enumerate() {
            let (h, l, m) = (e / 128, (e / 32) % 4, e % 32);
            b.qs[32 * h + m] |= c << (2 * l);
        }
        b.d = half::f16::from_f32(d).to_bits().to_le_bytes();
        out.extend_from_slice(bytemuck::bytes_of(&b));
    }
    out
}

/// Encode 5 trits (most significant first) as a TQ1_0 byte `ceil(q·256/243)`.
fn tq1_byte(q: u16) -> u8 {
    ((q * 256).div_ceil(243)) as u8
}

/// Reference TQ1_0 quantizer (as gguf-py): same scale and trits as [`quantize_tq2_0`], packed in
/// base 3. Panics unless `x.len()` is a multiple of 256.
pub fn quantize_tq1_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(
        x.len() % QK_K,
        0,
        "tq1_0: {} values are not whole blocks of 256",
        x.len()
    );
    let mut out = Vec::with_capacity(x.len() / QK_K * size_of::<BlockTQ1_0>());
    for xb in x.chunks_exact(QK_K) {
        let d = absmax(xb);
        let t: Vec<u16> = ternary_codes(xb, d).map(u16::from).collect();
        let mut b = BlockTQ1_0::zeroed();
        // Σ trit_n · 3^(4−n) over the n-th element group; `stride` elements apart.
        let pack = |base: usize, stride: usize, m: usize, ntrits: usize| {
            (0..ntrits).fold(0u16, |q, n| q * 3 + t[base + stride * n + m])
        };
        for m in 0..32 {
            b.qs[m] = tq1_byte(pack(0, 32, m, 5));
        }
        for m in 0..16 {
            b.qs[32 + m] = tq1_byte(pack(160, 16, m, 5));
        }
        for m in 0..4 {
            b.qh[m] = tq1_byte(pack(240, 4, m, 4) * 3);
        }
        b.d = half::f16::from_f32(d).to_bits().to_le_bytes();
        out.extend_from_slice(bytemuck::bytes_of(&b));
    }
    out
}

/// Reference I2_S writer (formats.md §4.3): one scale `s = max|x|` for the whole tensor, codes
/// `round(x/s) + 1`, 128-element chunks MSB-first, then the 32-byte trailer (`s` as f32, zeros).
/// `x` is the row-major tensor; its length must be a multiple of 128 (rows of a multiple of 128
/// columns), else this panics.
pub fn quantize_i2_s(x: &[f32]) -> Vec<u8> {
    assert_eq!(
        x.len() % I2S_CHUNK,
        0,
        "i2_s: {} values are not whole chunks of 128",
        x.len()
    );
    let s = absmax(x);
    let mut out = vec![0u8; x.len() / 4 + I2S_TRAILER];
    for (e, c) in ternary_codes(x, s).enumerate() {
        let (chunk, within) = (e / I2S_CHUNK, e % I2S_CHUNK);
        out[chunk * I2S_CHUNK_BYTES + within % 32] |= c << (6 - 2 * (within / 32));
    }
    let at = x.len() / 4;
    out[at..at + 4].copy_from_slice(&s.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All 243 five-trit values: the encoded byte decodes to the base-3 digits, most significant
    /// first; and the 81 four-trit qh values shifted up one trit.
    #[test]
    fn tq1_byte_decode_table() {
        let mut seen = std::collections::HashSet::new();
        for q in 0u16..243 {
            let b = tq1_byte(q);
            assert!(seen.insert(b), "byte {b} used twice");
            for n in 0..5 {
                let want = (q / 3u16.pow(4 - n as u32)) % 3;
                assert_eq!(tq1_trit(b, n) as u16, want, "q {q} byte {b:#04x} trit {n}");
            }
        }
        for q in 0u16..81 {
            let b = tq1_byte(q * 3);
            for n in 0..4 {
                let want = (q / 3u16.pow(3 - n as u32)) % 3;
                assert_eq!(tq1_trit(b, n) as u16, want, "qh q {q} trit {n}");
            }
        }
        // Every byte, canonical or not, decodes to trits in 0..2.
        for b in 0..=255u8 {
            assert!((0..5).all(|n| tq1_trit(b, n) <= 2));
        }
    }

    /// The single-byte vectors of testing.md §2.3, LSB-first (TQ2_0) and MSB-first (I2_S).
    #[test]
    fn single_byte_vectors() {
        let cases: [(u8, [i8; 4]); 4] = [
            (0x00, [-1; 4]),
            (0x55, [0; 4]),
            (0xAA, [1; 4]),
            (0x24, [-1, 0, 1, -1]),
        ];
        for (byte, lsb_first) in cases {
            let mut b = BlockTQ2_0::zeroed();
            b.qs[5] = byte;
            b.d = 0x3c00u16.to_le_bytes();
            let mut out = [0f32; 256];
            b.dequantize(&mut out);
            let got = [out[5], out[37], out[69], out[101]];
            assert_eq!(got, lsb_first.map(f32::from), "tq2_0 {byte:#04x}");

            let mut c = ChunkI2S::zeroed();
            c.qs[5] = byte;
            let mut out = [0f32; 128];
            c.dequantize(1.0, &mut out);
            let got = [out[101], out[69], out[37], out[5]];
            assert_eq!(got, lsb_first.map(f32::from), "i2_s {byte:#04x}");
        }
    }

    #[test]
    fn code_three_decodes_to_zero() {
        let mut b = BlockTQ2_0 {
            qs: [0xff; 64],
            d: 0x4000u16.to_le_bytes(),
        };
        let mut out = [1f32; 256];
        b.dequantize(&mut out);
        assert!(out.iter().all(|&v| v == 0.0));
        assert_eq!(b.vec_dot(&[1.0; 256]), 0.0);
        b.qs = [0b11_10_01_00; 64];
        b.dequantize(&mut out);
        assert_eq!((out[0], out[32], out[64], out[96]), (-2.0, 0.0, 2.0, 0.0));
        let c = ChunkI2S { qs: [0xff; 32] };
        let mut out = [1f32; 128];
        c.dequantize(3.0, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn quantizers_round_trip_ternary_values() {
        let s = half::f16::from_f32(0.37).to_f32();
        let t: Vec<f32> = (0..512)
            .map(|i| ((i * 7 + i / 3) % 3) as f32 - 1.0)
            .collect();
        let x: Vec<f32> = t.iter().map(|v| v * s).collect();
        let mut out = vec![0f32; 512];
        let tq2 = quantize_tq2_0(&x);
        super::super::dequantize_blocks::<BlockTQ2_0>(bytemuck::cast_slice(&tq2), &mut out);
        assert_eq!(out, x);
        let tq1 = quantize_tq1_0(&x);
        super::super::dequantize_blocks::<BlockTQ1_0>(bytemuck::cast_slice(&tq1), &mut out);
        assert_eq!(out, x);
        let i2 = quantize_i2_s(&x);
        assert_eq!(i2.len(), 512 / 4 + 32);
        assert_eq!(f32::from_le_bytes(i2[128..132].try_into().unwrap()), s);
        i2s_dequantize_row(&i2[..128], s, &mut out);
        assert_eq!(out, x);
    }
}

//! T2R, the canonical ternary layout shared by the WGSL kernels and the wasm SIMD path
//! (formats.md §5.2), and the reference repack of TQ2_0, TQ1_0 and I2_S into it.
//!
//! For a matrix of `R = rows` rows and `K = k` columns (`K` a multiple of 128):
//! - `K_pad = roundup(K, 256)`; pad columns hold code 1 (value 0); rows are not padded.
//! - **codes** (`Vec<u32>`, 16 codes per word): row `r` is words `[r·K_pad/16, (r+1)·K_pad/16)`.
//!   A row is a run of 128-column chunks of 8 words (32 bytes). In chunk `q`, byte `j` (byte
//!   `j % 4` of word `j / 4`, little-endian) holds in bits `2l..2l+1` the code of column
//!   `128q + 32l + j`, l = 0..3. That is TQ2_0's `qs` order: a TQ2_0 block's 64 bytes are one
//!   256-column T2R block verbatim. Codes are `t + 1` and always 0..2: a stray code 3 in a source
//!   (which decodes to 0) is rewritten to 1 at repack, so kernels may use `code − 1` directly.
//! - **scales** (`Vec<u32>`): one f16 per (row, 256-column block), row-major `[R][K_pad/256]`, two
//!   per word, element `i` in bits `16·(i % 2)` of word `i / 2` (an odd count leaves the top half
//!   of the last word zero).
//! - **tensor_mult**: one f32 for the whole matrix (the I2_S trailer scale; 1.0 otherwise).
//! - Decode: `w[r][c] = (code − 1) · scale[r][c / 256] · tensor_mult`, evaluated in that order,
//!   which reproduces each source format's own decode bit for bit.
//!
//! Repack: TQ2_0 copies `qs` and `d`; TQ1_0 decodes its trits and re-encodes them as codes;
//! I2_S reverses the four 2-bit fields of each byte (MSB-first → LSB-first), appends one chunk of
//! code 1 per row when `K % 256 = 128`, sets every block scale to 1.0 (f16 0x3C00) and takes the
//! trailer f32 as `tensor_mult`. The ruvllm BITNET_T158 repack (§4.4) is not implemented here.

use super::ternary::{BlockTQ1_0, BlockTQ2_0};
use super::{f16_to_f32, shape_err, GgmlType, TensorView};
use crate::error::Result;

/// Columns per scale block.
pub const T2R_BLOCK: usize = 256;
/// Columns per chunk (8 words).
pub const T2R_CHUNK: usize = 128;
/// A 32-bit word of codes that are all 1 (value 0): the padding pattern.
pub const PAD_WORD: u32 = 0x5555_5555;
/// f16 1.0, the block scale of repacked I2_S.
pub const F16_ONE: u16 = 0x3c00;

/// A ternary matrix in T2R layout (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct T2r {
    pub rows: usize,
    pub k: usize,
    pub k_pad: usize,
    pub codes: Vec<u32>,
    pub scales: Vec<u32>,
    pub tensor_mult: f32,
}

/// Rewrite every 2-bit field equal to 3 as 1 (both decode to 0).
#[inline]
fn canonical(b: u8) -> u8 {
    let both = (b >> 1) & b & 0x55; // low bit of each field that is 0b11
    b ^ (both << 1)
}

/// Reverse the order of the four 2-bit fields of a byte (I2_S MSB-first → T2R LSB-first).
#[inline]
fn reverse_pairs(b: u8) -> u8 {
    (b >> 6) | ((b >> 2) & 0x0c) | ((b << 2) & 0x30) | (b << 6)
}

impl T2r {
    /// Words of codes per row.
    pub fn row_words(&self) -> usize {
        self.k_pad / 16
    }

    /// Scale blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        self.k_pad / T2R_BLOCK
    }

    /// The code words of row `r`. Panics if `r >= rows`.
    pub fn row_codes(&self, r: usize) -> &[u32] {
        assert!(
            r < self.rows,
            "t2r: row {r} out of range ({} rows)",
            self.rows
        );
        &self.codes[r * self.row_words()..(r + 1) * self.row_words()]
    }

    /// The code buffer as bytes (little-endian words), ready for upload.
    pub fn code_bytes(&self) -> Vec<u8> {
        self.codes.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The f16 bits of the scale of block `b` of row `r`.
    pub fn scale_bits(&self, r: usize, b: usize) -> u16 {
        let i = r * self.blocks_per_row() + b;
        (self.scales[i / 2] >> (16 * (i % 2))) as u16
    }

    /// The code (0..3) of column `c` of row `r` (pad columns included).
    #[inline]
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let (q, l, j) = (c / T2R_CHUNK, (c / 32) % 4, c % 32);
        let word = self.codes[r * self.row_words() + q * 8 + j / 4];
        ((word >> (8 * (j % 4) + 2 * l)) & 3) as u8
    }

    /// An all-zero matrix (every code 1, every scale 0) to be filled in.
    fn empty(rows: usize, k: usize, name: &str) -> Result<T2r> {
        let k_pad = k.div_ceil(T2R_BLOCK) * T2R_BLOCK;
        let too_big = || shape_err(name, format!("{rows}×{k} is too large for a T2R repack"));
        let words = rows.checked_mul(k_pad / 16).ok_or_else(too_big)?;
        let nscales = rows.checked_mul(k_pad / T2R_BLOCK).ok_or_else(too_big)?;
        Ok(T2r {
            rows,
            k,
            k_pad,
            codes: vec![PAD_WORD; words],
            scales: vec![0; nscales.div_ceil(2)],
            tensor_mult: 1.0,
        })
    }

    fn set_scale_bits(&mut self, r: usize, b: usize, bits: u16) {
        let i = r * self.blocks_per_row() + b;
        let shift = 16 * (i % 2);
        self.scales[i / 2] = (self.scales[i / 2] & !(0xffff << shift)) | ((bits as u32) << shift);
    }

    /// Store 64 code bytes (one 256-column block, T2R/TQ2_0 order) at block `b` of row `r`.
    fn set_block_codes(&mut self, r: usize, b: usize, qs: &[u8]) {
        let at = r * self.row_words() + b * 16;
        for (w, q) in self.codes[at..at + qs.len() / 4]
            .iter_mut()
            .zip(qs.chunks_exact(4))
        {
            *w = u32::from_le_bytes([
                canonical(q[0]),
                canonical(q[1]),
                canonical(q[2]),
                canonical(q[3]),
            ]);
        }
    }

    /// Repack a TQ2_0, TQ1_0 or I2_S tensor (rows = product of `ne[1..]`, k = `ne[0]`).
    /// Any other type is a [`crate::error::QuantError::Shape`] error naming the tensor.
    pub fn from_tensor(t: &TensorView) -> Result<T2r> {
        let (rows, k) = (t.nrows(), t.ncols());
        let mut m = T2r::empty(rows, k, t.name())?;
        match t.ty() {
            GgmlType::TQ2_0 => {
                for r in 0..rows {
                    let blocks: &[BlockTQ2_0] = bytemuck::cast_slice(t.row_bytes(r));
                    for (b, blk) in blocks.iter().enumerate() {
                        m.set_block_codes(r, b, &blk.qs);
                        m.set_scale_bits(r, b, u16::from_le_bytes(blk.d));
                    }
                }
            }
            GgmlType::TQ1_0 => {
                for r in 0..rows {
                    let blocks: &[BlockTQ1_0] = bytemuck::cast_slice(t.row_bytes(r));
                    for (b, blk) in blocks.iter().enumerate() {
                        let trits = blk.trits();
                        let mut qs = [0u8; 64];
                        for (e, &code) in trits.iter().enumerate() {
                            let (h, l, j) = (e / 128, (e / 32) % 4, e % 32);
                            qs[32 * h + j] |= code << (2 * l);
                        }
                        m.set_block_codes(r, b, &qs);
                        m.set_scale_bits(r, b, u16::from_le_bytes(blk.d));
                    }
                }
            }
            GgmlType::I2_S => {
                m.tensor_mult = t.i2s_scale().expect("I2_S view has a trailer");
                let row_words = m.row_words();
                for r in 0..rows {
                    // Whole 128-column chunks are 8 words; a row with K % 256 = 128 keeps its
                    // last chunk of PAD_WORD.
                    let dst = &mut m.codes[r * row_words..r * row_words + k / 16];
                    for (w, q) in dst.iter_mut().zip(t.row_bytes(r).chunks_exact(4)) {
                        *w = u32::from_le_bytes(
                            [q[0], q[1], q[2], q[3]].map(|b| canonical(reverse_pairs(b))),
                        );
                    }
                    for b in 0..m.blocks_per_row() {
                        m.set_scale_bits(r, b, F16_ONE);
                    }
                }
            }
            other => {
                return Err(shape_err(
                    t.name(),
                    format!("{other} is not a ternary type; T2R needs TQ1_0, TQ2_0 or I2_S"),
                ))
            }
        }
        Ok(m)
    }

    /// Decode row `r` into `out` (`out.len() == k`); panics if `r >= rows`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if out.len() != self.k {
            return Err(shape_err(
                "(t2r)",
                format!("output has {} elements, rows have {}", out.len(), self.k),
            ));
        }
        assert!(
            r < self.rows,
            "t2r: row {r} out of range ({} rows)",
            self.rows
        );
        for (b, o) in out.chunks_mut(T2R_BLOCK).enumerate() {
            let s = f16_to_f32(self.scale_bits(r, b).to_le_bytes());
            for (i, v) in o.iter_mut().enumerate() {
                let t = super::ternary::code_value(self.code(r, b * T2R_BLOCK + i));
                *v = t as f32 * s * self.tensor_mult;
            }
        }
        Ok(())
    }

    /// Dot product of row `r` with `x` (`x.len() == k`); panics if `r >= rows`. Per block,
    /// `scale · (Σ_{t=+1} x − Σ_{t=−1} x)`, summed in f32, times `tensor_mult`.
    pub fn dot_row(&self, r: usize, x: &[f32]) -> Result<f32> {
        if x.len() != self.k {
            return Err(shape_err(
                "(t2r)",
                format!("activation has {} elements, rows have {}", x.len(), self.k),
            ));
        }
        assert!(
            r < self.rows,
            "t2r: row {r} out of range ({} rows)",
            self.rows
        );
        let mut acc = 0f32;
        for (b, xs) in x.chunks(T2R_BLOCK).enumerate() {
            let s = f16_to_f32(self.scale_bits(r, b).to_le_bytes());
            let mut sb = 0f32;
            for (i, &xv) in xs.iter().enumerate() {
                match self.code(r, b * T2R_BLOCK + i) {
                    0 => sb -= xv,
                    2 => sb += xv,
                    _ => {}
                }
            }
            acc += s * sb;
        }
        Ok(acc * self.tensor_mult)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ternary::{quantize_i2_s, quantize_tq1_0, quantize_tq2_0};
    use super::*;

    /// A small xorshift generator (tests only).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        /// A ternary value with a zero probability of about 1/3.
        fn trit(&mut self) -> f32 {
            (self.next() % 3) as f32 - 1.0
        }
    }

    /// Random ternary matrix `t` times per-row f16-exact scales, so that every block of the TQ
    /// formats gets a scale equal to its row scale (when the block is not all zero).
    fn ternary_matrix(rng: &mut Rng, rows: usize, k: usize, per_row_scale: bool) -> Vec<f32> {
        let fixed = half::f16::from_f32(0.37).to_f32();
        let mut x = Vec::with_capacity(rows * k);
        for _ in 0..rows {
            let s = if per_row_scale {
                half::f16::from_f32(0.01 + rng.f32().abs()).to_f32()
            } else {
                fixed
            };
            x.extend((0..k).map(|_| rng.trit() * s));
        }
        x
    }

    fn check_round_trip(ty: GgmlType, data: &[u8], rows: usize, k: usize) -> T2r {
        let view = TensorView::new("w", ty, &[k as u64, rows as u64], data).unwrap();
        let m = T2r::from_tensor(&view).unwrap();
        assert_eq!((m.rows, m.k, m.k_pad), (rows, k, k.div_ceil(256) * 256));
        assert_eq!(m.codes.len(), rows * m.k_pad / 16);
        assert_eq!(m.scales.len(), (rows * m.k_pad / 256).div_ceil(2));
        let (mut want, mut got) = (vec![0f32; k], vec![0f32; k]);
        let mut rng = Rng(0x5eed ^ (rows * 1000 + k) as u64);
        let x: Vec<f32> = (0..k).map(|_| rng.f32()).collect();
        for r in 0..rows {
            view.dequantize_row(r, &mut want).unwrap();
            m.dequantize_row(r, &mut got).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty} rows {rows} k {k} row {r}"
            );
            // Pad columns hold code 1.
            for c in k..m.k_pad {
                assert_eq!(m.code(r, c), 1, "{ty} pad column {c}");
            }
            let reference: f64 = want
                .iter()
                .zip(&x)
                .map(|(&w, &xv)| w as f64 * xv as f64)
                .sum();
            let bound: f64 = want
                .iter()
                .zip(&x)
                .map(|(&w, &xv)| (w as f64 * xv as f64).abs())
                .sum();
            let d = m.dot_row(r, &x).unwrap() as f64;
            assert!(
                (d - reference).abs() <= 1e-5 * bound + 1e-30,
                "{ty} dot row {r}: {d} vs {reference}"
            );
            let dv = view.dot_row(r, &x).unwrap() as f64;
            assert!(
                (dv - reference).abs() <= 1e-5 * bound + 1e-30,
                "{ty} view dot row {r}"
            );
        }
        m
    }

    #[test]
    fn lossless_round_trip_all_formats() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for rows in [1usize, 3, 7, 129] {
            for k in [256usize, 512, 768] {
                let x = ternary_matrix(&mut rng, rows, k, true);
                check_round_trip(GgmlType::TQ2_0, &quantize_tq2_0(&x), rows, k);
                check_round_trip(GgmlType::TQ1_0, &quantize_tq1_0(&x), rows, k);
            }
            for k in [128usize, 256, 384, 512, 768] {
                let x = ternary_matrix(&mut rng, rows, k, false);
                check_round_trip(GgmlType::I2_S, &quantize_i2_s(&x), rows, k);
            }
        }
    }

    /// Random bytes (any codes, any f16 scale bits) still round-trip bit-exactly, NaN aside.
    #[test]
    fn round_trip_random_bytes() {
        let mut rng = Rng(77);
        for (ty, bytes_per_row) in [(GgmlType::TQ2_0, 2 * 66), (GgmlType::TQ1_0, 2 * 54)] {
            let mut data: Vec<u8> = (0..3 * bytes_per_row).map(|_| rng.next() as u8).collect();
            // Keep the scales finite so the dot check is meaningful.
            let bsz = bytes_per_row / 2;
            for blk in data.chunks_exact_mut(bsz) {
                blk[bsz - 1] &= 0x3b;
            }
            check_round_trip(ty, &data, 3, 512);
        }
        let mut data: Vec<u8> = (0..3 * 96 + 32).map(|_| rng.next() as u8).collect();
        data[3 * 96..3 * 96 + 4].copy_from_slice(&0.75f32.to_le_bytes());
        let m = check_round_trip(GgmlType::I2_S, &data, 3, 384);
        assert!(
            m.codes.iter().all(|w| (w & (w >> 1) & 0x5555_5555) == 0),
            "no code 3 in T2R"
        );
    }

    /// The same ternary matrix as TQ2_0, TQ1_0 and I2_S repacks to identical codes; TQ scales are
    /// the f16 of the tensor scale, I2_S has unit block scales and the scale as tensor_mult.
    #[test]
    fn cross_format_codes_are_identical() {
        let mut rng = Rng(2024);
        for (rows, k) in [(1usize, 256usize), (7, 512), (129, 768), (5, 1024)] {
            let x = ternary_matrix(&mut rng, rows, k, false);
            let s = half::f16::from_f32(0.37);
            let ne = [k as u64, rows as u64];
            let tq2 = quantize_tq2_0(&x);
            let tq1 = quantize_tq1_0(&x);
            let i2 = quantize_i2_s(&x);
            let a = T2r::from_tensor(&TensorView::new("a", GgmlType::TQ2_0, &ne, &tq2).unwrap())
                .unwrap();
            let b = T2r::from_tensor(&TensorView::new("b", GgmlType::TQ1_0, &ne, &tq1).unwrap())
                .unwrap();
            let c =
                T2r::from_tensor(&TensorView::new("c", GgmlType::I2_S, &ne, &i2).unwrap()).unwrap();
            assert_eq!(a.code_bytes(), b.code_bytes(), "tq2_0 vs tq1_0 {rows}×{k}");
            assert_eq!(a.code_bytes(), c.code_bytes(), "tq2_0 vs i2_s {rows}×{k}");
            assert_eq!(a.scales, b.scales);
            for r in 0..rows {
                for blk in 0..k / 256 {
                    assert_eq!(a.scale_bits(r, blk), s.to_bits());
                    assert_eq!(c.scale_bits(r, blk), F16_ONE);
                }
            }
            assert_eq!((a.tensor_mult, c.tensor_mult), (1.0, s.to_f32()));
            // TQ2_0's qs bytes are the T2R code bytes verbatim.
            let verbatim: Vec<u8> = tq2
                .chunks_exact(66)
                .flat_map(|blk| blk[..64].to_vec())
                .collect();
            assert_eq!(a.code_bytes(), verbatim);
        }
    }

    /// testing.md §2.3 single-byte vectors through the I2_S → T2R bit reversal.
    #[test]
    fn single_byte_vectors_through_t2r() {
        for (i2s_byte, t2r_byte) in [
            (0x00u8, 0x00u8),
            (0x55, 0x55),
            (0xAA, 0xAA),
            (0x18, 0x24),
            (0x1b, 0xe4),
        ] {
            assert_eq!(reverse_pairs(i2s_byte), t2r_byte);
            assert_eq!(reverse_pairs(t2r_byte), i2s_byte);
        }
        let mut data = vec![0x55u8; 32 + 32];
        data[7] = 0x18; // MSB-first fields 00 01 10 00: columns 7, 39, 71, 103 = −1, 0, +1, −1
        data[32..36].copy_from_slice(&1.0f32.to_le_bytes());
        let m = T2r::from_tensor(&TensorView::new("w", GgmlType::I2_S, &[128, 1], &data).unwrap())
            .unwrap();
        assert_eq!(m.code_bytes()[7], 0x24);
        let mut out = vec![0f32; 128];
        m.dequantize_row(0, &mut out).unwrap();
        assert_eq!([out[7], out[39], out[71], out[103]], [-1.0, 0.0, 1.0, -1.0]);
        assert!(m.code_bytes()[32..].iter().all(|&b| b == 0x55), "pad chunk");
    }

    #[test]
    fn rejects_non_ternary_and_bad_lengths() {
        let data = vec![0u8; 34];
        let v = TensorView::new("w", GgmlType::Q8_0, &[32, 1], &data).unwrap();
        assert_eq!(T2r::from_tensor(&v).unwrap_err().code(), "quant_shape");
        let data = quantize_tq2_0(&[0.0; 256]);
        let m = T2r::from_tensor(&TensorView::new("w", GgmlType::TQ2_0, &[256], &data).unwrap())
            .unwrap();
        assert!(m.dequantize_row(0, &mut [0.0; 255]).is_err());
        assert!(m.dot_row(0, &[0.0; 257]).is_err());
    }

    #[test]
    fn canonical_rewrites_only_code_three() {
        for b in 0..=255u8 {
            let c = canonical(b);
            for l in 0..4 {
                let (src, dst) = ((b >> (2 * l)) & 3, (c >> (2 * l)) & 3);
                assert_eq!(dst, if src == 3 { 1 } else { src });
            }
        }
    }
}

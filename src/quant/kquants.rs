//! K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: 256-element super-blocks with packed sub-block
//! scales (formats.md §3.3; llama.cpp `block_q*_K`, `dequantize_row_q*_K`).
//!
//! Each decoder computes the sub-block factors first (`dl = d·sc`, `ml = dmin·m`) and then
//! `dl·q − ml` or `dl·q` in f32, the reference order, so the result is bit-exact. The dot products
//! factor the same sub-block scales out of the inner sums.
//!
//! Element decompositions used below (all indices little-endian bytes within the block):
//! - Q2_K/Q3_K: `e = 128h + 32s + 16k + l`, sub-block `j = 8h + 2s + k` (16 sub-blocks of 16);
//! - Q4_K/Q5_K: `e = 64c + 32t + l`, sub-block `j = 2c + t` (8 sub-blocks of 32);
//! - Q6_K: `e = 128h + 32u + l`, scale index `8h + 2u + l/16`.

use super::{f16_to_f32, Block, GgmlType};
use bytemuck::{Pod, Zeroable};
use std::mem::size_of;

/// Values per super-block.
pub const QK_K: usize = 256;

/// Q2_K (84 B): `scales[16]` @0 (low nibble scale, high nibble min), `qs[64]` @16, `d` @80,
/// `dmin` @82. Value `d·(S[j]&15)·q − dmin·(S[j]>>4)`, q in 0..3.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

impl BlockQ2K {
    /// Calls `f(j, e0, q)` for each sub-block `j` with its first element `e0` and 2-bit codes.
    #[inline]
    fn for_each_sub(&self, mut f: impl FnMut(usize, usize, [u8; 16])) {
        for h in 0..2 {
            for s in 0..4 {
                for k in 0..2 {
                    let mut q = [0u8; 16];
                    for (l, v) in q.iter_mut().enumerate() {
                        *v = (self.qs[32 * h + 16 * k + l] >> (2 * s)) & 3;
                    }
                    f(8 * h + 2 * s + k, 128 * h + 32 * s + 16 * k, q);
                }
            }
        }
    }
}

impl Block for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (f16_to_f32(self.d), f16_to_f32(self.dmin));
        self.for_each_sub(|j, e0, q| {
            let dl = d * (self.scales[j] & 15) as f32;
            let ml = dmin * (self.scales[j] >> 4) as f32;
            for (o, &qv) in out[e0..e0 + 16].iter_mut().zip(&q) {
                *o = dl * qv as f32 - ml;
            }
        });
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let (d, dmin) = (f16_to_f32(self.d), f16_to_f32(self.dmin));
        let mut acc = 0f32;
        self.for_each_sub(|j, e0, q| {
            let xs = &x[e0..e0 + 16];
            let sqx: f32 = xs.iter().zip(&q).map(|(&xv, &qv)| qv as f32 * xv).sum();
            let sx: f32 = xs.iter().sum();
            acc +=
                d * (self.scales[j] & 15) as f32 * sqx - dmin * (self.scales[j] >> 4) as f32 * sx;
        });
        acc
    }
}

/// Q3_K (110 B): `hmask[32]` @0, `qs[64]` @32, `scales[12]` @96 (sixteen 6-bit scales), `d` @108.
/// Value `d·(sc − 32)·q` with `q = lo2 − (high bit ? 0 : 4)` in −4..3.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The signed 6-bit scale of sub-block `j` (0..15): low 4 bits from `S[0..8]` (low nibbles
    /// for j < 8, high nibbles for j ≥ 8), high 2 bits from `S[8 + j%4]` at bit `2·(j/4)`.
    #[inline]
    pub fn scale(&self, j: usize) -> i32 {
        let s = &self.scales;
        let lo4 = if j < 8 { s[j] & 15 } else { s[j - 8] >> 4 };
        let hi2 = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (lo4 | (hi2 << 4)) as i32 - 32
    }

    #[inline]
    fn for_each_sub(&self, mut f: impl FnMut(usize, usize, [i8; 16])) {
        for h in 0..2 {
            for s in 0..4 {
                for k in 0..2 {
                    let mut q = [0i8; 16];
                    for (l, v) in q.iter_mut().enumerate() {
                        let lo2 = ((self.qs[32 * h + 16 * k + l] >> (2 * s)) & 3) as i8;
                        let hb = (self.hmask[16 * k + l] >> (4 * h + s)) & 1;
                        *v = lo2 - if hb != 0 { 0 } else { 4 };
                    }
                    f(8 * h + 2 * s + k, 128 * h + 32 * s + 16 * k, q);
                }
            }
        }
    }
}

impl Block for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        self.for_each_sub(|j, e0, q| {
            let dl = d * self.scale(j) as f32;
            for (o, &qv) in out[e0..e0 + 16].iter_mut().zip(&q) {
                *o = dl * qv as f32;
            }
        });
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let mut acc = 0f32;
        self.for_each_sub(|j, e0, q| {
            let sqx: f32 = x[e0..e0 + 16]
                .iter()
                .zip(&q)
                .map(|(&xv, &qv)| qv as f32 * xv)
                .sum();
            acc += self.scale(j) as f32 * sqx;
        });
        f16_to_f32(self.d) * acc
    }
}

/// The 6-bit scale and min of sub-block `j` (0..7) of the 12-byte Q4_K/Q5_K scale array
/// (llama.cpp `get_scale_min_k4`).
#[inline]
pub fn scale_min_k4(s: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K (144 B): `d` @0, `dmin` @2, `scales[12]` @4, `qs[128]` @16.
/// Value `d·sc_j·q − dmin·m_j`, q a nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q5_K (176 B): `d` @0, `dmin` @2, `scales[12]` @4, `qh[32]` @16, `qs[128]` @48.
/// As Q4_K plus 16 when bit `j` of `qh[l]` is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// Shared walk of Q4_K/Q5_K: `f(j, e0, q)` per 32-element sub-block, `qh` adding bit 4.
#[inline]
fn for_each_sub_k4(
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    mut f: impl FnMut(usize, usize, [u8; 32]),
) {
    for c in 0..4 {
        for t in 0..2 {
            let j = 2 * c + t;
            let mut q = [0u8; 32];
            for (l, v) in q.iter_mut().enumerate() {
                let b = qs[32 * c + l];
                let lo = if t == 0 { b & 15 } else { b >> 4 };
                let hi = qh.map_or(0, |qh| (qh[l] >> j) & 1);
                *v = lo | (hi << 4);
            }
            f(j, 64 * c + 32 * t, q);
        }
    }
}

fn dequantize_k4(
    d: [u8; 2],
    dmin: [u8; 2],
    s: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    out: &mut [f32],
) {
    let (d, dmin) = (f16_to_f32(d), f16_to_f32(dmin));
    for_each_sub_k4(qs, qh, |j, e0, q| {
        let (sc, m) = scale_min_k4(s, j);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        for (o, &qv) in out[e0..e0 + 32].iter_mut().zip(&q) {
            *o = dl * qv as f32 - ml;
        }
    });
}

fn vec_dot_k4(
    d: [u8; 2],
    dmin: [u8; 2],
    s: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    x: &[f32],
) -> f32 {
    let (mut sum_q, mut sum_m) = (0f32, 0f32);
    for_each_sub_k4(qs, qh, |j, e0, q| {
        let (sc, m) = scale_min_k4(s, j);
        let xs = &x[e0..e0 + 32];
        let sqx: f32 = xs.iter().zip(&q).map(|(&xv, &qv)| qv as f32 * xv).sum();
        let sx: f32 = xs.iter().sum();
        sum_q += sc as f32 * sqx;
        sum_m += m as f32 * sx;
    });
    f16_to_f32(d) * sum_q - f16_to_f32(dmin) * sum_m
}

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_k4(self.d, self.dmin, &self.scales, &self.qs, None, out);
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        vec_dot_k4(self.d, self.dmin, &self.scales, &self.qs, None, x)
    }
}

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_k4(
            self.d,
            self.dmin,
            &self.scales,
            &self.qs,
            Some(&self.qh),
            out,
        );
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        vec_dot_k4(self.d, self.dmin, &self.scales, &self.qs, Some(&self.qh), x)
    }
}

/// Q6_K (210 B): `ql[128]` @0, `qh[64]` @128, `scales[16]` (i8) @192, `d` @208.
/// Value `d·scales[8h + 2u + l/16]·(q − 32)`, q 6-bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [u8; 16],
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// Calls `f(is, e0, q)` per 16-element group: scale index `is`, first element, signed codes.
    #[inline]
    fn for_each_group(&self, mut f: impl FnMut(usize, usize, [i8; 16])) {
        for h in 0..2 {
            let (ql, qh) = (&self.ql[64 * h..64 * h + 64], &self.qh[32 * h..32 * h + 32]);
            for u in 0..4 {
                for half in 0..2 {
                    let mut q = [0i8; 16];
                    for (i, v) in q.iter_mut().enumerate() {
                        let l = 16 * half + i;
                        // u selects the nibble (u/2) of ql[l + 32·(u%2)] and the 2-bit field u of qh[l].
                        let b = ql[l + 32 * (u % 2)];
                        let lo = if u < 2 { b & 15 } else { b >> 4 };
                        let hi = (qh[l] >> (2 * u)) & 3;
                        *v = (lo | (hi << 4)) as i8 - 32;
                    }
                    f(8 * h + 2 * u + half, 128 * h + 32 * u + 16 * half, q);
                }
            }
        }
    }
}

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        self.for_each_group(|is, e0, q| {
            let dl = d * self.scales[is] as i8 as f32;
            for (o, &qv) in out[e0..e0 + 16].iter_mut().zip(&q) {
                *o = dl * qv as f32;
            }
        });
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let mut acc = 0f32;
        self.for_each_group(|is, e0, q| {
            let sqx: f32 = x[e0..e0 + 16]
                .iter()
                .zip(&q)
                .map(|(&xv, &qv)| qv as f32 * xv)
                .sum();
            acc += self.scales[is] as i8 as f32 * sqx;
        });
        f16_to_f32(self.d) * acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Q4_K scale packing, spelled out bit by bit (llama.cpp's comment table).
    #[test]
    fn k4_scale_unpacking() {
        let mut s = [0u8; 12];
        s[0] = 0b11_000101; // sc0 = 5, top bits feed sc4
        s[4] = 0b01_000111; // m0 = 7, top bits feed m4
        s[8] = 0b1010_0011; // sc4 low 4 = 3, m4 low 4 = 10
        assert_eq!(scale_min_k4(&s, 0), (5, 7));
        assert_eq!(scale_min_k4(&s, 4), (3 | (3 << 4), 10 | (1 << 4)));
    }

    #[test]
    fn q3k_scales() {
        let mut b = BlockQ3K::zeroed();
        b.scales[0] = 0x21; // j=0 low 4 = 1, j=8 low 4 = 2
        b.scales[8] = 0b11_00_00_10; // j=0 hi2 = 2, j=12 hi2 = 3
        assert_eq!(b.scale(0), (1 | (2 << 4)) - 32);
        assert_eq!(b.scale(8), 2 - 32);
        assert_eq!(b.scale(12), (3 << 4) - 32);
    }
}

//! The 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (formats.md §3.2; llama.cpp
//! `block_q*_*` in `ggml-common.h`, `dequantize_row_q*_*` in `ggml-quants.c`).
//!
//! In the 4- and 5-bit formats the low nibbles of `qs[0..16]` hold elements 0..15 and the high
//! nibbles hold 16..31 (not interleaved pairs); Q5's fifth bit of element `e` is bit `e` of the
//! little-endian u32 `qh`. Decoding is `q·d` or `q·d + m` in f32, exactly as the reference.

use super::{f16_to_f32, Block, GgmlType};
use bytemuck::{Pod, Zeroable};
use std::mem::size_of;

/// Values per block of every format in this file.
pub const QK: usize = 32;

/// Q4_0: `d` (f16) @0, `qs[16]` @2; value `(nibble − 8)·d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

impl BlockQ4_0 {
    /// The signed 4-bit value of element `e`.
    #[inline]
    fn q(&self, e: usize) -> i32 {
        nibble(&self.qs, e) as i32 - 8
    }
}

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (e, o) in out[..QK].iter_mut().enumerate() {
            *o = self.q(e) as f32 * d;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..QK]
            .iter()
            .enumerate()
            .map(|(e, &xv)| self.q(e) as f32 * xv)
            .sum();
        f16_to_f32(self.d) * s
    }
}

/// Q4_1: `d` @0, `m` @2, `qs[16]` @4; value `nibble·d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        for (e, o) in out[..QK].iter_mut().enumerate() {
            *o = nibble(&self.qs, e) as f32 * d + m;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let (mut sqx, mut sx) = (0f32, 0f32);
        for (e, &xv) in x[..QK].iter().enumerate() {
            sqx += nibble(&self.qs, e) as f32 * xv;
            sx += xv;
        }
        f16_to_f32(self.d) * sqx + f16_to_f32(self.m) * sx
    }
}

/// Q5_0: `d` @0, `qh[4]` @2 (u32 LE), `qs[16]` @6; value `((nibble | bit<<4) − 16)·d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    #[inline]
    fn q(&self, e: usize) -> i32 {
        five_bit(&self.qs, self.qh, e) as i32 - 16
    }
}

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (e, o) in out[..QK].iter_mut().enumerate() {
            *o = self.q(e) as f32 * d;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..QK]
            .iter()
            .enumerate()
            .map(|(e, &xv)| self.q(e) as f32 * xv)
            .sum();
        f16_to_f32(self.d) * s
    }
}

/// Q5_1: `d` @0, `m` @2, `qh[4]` @4 (u32 LE), `qs[16]` @8; value `(nibble | bit<<4)·d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_to_f32(self.d), f16_to_f32(self.m));
        for (e, o) in out[..QK].iter_mut().enumerate() {
            *o = five_bit(&self.qs, self.qh, e) as f32 * d + m;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let (mut sqx, mut sx) = (0f32, 0f32);
        for (e, &xv) in x[..QK].iter().enumerate() {
            sqx += five_bit(&self.qs, self.qh, e) as f32 * xv;
            sx += xv;
        }
        f16_to_f32(self.d) * sqx + f16_to_f32(self.m) * sx
    }
}

/// Q8_0: `d` @0, `qs[32]` (i8) @2; value `qs[e]·d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [u8; 32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = q as i8 as f32 * d;
        }
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..QK]
            .iter()
            .zip(&self.qs)
            .map(|(&xv, &q)| q as i8 as f32 * xv)
            .sum();
        f16_to_f32(self.d) * s
    }
}

/// The unsigned nibble of element `e` (0..31): low nibbles are 0..15, high nibbles 16..31.
#[inline]
fn nibble(qs: &[u8; 16], e: usize) -> u8 {
    if e < 16 {
        qs[e] & 15
    } else {
        qs[e - 16] >> 4
    }
}

/// The unsigned 5-bit value of element `e`: the nibble plus bit `e` of `qh` (u32 LE) as bit 4.
#[inline]
fn five_bit(qs: &[u8; 16], qh: [u8; 4], e: usize) -> u8 {
    let h = (u32::from_le_bytes(qh) >> e) & 1;
    nibble(qs, e) | ((h as u8) << 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_blocks() {
        let one = 0x3c00u16.to_le_bytes();
        let mut out = [0f32; 32];
        // Q4_0: element 0 = low nibble of qs[0], element 16 = its high nibble.
        let b = BlockQ4_0 {
            d: one,
            qs: [0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x90],
        };
        b.dequantize(&mut out);
        assert_eq!(
            (out[0], out[16], out[15], out[31], out[1]),
            (7.0, -8.0, -8.0, 1.0, -8.0)
        );
        // Q5_0: bit 31 of qh raises element 31 by 16.
        let b = BlockQ5_0 {
            d: one,
            qh: [0, 0, 0, 0x80],
            qs: [0; 16],
        };
        b.dequantize(&mut out);
        assert_eq!((out[31], out[30]), (0.0, -16.0));
        // Q8_0 is signed.
        let mut qs = [0u8; 32];
        qs[3] = 0x80;
        BlockQ8_0 { d: one, qs }.dequantize(&mut out);
        assert_eq!(out[3], -128.0);
    }
}

//! Unquantized element types F32, F16 and BF16 (formats.md §3.1) as one-element "blocks", so that
//! they share the row and tensor plumbing of the block formats.
//!
//! F16 is IEEE binary16 (subnormals, infinities and NaN decode exactly, through `half`); BF16 is the
//! top half of an f32 (`bits << 16`), so every BF16 value, NaN payloads included, is exact.

use super::{f16_to_f32, Block, GgmlType};
use bytemuck::{Pod, Zeroable};
use std::mem::size_of;

/// One little-endian f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockF32 {
    pub v: [u8; 4],
}
const _: () = assert!(size_of::<BlockF32>() == 4);

impl Block for BlockF32 {
    const TYPE: GgmlType = GgmlType::F32;
    const ELEMS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = f32::from_le_bytes(self.v);
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        f32::from_le_bytes(self.v) * x[0]
    }
}

/// One little-endian IEEE binary16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockF16 {
    pub v: [u8; 2],
}
const _: () = assert!(size_of::<BlockF16>() == 2);

impl Block for BlockF16 {
    const TYPE: GgmlType = GgmlType::F16;
    const ELEMS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = f16_to_f32(self.v);
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        f16_to_f32(self.v) * x[0]
    }
}

/// One little-endian bfloat16: the top 16 bits of an f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockBF16 {
    pub v: [u8; 2],
}
const _: () = assert!(size_of::<BlockBF16>() == 2);

/// bf16 little-endian bytes to f32 (exact).
#[inline]
pub fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

impl Block for BlockBF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const ELEMS: usize = 1;
    fn dequantize(&self, out: &mut [f32]) {
        out[0] = bf16_to_f32(self.v);
    }
    fn vec_dot(&self, x: &[f32]) -> f32 {
        bf16_to_f32(self.v) * x[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_bits() {
        assert_eq!(bf16_to_f32(0x3f80u16.to_le_bytes()), 1.0);
        assert_eq!(bf16_to_f32(0xff80u16.to_le_bytes()), f32::NEG_INFINITY);
        assert!(bf16_to_f32(0x7fc1u16.to_le_bytes()).is_nan());
        assert_eq!(bf16_to_f32(0x0001u16.to_le_bytes()).to_bits(), 0x0001_0000);
    }
}

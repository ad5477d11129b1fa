//! Weight codecs: the scalar reference decoders for every supported ggml type, and the repack of
//! the ternary formats to the canonical T2R layout.
//!
//! Spec: `spec/formats.md` §2 (type table), §3 (non-ternary decode formulas), §4 (ternary formats)
//! and §5.2 (T2R). The byte layouts and formulas were taken from llama.cpp's
//! `ggml/src/ggml-common.h` and `ggml/src/ggml-quants.c`; the decoders reproduce the reference
//! arithmetic order so that they are bit-exact against it (checked by `tests/quant_golden.rs`
//! against gguf-py). One deliberate difference: code 3 of a 2-bit ternary format decodes to 0
//! (formats.md §4), where llama.cpp's TQ2_0 decoder yields +2.
//!
//! Layout of the module:
//! - [`Block`]: one `#[repr(C)]`, align-1 struct per format with a compile-time size check, a
//!   scalar `dequantize` and a scalar `vec_dot` beside each other (STYLE.md practice 3);
//!   [`plain`] (F32/F16/BF16), [`legacy`] (32-element blocks), [`kquants`] (Q2_K…Q6_K),
//!   [`ternary`] (TQ1_0, TQ2_0, the whole-tensor I2_S, and reference quantizers for them).
//! - [`TensorView`]: a checked view of one tensor's bytes with per-row decode and dot products.
//! - [`t2r`]: the canonical ternary GPU/SIMD layout.
//!
//! Out of scope here: SIMD kernels, the structure-of-arrays repack of non-ternary types for the
//! GPU (formats.md §5.1), the opt-in ruvllm BITNET_T158 decoder (§4.4) and the IQ types.

pub mod kquants;
pub mod legacy;
pub mod plain;
pub mod t2r;
pub mod ternary;
pub mod types;

pub use t2r::T2r;
pub use types::GgmlType;

use crate::error::{QuantError, Result};

/// One storage block of a ggml format: `ELEMS` values packed into `size_of::<Self>()` bytes.
///
/// Every implementor is `#[repr(C)]` with only byte-array fields (alignment 1), so a slice of
/// blocks can be viewed in place at any byte offset with [`bytemuck::cast_slice`].
pub trait Block: bytemuck::Pod {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Values per block.
    const ELEMS: usize;
    /// Decode the block into `out` (`out.len() == ELEMS`), with llama.cpp's arithmetic order.
    fn dequantize(&self, out: &mut [f32]);
    /// Scalar dot product of the block with `x` (`x.len() == ELEMS`), accumulated in f32 with the
    /// block scales factored out (the shape an optimized kernel has).
    fn vec_dot(&self, x: &[f32]) -> f32;
}

/// binary16 little-endian bytes to f32 (exact; subnormals, infinities and NaN included).
#[inline]
pub fn f16_to_f32(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// Decode a slice of whole blocks into `out` (`out.len() == blocks.len() * B::ELEMS`).
pub fn dequantize_blocks<B: Block>(blocks: &[B], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        blocks.len() * B::ELEMS,
        "{}: output length",
        B::TYPE
    );
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(B::ELEMS)) {
        b.dequantize(o);
    }
}

/// Dot product of a row of whole blocks with `x` (`x.len() == blocks.len() * B::ELEMS`),
/// accumulating the per-block dot products in f32.
pub fn vec_dot_blocks<B: Block>(blocks: &[B], x: &[f32]) -> f32 {
    assert_eq!(
        x.len(),
        blocks.len() * B::ELEMS,
        "{}: activation length",
        B::TYPE
    );
    blocks
        .iter()
        .zip(x.chunks_exact(B::ELEMS))
        .map(|(b, xs)| b.vec_dot(xs))
        .sum()
}

/// View raw bytes as blocks; the length must be a whole number of blocks.
pub fn cast_blocks<B: Block>(src: &[u8]) -> Result<&[B]> {
    bytemuck::try_cast_slice(src).map_err(|_| {
        shape_err(
            "(row)",
            format!(
                "{} bytes are not a whole number of {} blocks",
                src.len(),
                B::TYPE
            ),
        )
    })
}

pub(crate) fn shape_err(name: &str, reason: impl Into<String>) -> crate::Error {
    QuantError::Shape {
        name: name.to_string(),
        reason: reason.into(),
    }
    .into()
}

fn unsupported(name: &str, ty: GgmlType) -> crate::Error {
    QuantError::Unsupported {
        name: name.to_string(),
        type_name: ty.name(),
        type_id: ty as u32,
    }
    .into()
}

/// Run `$body` with `$B` bound to the block type of `$ty` (every supported type except I2_S).
macro_rules! with_block {
    ($ty:expr, $B:ident => $body:expr, else $other:expr) => {
        match $ty {
            GgmlType::F32 => {
                type $B = plain::BlockF32;
                $body
            }
            GgmlType::F16 => {
                type $B = plain::BlockF16;
                $body
            }
            GgmlType::BF16 => {
                type $B = plain::BlockBF16;
                $body
            }
            GgmlType::Q4_0 => {
                type $B = legacy::BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $B = legacy::BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $B = legacy::BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $B = legacy::BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $B = legacy::BlockQ8_0;
                $body
            }
            GgmlType::Q2_K => {
                type $B = kquants::BlockQ2K;
                $body
            }
            GgmlType::Q3_K => {
                type $B = kquants::BlockQ3K;
                $body
            }
            GgmlType::Q4_K => {
                type $B = kquants::BlockQ4K;
                $body
            }
            GgmlType::Q5_K => {
                type $B = kquants::BlockQ5K;
                $body
            }
            GgmlType::Q6_K => {
                type $B = kquants::BlockQ6K;
                $body
            }
            GgmlType::TQ1_0 => {
                type $B = ternary::BlockTQ1_0;
                $body
            }
            GgmlType::TQ2_0 => {
                type $B = ternary::BlockTQ2_0;
                $body
            }
            _ => $other,
        }
    };
}

/// Check that `src` is exactly one row of `n` elements of the block type `ty` (not I2_S).
fn check_row(ty: GgmlType, src: &[u8], n: usize) -> Result<()> {
    const NAME: &str = "(row)";
    if !ty.is_supported() {
        return Err(unsupported(NAME, ty));
    }
    if ty == GgmlType::I2_S {
        return Err(shape_err(
            NAME,
            "I2_S is a whole-tensor format; decode it through TensorView",
        ));
    }
    let want = ty
        .row_bytes(NAME, n as u64)
        .map_err(|e| shape_err(NAME, e.to_string()))?;
    if src.len() as u64 != want {
        return Err(shape_err(
            NAME,
            format!(
                "{} row of {n} elements needs {want} bytes, got {}",
                ty,
                src.len()
            ),
        ));
    }
    Ok(())
}

/// Decode one row of a block type: `src` holds exactly the packed bytes of `out.len()` elements.
/// I2_S (a whole-tensor format) is refused; use [`TensorView`] for it.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<()> {
    check_row(ty, src, out.len())?;
    with_block!(ty, B => dequantize_blocks::<B>(cast_blocks(src)?, out), else unreachable!("checked by check_row"));
    Ok(())
}

/// Dot product of one packed row of a block type with `x` (`x.len()` elements; not I2_S).
pub fn dot_row(ty: GgmlType, src: &[u8], x: &[f32]) -> Result<f32> {
    check_row(ty, src, x.len())?;
    Ok(
        with_block!(ty, B => vec_dot_blocks::<B>(cast_blocks(src)?, x), else unreachable!("checked by check_row")),
    )
}

/// A checked view of one tensor's packed bytes: type, shape (`ne[0]` = columns, innermost) and
/// data whose length matches the shape exactly.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    name: &'a str,
    ty: GgmlType,
    ne: [u64; 4],
    n_dims: usize,
    ncols: usize,
    nrows: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Check `data` against the shape. Errors: an unsupported type
    /// ([`QuantError::Unsupported`]), more than 4 dims, a row length that is not a whole number
    /// of blocks, an element count that does not fit this platform, or
    /// `data.len() != ty.tensor_bytes(ne)` ([`QuantError::Shape`]).
    pub fn new(name: &'a str, ty: GgmlType, ne: &[u64], data: &'a [u8]) -> Result<Self> {
        if !ty.is_supported() {
            return Err(unsupported(name, ty));
        }
        if ne.is_empty() || ne.len() > 4 {
            return Err(shape_err(
                name,
                format!("{} dimensions (1 to 4 supported)", ne.len()),
            ));
        }
        let want = ty
            .tensor_bytes(name, ne)
            .map_err(|e| shape_err(name, e.to_string()))?;
        if data.len() as u64 != want {
            return Err(shape_err(
                name,
                format!("{ty} shape {ne:?} needs {want} bytes, got {}", data.len()),
            ));
        }
        let too_big = || shape_err(name, format!("shape {ne:?} is too large for this platform"));
        let ncols = usize::try_from(ne[0]).map_err(|_| too_big())?;
        let nrows = ne[1..].iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        });
        let nrows = nrows.ok_or_else(too_big)?;
        ncols.checked_mul(nrows).ok_or_else(too_big)?;
        let row_bytes = ty
            .row_bytes(name, ne[0])
            .map_err(|e| shape_err(name, e.to_string()))?;
        let row_bytes = usize::try_from(row_bytes).map_err(|_| too_big())?;
        let mut ne4 = [1u64; 4];
        ne4[..ne.len()].copy_from_slice(ne);
        Ok(TensorView {
            name,
            ty,
            ne: ne4,
            n_dims: ne.len(),
            ncols,
            nrows,
            row_bytes,
            data,
        })
    }

    pub fn name(&self) -> &str {
        self.name
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The shape as stored (`n_dims` entries, `ne[0]` innermost).
    pub fn ne(&self) -> &[u64] {
        &self.ne[..self.n_dims]
    }

    /// Elements per row (`ne[0]`).
    pub fn ncols(&self) -> usize {
        self.ncols
    }

    /// Rows: the product of `ne[1..]`.
    pub fn nrows(&self) -> usize {
        self.nrows
    }

    /// All the tensor's bytes (for I2_S including the 32-byte trailer).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The packed bytes of row `r` (for I2_S the row's `ncols/4` code bytes). Panics if
    /// `r >= nrows`.
    pub fn row_bytes(&self, r: usize) -> &'a [u8] {
        assert!(
            r < self.nrows,
            "tensor '{}': row {r} out of range ({} rows)",
            self.name,
            self.nrows
        );
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// The I2_S per-tensor scale (the first f32 of the trailer); `None` for other types.
    pub fn i2s_scale(&self) -> Option<f32> {
        if self.ty != GgmlType::I2_S {
            return None;
        }
        let at = self.nrows * self.row_bytes;
        let b: [u8; 4] = self.data[at..at + 4]
            .try_into()
            .expect("trailer checked by new");
        Some(f32::from_le_bytes(b))
    }

    fn check_len(&self, what: &str, len: usize) -> Result<()> {
        if len != self.ncols {
            return Err(shape_err(
                self.name,
                format!("{what} has {len} elements, the rows have {}", self.ncols),
            ));
        }
        Ok(())
    }

    /// Decode row `r` into `out` (`out.len() == ncols`). Panics if `r >= nrows`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        self.check_len("output", out.len())?;
        let src = self.row_bytes(r);
        match self.i2s_scale() {
            Some(scale) => ternary::i2s_dequantize_row(src, scale, out),
            None => dequantize_row(self.ty, src, out)?,
        }
        Ok(())
    }

    /// Dot product of row `r` with `x` (`x.len() == ncols`). Panics if `r >= nrows`.
    pub fn dot_row(&self, r: usize, x: &[f32]) -> Result<f32> {
        self.check_len("activation", x.len())?;
        let src = self.row_bytes(r);
        match self.i2s_scale() {
            Some(scale) => Ok(ternary::i2s_vec_dot_row(src, scale, x)),
            None => dot_row(self.ty, src, x),
        }
    }

    /// Decode the whole tensor, row-major (`nrows * ncols` values).
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.nrows * self.ncols];
        if self.ncols > 0 {
            for (r, o) in out.chunks_exact_mut(self.ncols).enumerate() {
                self.dequantize_row(r, o)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn f16_special_values() {
        assert_eq!(f16_to_f32(0x0001u16.to_le_bytes()), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ffu16.to_le_bytes()), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000u16.to_le_bytes()).to_bits(), 0x8000_0000);
        assert_eq!(f16_to_f32(0x7c00u16.to_le_bytes()), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00u16.to_le_bytes()), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00u16.to_le_bytes()).is_nan());
        assert_eq!(f16_to_f32(0x3c00u16.to_le_bytes()), 1.0);
        assert_eq!(f16_to_f32(0x7bffu16.to_le_bytes()), 65504.0);
    }

    /// Every f16 bit pattern against a naive decoder written from the IEEE definition.
    #[test]
    fn f16_exhaustive() {
        for bits in 0..=u16::MAX {
            let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
            let exp = (bits >> 10) & 31;
            let man = (bits & 1023) as f64;
            let got = f16_to_f32(bits.to_le_bytes());
            match exp {
                31 if man == 0.0 => assert_eq!(got, sign as f32 * f32::INFINITY),
                31 => assert!(got.is_nan(), "{bits:#x}"),
                0 => assert_eq!(
                    got.to_bits(),
                    ((sign * man * 2f64.powi(-24)) as f32).to_bits()
                ),
                _ => assert_eq!(
                    got as f64,
                    sign * (1.0 + man / 1024.0) * 2f64.powi(exp as i32 - 15),
                    "{bits:#x}"
                ),
            }
        }
    }

    #[test]
    fn view_checks_sizes_and_types() {
        let data = vec![0u8; 2 * 18];
        let v = TensorView::new("w", GgmlType::Q4_0, &[32, 2], &data).unwrap();
        assert_eq!((v.ncols(), v.nrows(), v.row_bytes(1).len()), (32, 2, 18));
        assert_eq!(v.ne(), &[32, 2]);
        let e = TensorView::new("w", GgmlType::Q4_0, &[32, 3], &data).unwrap_err();
        assert_eq!(e.code(), "quant_shape");
        let e = TensorView::new("w", GgmlType::Q4_0, &[16, 2], &data).unwrap_err();
        assert_eq!(e.code(), "quant_shape");
        let e = TensorView::new("w", GgmlType::IQ2_XXS, &[256], &data).unwrap_err();
        assert!(matches!(
            e,
            Error::Quant(QuantError::Unsupported {
                type_name: "iq2_xxs",
                type_id: 16,
                ..
            })
        ));
        let e = TensorView::new("w", GgmlType::F32, &[1, 1, 1, 1, 1], &[0; 4]).unwrap_err();
        assert_eq!(e.code(), "quant_shape");
        let mut out = [0f32; 31];
        assert_eq!(
            v.dequantize_row(0, &mut out).unwrap_err().code(),
            "quant_shape"
        );
        assert_eq!(v.dot_row(0, &[0.0; 33]).unwrap_err().code(), "quant_shape");
    }

    #[test]
    fn row_codec_checks_lengths() {
        let mut out = [0f32; 32];
        assert!(dequantize_row(GgmlType::Q8_0, &[0; 34], &mut out).is_ok());
        assert!(dequantize_row(GgmlType::Q8_0, &[0; 33], &mut out).is_err());
        assert!(dequantize_row(GgmlType::Q8_0, &[0; 34], &mut out[..16]).is_err());
        assert!(dequantize_row(GgmlType::I2_S, &[0; 8], &mut out).is_err());
        assert!(dequantize_row(GgmlType::Q8_1, &[0; 36], &mut out).is_err());
        assert!(dot_row(GgmlType::Q8_0, &[0; 34], &[1.0; 32]).is_ok());
    }

    #[test]
    fn f32_and_bf16_rows() {
        let vals = [1.5f32, -0.0, f32::INFINITY, 1e-40];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0f32; 4];
        dequantize_row(GgmlType::F32, &bytes, &mut out).unwrap();
        assert_eq!(out.map(f32::to_bits), vals.map(f32::to_bits));
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        dequantize_row(GgmlType::BF16, &bf, &mut out).unwrap();
        assert_eq!(
            out.map(f32::to_bits),
            vals.map(|v| v.to_bits() & 0xffff_0000)
        );
    }
}

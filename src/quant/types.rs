//! The ggml type table: ids, names, block geometry and byte sizes (spec/formats.md §2).
//!
//! Sizes of the recognised-but-unsupported types come from `ggml/src/ggml-common.h` so that a file
//! using them still parses and `ternlm inspect` can show it; decoding them is a typed error.

use crate::error::GgufError;

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $blck:literal, $size:literal, $supported:literal; )*) => {
        /// A ggml tensor type as stored in a GGUF tensor info.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType { $( $variant = $id, )* }

        impl GgmlType {
            /// Every type ternlm recognises, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( GgmlType::$variant, )* ];

            /// The type for a stored id, or `None` for an id nobody defines.
            pub fn from_id(id: u32) -> Option<Self> {
                match id { $( $id => Some(GgmlType::$variant), )* _ => None }
            }
            /// ggml's lower-case type name (`q4_k`, `tq2_0`, …); I2_S follows the BitNet fork.
            pub fn name(self) -> &'static str {
                match self { $( GgmlType::$variant => $name, )* }
            }
            /// Elements per block. I2_S is a whole-tensor format and reports 1 (see [`GgmlType::tensor_bytes`]).
            pub fn block_size(self) -> u64 {
                match self { $( GgmlType::$variant => $blck, )* }
            }
            /// Bytes per block (for I2_S, the packed bytes per element group of 4 is meaningless: 0).
            pub fn type_size(self) -> u64 {
                match self { $( GgmlType::$variant => $size, )* }
            }
            /// Whether ternlm has a codec for this type.
            pub fn is_supported(self) -> bool {
                match self { $( GgmlType::$variant => $supported, )* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "f32", 1, 4, true;
    F16 = 1, "f16", 1, 2, true;
    Q4_0 = 2, "q4_0", 32, 18, true;
    Q4_1 = 3, "q4_1", 32, 20, true;
    Q5_0 = 6, "q5_0", 32, 22, true;
    Q5_1 = 7, "q5_1", 32, 24, true;
    Q8_0 = 8, "q8_0", 32, 34, true;
    Q8_1 = 9, "q8_1", 32, 36, false;
    Q2_K = 10, "q2_K", 256, 84, true;
    Q3_K = 11, "q3_K", 256, 110, true;
    Q4_K = 12, "q4_K", 256, 144, true;
    Q5_K = 13, "q5_K", 256, 176, true;
    Q6_K = 14, "q6_K", 256, 210, true;
    Q8_K = 15, "q8_K", 256, 292, false;
    IQ2_XXS = 16, "iq2_xxs", 256, 66, false;
    IQ2_XS = 17, "iq2_xs", 256, 74, false;
    IQ3_XXS = 18, "iq3_xxs", 256, 98, false;
    IQ1_S = 19, "iq1_s", 256, 50, false;
    IQ4_NL = 20, "iq4_nl", 32, 18, false;
    IQ3_S = 21, "iq3_s", 256, 110, false;
    IQ2_S = 22, "iq2_s", 256, 82, false;
    IQ4_XS = 23, "iq4_xs", 256, 136, false;
    I8 = 24, "i8", 1, 1, false;
    I16 = 25, "i16", 1, 2, false;
    I32 = 26, "i32", 1, 4, false;
    I64 = 27, "i64", 1, 8, false;
    F64 = 28, "f64", 1, 8, false;
    IQ1_M = 29, "iq1_m", 256, 56, false;
    BF16 = 30, "bf16", 1, 2, true;
    TQ1_0 = 34, "tq1_0", 256, 54, true;
    TQ2_0 = 35, "tq2_0", 256, 66, true;
    I2_S = 36, "i2_s", 1, 0, true;
    MXFP4 = 39, "mxfp4", 32, 17, false;
    NVFP4 = 40, "nvfp4", 64, 36, false;
    Q1_0 = 41, "q1_0", 128, 18, false;
    Q2_0 = 42, "q2_0", 64, 18, false;
}

/// Bytes of the I2_S trailer after the packed codes (one authoritative f32 scale, then padding).
pub const I2S_TRAILER: u64 = 32;
/// I2_S packs 128-element chunks of 32 bytes; rows must be whole chunks.
pub const I2S_CHUNK: u64 = 128;

impl GgmlType {
    /// Whether the type is one of the ternary formats that repack to T2R.
    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S)
    }

    /// Bytes of one row of `ne0` elements, or an error naming `tensor` if `ne0` is not a whole
    /// number of blocks. For I2_S this is the packed bytes of the row (`ne0 / 4`), without trailer.
    pub fn row_bytes(self, tensor: &str, ne0: u64) -> Result<u64, GgufError> {
        let blck = if self == GgmlType::I2_S {
            I2S_CHUNK
        } else {
            self.block_size()
        };
        if !ne0.is_multiple_of(blck) {
            return Err(GgufError::BadTensor {
                name: tensor.to_string(),
                reason: format!(
                    "ne0 = {ne0} is not a multiple of the {} block size {blck}",
                    self.name()
                ),
            });
        }
        if self == GgmlType::I2_S {
            return Ok(ne0 / 4);
        }
        (ne0 / blck)
            .checked_mul(self.type_size())
            .ok_or_else(|| GgufError::BadTensor {
                name: tensor.to_string(),
                reason: format!(
                    "row of {ne0} {} elements overflows a byte count",
                    self.name()
                ),
            })
    }

    /// Bytes of a whole tensor of `n_elements` with rows of `ne0`, overflow-checked.
    pub fn tensor_bytes(self, tensor: &str, ne: &[u64]) -> Result<u64, GgufError> {
        let ne0 = ne.first().copied().unwrap_or(1);
        let rows = ne
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let overflow = || GgufError::BadTensor {
            name: tensor.to_string(),
            reason: format!("byte size of shape {ne:?} overflows"),
        };
        let rows = rows.ok_or_else(overflow)?;
        let body = self
            .row_bytes(tensor, ne0)?
            .checked_mul(rows)
            .ok_or_else(overflow)?;
        if self == GgmlType::I2_S {
            body.checked_add(I2S_TRAILER).ok_or_else(overflow)
        } else {
            Ok(body)
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().to_ascii_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_none() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t as u32), Some(t));
        }
        for id in [4, 5, 31, 32, 33, 37, 38, 43, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(
            GgmlType::Q4_K.tensor_bytes("t", &[512, 3]).unwrap(),
            2 * 144 * 3
        );
        assert_eq!(
            GgmlType::I2_S.tensor_bytes("t", &[256, 3]).unwrap(),
            256 * 3 / 4 + 32
        );
        assert!(GgmlType::Q4_0.tensor_bytes("t", &[33]).is_err());
        assert!(GgmlType::F32
            .tensor_bytes("t", &[1 << 40, 1 << 30])
            .is_err());
        assert!(GgmlType::I2_S.tensor_bytes("t", &[64, 2]).is_err());
        // Found by the fuzzer: a huge row overflowed the multiplication by the type size.
        assert!(GgmlType::F32.row_bytes("t", i64::MAX as u64).is_err());
    }
}

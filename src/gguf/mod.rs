//! GGUF v2/v3 container: header, metadata, tensor table, tensor byte ranges (spec/formats.md §1).
//!
//! - [`GgufFile::from_bytes`] parses and validates a whole file held in memory;
//! - [`HeaderStream`] parses the header from the first chunks of a stream and then routes the
//!   data section's bytes to tensors, so a multi-GB file never sits whole in memory;
//! - [`SplitSet`] merges `*-0000N-of-0000M.gguf` files into one tensor table.
//!
//! Knows nothing of models or GPUs; typed metadata accessors apply the `{general.architecture}.`
//! prefix. Out of scope: writing GGUF (tests use the `gguf` Python package and our small writer).

mod reader;
pub mod split;
mod stream;
mod value;

pub use reader::{Limits, DEFAULT_ALIGNMENT, MAX_DIMS};
pub use split::SplitSet;
pub use stream::{HeaderStream, TensorChunk, TensorRouter};
pub use value::{Array, Value, ValueType};

use crate::error::GgufError;
use crate::quant::GgmlType;
use reader::{parse_header, Parse};
use std::collections::HashMap;

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `ne[0]` is the innermost (columns / input dimension).
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the tensor's bytes from the start of the data section.
    pub offset: u64,
    /// The tensor's byte size, from its type and shape.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
    /// Byte range relative to the data section.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.n_bytes
    }
}

/// Ordered metadata with O(1) lookup by key.
#[derive(Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    /// Derived from `entries`: key → position.
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl Metadata {
    fn with_capacity(n: usize) -> Self {
        Metadata {
            entries: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    fn insert(&mut self, key: String, value: Value) -> Result<(), GgufError> {
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn wrong(key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.into(),
            expected,
            found: v.describe(),
        }
    }

    /// An integer key stored as any integer type, range-checked into `T`.
    pub fn int<T: TryFrom<i128>>(&self, key: &str) -> Result<Option<T>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let i = v
            .as_i128()
            .ok_or_else(|| Self::wrong(key, "an integer", v))?;
        T::try_from(i).map(Some).map_err(|_| GgufError::OutOfRange {
            key: key.into(),
            value: i.to_string(),
            expected: std::any::type_name::<T>(),
        })
    }
    /// A FLOAT32 or FLOAT64 key.
    pub fn float(&self, key: &str) -> Result<Option<f64>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_f64()
            .map(Some)
            .ok_or_else(|| Self::wrong(key, "FLOAT32 or FLOAT64", v))
    }
    pub fn bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "BOOL", v)),
        }
    }
    pub fn str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Self::wrong(key, "STRING", v)),
        }
    }
    pub fn array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(Self::wrong(key, "ARRAY", v)),
        }
    }
    pub fn str_array(&self, key: &str) -> Result<Option<&[String]>, GgufError> {
        match self.array(key)? {
            None => Ok(None),
            Some(Array::String(v)) => Ok(Some(v)),
            Some(a) => Err(GgufError::WrongType {
                key: key.into(),
                expected: "ARRAY<STRING>",
                found: Value::Array(a.clone()).describe(),
            }),
        }
    }

    /// Turns an absent key into [`GgufError::MissingKey`].
    pub fn required<T>(key: &str, v: Result<Option<T>, GgufError>) -> Result<T, GgufError> {
        v?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }

    /// `general.architecture`, required.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        Self::required("general.architecture", self.str("general.architecture"))
    }
    /// The full key `{general.architecture}.{name}`.
    pub fn arch_key(&self, name: &str) -> Result<String, GgufError> {
        Ok(format!("{}.{name}", self.architecture()?))
    }
    /// An integer architecture key (`block_count` → `llama.block_count`).
    pub fn arch_int<T: TryFrom<i128>>(&self, name: &str) -> Result<Option<T>, GgufError> {
        self.int(&self.arch_key(name)?)
    }
    /// A float architecture key.
    pub fn arch_float(&self, name: &str) -> Result<Option<f64>, GgufError> {
        self.float(&self.arch_key(name)?)
    }
    /// A per-layer integer that may be stored as a scalar or as an array of `n_layers` integers
    /// (e.g. `head_count_kv`, `feed_forward_length` in some architectures).
    pub fn arch_int_per_layer(
        &self,
        name: &str,
        n_layers: usize,
    ) -> Result<Option<Vec<u32>>, GgufError> {
        let key = self.arch_key(name)?;
        let Some(v) = self.get(&key) else {
            return Ok(None);
        };
        if let Value::Array(a) = v {
            if a.len() != n_layers {
                return Err(GgufError::OutOfRange {
                    key,
                    value: format!("array of {}", a.len()),
                    expected: "one value per layer",
                });
            }
            return (0..a.len())
                .map(|i| {
                    let e = a.get(i).expect("index in range");
                    let i = e
                        .as_i128()
                        .ok_or_else(|| Self::wrong(&key, "an integer array", &e))?;
                    u32::try_from(i).map_err(|_| GgufError::OutOfRange {
                        key: key.clone(),
                        value: i.to_string(),
                        expected: "u32",
                    })
                })
                .collect::<Result<_, _>>()
                .map(Some);
        }
        Ok(self.int::<u32>(&key)?.map(|x| vec![x; n_layers]))
    }
}

/// A parsed header: everything before the data section.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Metadata,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// File offset of the data section.
    pub data_offset: u64,
}

impl GgufHeader {
    /// Parses a header from a complete file (`bytes` is the whole file, or a prefix of a file of
    /// `file_len` bytes that contains the whole header).
    pub fn parse(bytes: &[u8], file_len: u64, limits: Limits) -> Result<Self, GgufError> {
        if file_len < bytes.len() as u64 {
            return Err(GgufError::Truncated {
                what: "file length".into(),
                offset: 0,
                need: bytes.len() as u64,
                have: file_len,
            });
        }
        match parse_header(bytes, Some(file_len), limits)? {
            Parse::Done(h) => Ok(h),
            Parse::NeedMore { total } => Err(GgufError::Truncated {
                what: "header".into(),
                offset: bytes.len() as u64,
                need: total - bytes.len() as u64,
                have: 0,
            }),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Checks every tensor's byte range against a data section of `data_len` bytes: aligned, in
    /// range, no two overlapping, and the BF16/ruvllm id clash (formats.md §4.4) named.
    pub fn validate_data(&self, data_len: u64) -> Result<(), GgufError> {
        let mut order: Vec<&TensorInfo> = self.tensors.iter().collect();
        order.sort_by_key(|t| (t.offset, t.n_bytes));
        for (i, t) in order.iter().enumerate() {
            if !t.offset.is_multiple_of(self.alignment) {
                return Err(GgufError::BadTensor {
                    name: t.name.clone(),
                    reason: format!(
                        "offset {} is not a multiple of the alignment {}",
                        t.offset, self.alignment
                    ),
                });
            }
            // The span the tensor may use: up to the next tensor, or the end of the data section.
            let span_end = order
                .get(i + 1)
                .map_or(data_len, |n| n.offset.min(data_len));
            let span = span_end.saturating_sub(t.offset);
            let end = t.offset.checked_add(t.n_bytes);
            if end.is_none_or(|e| e > span_end) {
                if t.ty == GgmlType::BF16 {
                    let ruvllm = t.n_elements().div_ceil(256) * 66;
                    if span >= ruvllm
                        && span < ruvllm.next_multiple_of(self.alignment) + self.alignment
                    {
                        return Err(GgufError::LooksLikeRuvllm {
                            name: t.name.clone(),
                            found: span,
                            expected: ruvllm,
                            bf16: t.n_bytes,
                        });
                    }
                }
                return Err(match order.get(i + 1) {
                    Some(n) if n.offset < data_len => GgufError::Overlap {
                        first: t.name.clone(),
                        second: n.name.clone(),
                        first_end: t.offset.saturating_add(t.n_bytes),
                        second_offset: n.offset,
                    },
                    _ => GgufError::BadTensor {
                        name: t.name.clone(),
                        reason: format!(
                            "data [{}, {}) lies outside the data section of {data_len} bytes",
                            t.offset,
                            t.offset.saturating_add(t.n_bytes)
                        ),
                    },
                });
            }
        }
        Ok(())
    }
}

/// A whole GGUF file in memory: its header and its data section.
#[derive(Debug)]
pub struct GgufFile<'a> {
    pub header: GgufHeader,
    data: &'a [u8],
}

impl<'a> GgufFile<'a> {
    /// Parses and validates a whole file.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, GgufError> {
        Self::with_limits(bytes, Limits::default())
    }

    pub fn with_limits(bytes: &'a [u8], limits: Limits) -> Result<Self, GgufError> {
        let header = GgufHeader::parse(bytes, bytes.len() as u64, limits)?;
        let data = bytes.get(header.data_offset as usize..).unwrap_or(&[]);
        header.validate_data(data.len() as u64)?;
        Ok(GgufFile { header, data })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The bytes of a tensor (validated at construction, so always in range).
    pub fn tensor_data(&self, t: &TensorInfo) -> &'a [u8] {
        &self.data[t.offset as usize..(t.offset + t.n_bytes) as usize]
    }

    /// A tensor's info and bytes by name.
    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &'a [u8])> {
        let t = self.header.tensor(name)?;
        Some((t, self.tensor_data(t)))
    }
}

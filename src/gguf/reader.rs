//! The defensive GGUF header parser (spec/formats.md §1; STYLE.md practice 12).
//!
//! It parses the header, metadata and tensor table from a byte prefix of the file. Every count and
//! length is checked against the caps in [`Limits`] and against the bytes that remain before
//! anything is allocated, and vectors only grow as real bytes are consumed, so a 1 KB file that
//! claims 2^60 tensors or a 4 GB string costs nothing. When the prefix ends before the header does
//! and the file may be longer (streaming), the parser answers [`Parse::NeedMore`] instead of an error.

use super::value::{Array, Value, ValueType};
use super::{GgufHeader, Metadata, TensorInfo};
use crate::error::GgufError;
use crate::quant::GgmlType;
use std::collections::HashSet;

/// Caps on what a header may claim, whatever the file size.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_tensors: u64,
    pub max_kv: u64,
    pub max_string_len: u64,
    pub max_array_len: u64,
    /// Nesting of arrays inside arrays (real files use at most 2).
    pub max_array_depth: u32,
    pub max_tensor_name_len: u64,
    /// Largest header (metadata + tensor table) a stream will buffer.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensors: 1 << 20,
            max_kv: 1 << 20,
            // The largest real strings are chat templates of tens of KB.
            max_string_len: 64 << 20,
            // The largest real arrays are vocabularies and merges of a few hundred thousand.
            max_array_len: 1 << 26,
            max_array_depth: 8,
            max_tensor_name_len: 1024,
            max_header_bytes: 1 << 30,
        }
    }
}

/// GGML_MAX_DIMS: tensors have 1 to 4 dimensions.
pub const MAX_DIMS: u32 = 4;
/// `general.alignment` when the key is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";

/// Outcome of a parse attempt on a prefix.
#[derive(Debug)]
pub(crate) enum Parse<T> {
    Done(T),
    /// The prefix ended inside the header; at least `total` bytes of the file are needed.
    NeedMore {
        total: u64,
    },
}

enum Fail {
    NeedMore(u64),
    Err(GgufError),
}

impl From<GgufError> for Fail {
    fn from(e: GgufError) -> Self {
        Fail::Err(e)
    }
}

type R<T> = std::result::Result<T, Fail>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Total file length when known; `None` while streaming with an unknown length.
    file_len: Option<u64>,
    limits: Limits,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> R<&'a [u8]> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.buf.len() as u64 => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            Some(end) if self.file_len.is_none_or(|l| end <= l) => Err(Fail::NeedMore(end)),
            _ => Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have: self
                    .file_len
                    .unwrap_or(self.buf.len() as u64)
                    .saturating_sub(self.pos as u64),
            }
            .into()),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> R<[u8; N]> {
        let s = self.take(N as u64, what)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> R<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> R<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Bytes that are known to remain: the file's rest when its length is known, else the cap.
    fn remaining_bound(&self) -> u64 {
        match self.file_len {
            Some(l) => l.saturating_sub(self.pos as u64),
            None => u64::MAX,
        }
    }

    /// Validates a count read from the file: under `cap`, and `count · min_size` bytes must fit in
    /// what remains. Returns a safe initial capacity: no more than the bytes already in hand can hold.
    fn check_count(
        &self,
        what: &dyn Fn() -> String,
        count: u64,
        min_size: u64,
        cap: u64,
    ) -> R<usize> {
        if count > cap {
            return Err(GgufError::TooLarge {
                what: what(),
                value: count,
                limit: cap,
            }
            .into());
        }
        let need = count.saturating_mul(min_size);
        if need > self.remaining_bound() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need,
                have: self.remaining_bound(),
            }
            .into());
        }
        let in_hand = (self.buf.len() - self.pos) as u64 / min_size.max(1);
        Ok(count.min(in_hand) as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String, cap: u64) -> R<String> {
        let len = self.u64(&|| format!("{} length", what()))?;
        self.check_count(what, len, 1, cap)?;
        let offset = self.pos as u64;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            GgufError::InvalidUtf8 {
                what: what(),
                offset,
            }
            .into()
        })
    }

    fn value_type(&mut self, key: &str) -> R<ValueType> {
        let id = self.u32(&|| format!("type of '{key}'"))?;
        ValueType::from_id(id).ok_or_else(|| {
            GgufError::UnknownValueType {
                key: key.into(),
                type_id: id,
            }
            .into()
        })
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: u32) -> R<Value> {
        let what = || format!("value of '{key}'");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string(&what, self.limits.max_string_len)?),
            ValueType::Array => Value::Array(self.array_value(key, depth + 1)?),
        })
    }

    fn bool(&mut self, key: &str) -> R<bool> {
        match self.array::<1>(&|| format!("value of '{key}'"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(GgufError::OutOfRange {
                key: key.into(),
                value: b.to_string(),
                expected: "BOOL (0 or 1)",
            }
            .into()),
        }
    }

    fn array_value(&mut self, key: &str, depth: u32) -> R<Array> {
        if depth > self.limits.max_array_depth {
            let limit = self.limits.max_array_depth.into();
            return Err(GgufError::TooLarge {
                what: format!("array nesting of '{key}'"),
                value: depth.into(),
                limit,
            }
            .into());
        }
        let elem = self.value_type(key)?;
        let count = self.u64(&|| format!("array length of '{key}'"))?;
        let what = || format!("array '{key}'");
        let cap = self.check_count(
            &what,
            count,
            elem.min_encoded_size(),
            self.limits.max_array_len,
        )?;
        macro_rules! read_all {
            ($variant:ident, |$c:ident| $read:expr) => {{
                let mut v = Vec::with_capacity(cap);
                for _ in 0..count {
                    let $c = &mut *self;
                    v.push($read);
                }
                Array::$variant(v)
            }};
        }
        macro_rules! read_le {
            ($variant:ident, $t:ty) => {
                read_all!($variant, |c| <$t>::from_le_bytes(c.array(&what)?))
            };
        }
        Ok(match elem {
            ValueType::U8 => read_le!(U8, u8),
            ValueType::I8 => read_le!(I8, i8),
            ValueType::U16 => read_le!(U16, u16),
            ValueType::I16 => read_le!(I16, i16),
            ValueType::U32 => read_le!(U32, u32),
            ValueType::I32 => read_le!(I32, i32),
            ValueType::F32 => read_le!(F32, f32),
            ValueType::U64 => read_le!(U64, u64),
            ValueType::I64 => read_le!(I64, i64),
            ValueType::F64 => read_le!(F64, f64),
            ValueType::Bool => read_all!(Bool, |c| c.bool(key)?),
            ValueType::String => read_all!(String, |c| c.string(&what, c.limits.max_string_len)?),
            ValueType::Array => read_all!(Array, |c| c.array_value(key, depth + 1)?),
        })
    }

    fn tensor_info(&mut self, i: u64) -> R<TensorInfo> {
        let name = self.string(
            &|| format!("name of tensor {i}"),
            self.limits.max_tensor_name_len,
        )?;
        let n_dims = self.u32(&|| format!("n_dims of '{name}'"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(
                &name,
                format!("n_dims = {n_dims}, must be 1..={MAX_DIMS}"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let v = self.u64(&|| format!("ne[{d}] of '{name}'"))?;
            if v > i64::MAX as u64 {
                return Err(bad(&name, format!("ne[{d}] = {v} is negative as int64")));
            }
            ne.push(v);
        }
        if ne
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .is_none_or(|n| n > i64::MAX as u64)
        {
            return Err(bad(
                &name,
                format!("element count of shape {ne:?} overflows int64"),
            ));
        }
        let type_id = self.u32(&|| format!("type of '{name}'"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            type_id,
        })?;
        let n_bytes = ty.tensor_bytes(&name, &ne)?;
        let offset = self.u64(&|| format!("offset of '{name}'"))?;
        Ok(TensorInfo {
            name,
            ne,
            ty,
            offset,
            n_bytes,
        })
    }
}

fn bad(name: &str, reason: String) -> Fail {
    Fail::Err(GgufError::BadTensor {
        name: name.into(),
        reason,
    })
}

/// Parses the header from `prefix`, the first bytes of a file of `file_len` bytes (`None` when
/// unknown). With `file_len == Some(prefix.len())` the answer is never `NeedMore`.
pub(crate) fn parse_header(
    prefix: &[u8],
    file_len: Option<u64>,
    limits: Limits,
) -> Result<Parse<GgufHeader>, GgufError> {
    let mut c = Cursor {
        buf: prefix,
        pos: 0,
        file_len,
        limits,
    };
    match parse(&mut c) {
        Ok(h) => Ok(Parse::Done(h)),
        Err(Fail::NeedMore(total)) => Ok(Parse::NeedMore { total }),
        Err(Fail::Err(e)) => Err(e),
    }
}

fn parse(c: &mut Cursor) -> R<GgufHeader> {
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic }.into());
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => return Err(GgufError::BigEndian.into()),
        v => return Err(GgufError::UnsupportedVersion(v).into()),
    }
    let n_tensors = c.u64(&|| "tensor_count".into())?;
    let n_kv = c.u64(&|| "kv_count".into())?;
    // A key-value pair is at least a key length, a type and one byte.
    let kv_cap = c.check_count(&|| "kv_count".into(), n_kv, 8 + 4 + 1, c.limits.max_kv)?;

    let mut metadata = Metadata::with_capacity(kv_cap);
    for i in 0..n_kv {
        let key = c.string(
            &|| format!("key of metadata entry {i}"),
            c.limits.max_string_len,
        )?;
        let ty = c.value_type(&key)?;
        let value = c.value(&key, ty, 0)?;
        metadata.insert(key, value)?;
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(v) => {
            return Err(GgufError::WrongType {
                key: "general.alignment".into(),
                expected: "UINT32",
                found: v.describe(),
            }
            .into())
        }
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment(alignment).into());
    }

    // A tensor info is at least name length, n_dims, one dim, type and offset.
    let tensor_cap = c.check_count(
        &|| "tensor_count".into(),
        n_tensors,
        8 + 4 + 8 + 4 + 8,
        c.limits.max_tensors,
    )?;
    let mut tensors = Vec::with_capacity(tensor_cap);
    let mut names = HashSet::with_capacity(tensor_cap);
    for i in 0..n_tensors {
        let t = c.tensor_info(i)?;
        if !names.insert(t.name.clone()) {
            return Err(GgufError::DuplicateTensor(t.name).into());
        }
        tensors.push(t);
    }
    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

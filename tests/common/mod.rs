//! A raw GGUF byte builder for tests: it writes exactly what it is told, valid or not, so tests
//! can produce every malformed header class.
#![allow(dead_code)]

pub struct Gguf {
    pub buf: Vec<u8>,
}

pub const T_U8: u32 = 0;
pub const T_I8: u32 = 1;
pub const T_U16: u32 = 2;
pub const T_I16: u32 = 3;
pub const T_U32: u32 = 4;
pub const T_I32: u32 = 5;
pub const T_F32: u32 = 6;
pub const T_BOOL: u32 = 7;
pub const T_STR: u32 = 8;
pub const T_ARR: u32 = 9;
pub const T_U64: u32 = 10;
pub const T_I64: u32 = 11;
pub const T_F64: u32 = 12;

impl Gguf {
    pub fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut g = Gguf {
            buf: b"GGUF".to_vec(),
        };
        g.u32(version).u64(n_tensors).u64(n_kv);
        g
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend(v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend(v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend(b);
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(T_U32).u32(v)
    }
    pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.str(k).u32(T_STR).str(v)
    }
    pub fn kv_f32(&mut self, k: &str, v: f32) -> &mut Self {
        self.str(k).u32(T_F32).bytes(&v.to_le_bytes())
    }
    pub fn kv_strs(&mut self, k: &str, v: &[&str]) -> &mut Self {
        self.str(k).u32(T_ARR).u32(T_STR).u64(v.len() as u64);
        for s in v {
            self.str(s);
        }
        self
    }
    pub fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads with zeros to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Self {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// A small valid file: 3 metadata keys, 2 F32 tensors of shapes [4,2] and [3], with data.
pub fn valid_file() -> Vec<u8> {
    let mut g = Gguf::new(3, 2, 3);
    g.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 2)
        .kv_strs("tokenizer.ggml.tokens", &["a", "b", "c"])
        .tensor("w", &[4, 2], 0, 0)
        .tensor("b", &[3], 0, 32)
        .pad(32);
    for i in 0..8 {
        g.bytes(&(i as f32).to_le_bytes());
    }
    for i in 0..3 {
        g.bytes(&(10.0 + i as f32).to_le_bytes());
    }
    g.finish()
}

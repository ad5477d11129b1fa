//! The only module that knows wasm-bindgen: a thin adapter from JS to the library (STYLE.md
//! practice 1). Every error crosses the boundary as a JS `Error` with a stable `code` property
//! (`Error::code`); nothing here panics on input.

use crate::gguf::{GgufHeader, Limits, SplitSet};
use crate::tokenizer::Tokenizer;
use wasm_bindgen::prelude::*;

/// A JS `Error` carrying `code`.
fn js_error(e: crate::Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

/// Parses a GGUF header from `bytes`: the whole file, or a prefix holding the header of a file of
/// `file_len` bytes (tensor data never needs to be in wasm memory).
fn header(bytes: &[u8], file_len: Option<f64>) -> Result<GgufHeader, JsValue> {
    let len = file_len.map_or(bytes.len() as u64, |l| l as u64);
    GgufHeader::parse(bytes, len, Limits::default()).map_err(|e| js_error(e.into()))
}

/// `ternlm inspect --json` for a GGUF held in JS: returns the summary as a JSON string.
#[wasm_bindgen]
pub fn inspect(bytes: &[u8], file_len: Option<f64>) -> Result<String, JsValue> {
    let h = header(bytes, file_len)?;
    let file_len = file_len.map_or(bytes.len() as u64, |l| l as u64);
    let set = SplitSet::from_parts(vec![crate::gguf::split::SplitPart {
        header: h,
        file_len,
    }])
    .map_err(|e| js_error(e.into()))?;
    Ok(crate::inspect::summary(&set).to_string())
}

/// A tokenizer built from a GGUF file's metadata.
#[wasm_bindgen(js_name = Tokenizer)]
pub struct WasmTokenizer {
    inner: Tokenizer,
}

#[wasm_bindgen(js_class = Tokenizer)]
impl WasmTokenizer {
    /// Builds the tokenizer from GGUF bytes (the whole file or a prefix holding its header).
    #[wasm_bindgen(js_name = fromGguf)]
    pub fn from_gguf(bytes: &[u8], file_len: Option<f64>) -> Result<WasmTokenizer, JsValue> {
        let h = header(bytes, file_len)?;
        Tokenizer::from_metadata(&h.metadata)
            .map(|inner| WasmTokenizer { inner })
            .map_err(js_error)
    }

    /// Text → token ids, exactly as llama.cpp's `llama_tokenize(text, add_special, parse_special)`.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.inner.encode(text, add_special, parse_special)
    }

    /// Token ids → text.
    pub fn decode(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String, JsValue> {
        self.inner
            .decode(ids, remove_special, unparse_special)
            .map_err(js_error)
    }

    #[wasm_bindgen(getter, js_name = nVocab)]
    pub fn n_vocab(&self) -> usize {
        self.inner.n_vocab()
    }
}

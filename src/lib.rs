//! ternlm: GGUF language models (ternary BitNet b1.58, mixture-of-experts, classic quantized) on
//! WebGPU in the browser, with a wasm CPU fallback, and natively on wgpu.
//!
//! Layers, each knowing only those below it (STYLE.md practice 1):
//! - [`gguf`]: the defensive GGUF container reader (in memory, streamed, split sets);
//! - [`quant`]: every weight format's block type, reference codec and the T2R ternary repack;
//! - [`inspect`]: the model summary behind `ternlm inspect`.

pub mod backend;
pub mod error;
pub mod gguf;
pub mod inspect;
pub mod model;
pub mod quant;
pub mod session;
pub mod tokenizer;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};

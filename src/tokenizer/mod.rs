//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`), chat templates and the streaming
//! detokenizer (spec/runtime.md §7). Conformance oracle: llama.cpp's `llama-vocab.cpp`.

pub mod chat;
pub mod stream;

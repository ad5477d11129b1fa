//! Fuzzes the GGUF reader; the properties are in `fuzz/gguf_check.rs`.
#![no_main]

#[path = "../gguf_check.rs"]
mod gguf_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| gguf_check::check(data));

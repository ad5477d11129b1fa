//! The library under wasm32, in node (`cargo test --target wasm32-unknown-unknown --test
//! wasm_node`, run by scripts/test.sh): the same checks as natively, on data compiled into the test
//! binary (wasm has no file system). Covers every weight codec against the golden vectors, the T2R
//! repack, the GGUF reader, and llama.cpp's tokenizer pairs for BPE and SentencePiece vocabularies.
//! The vocabularies come from `.cache/vocab` (scripts/fetch-models.sh).
#![cfg(target_arch = "wasm32")]

use serde_json::Value;
use ternlm::gguf::GgufFile;
use ternlm::quant::{GgmlType, T2r, TensorView};
use ternlm::tokenizer::Tokenizer;
use wasm_bindgen_test::wasm_bindgen_test;

macro_rules! data {
    ($path:expr) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)).as_slice()
    };
}

macro_rules! quant_sets {
    ($($stem:literal),*) => {
        [$(($stem, data!(concat!("tests/data/quant/", $stem, ".q")), data!(concat!("tests/data/quant/", $stem, ".f32")))),*]
    };
}

#[wasm_bindgen_test]
fn every_codec_is_bit_exact_under_wasm() {
    let manifest: Value = serde_json::from_slice(data!("tests/data/quant/manifest.json")).unwrap();
    let sets = quant_sets!(
        "f32",
        "f16",
        "bf16",
        "q4_0",
        "q4_1",
        "q5_0",
        "q5_1",
        "q8_0",
        "q2_K",
        "q3_K",
        "q4_K",
        "q5_K",
        "q6_K",
        "tq1_0",
        "tq2_0",
        "i2_s",
        "f16.special",
        "q4_K.special",
        "q6_K.special",
        "tq1_0.special",
        "i2_s.special"
    );
    for (stem, q, f) in sets {
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["stem"] == stem)
            .unwrap();
        let ne: Vec<u64> = entry["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let ty = *GgmlType::ALL
            .iter()
            .find(|t| t.name() == entry["type"].as_str().unwrap())
            .unwrap();
        let view = TensorView::new(stem, ty, &ne, q).unwrap();
        let got = view.dequantize().unwrap();
        let want: Vec<f32> = f
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{stem}");
        let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(same(a, b), "{stem}[{i}]: {a} vs {b}");
        }
        if ty.is_ternary() {
            let t2r = T2r::from_tensor(&view).unwrap();
            let mut row = vec![0.0; view.ncols()];
            for r in 0..view.nrows() {
                t2r.dequantize_row(r, &mut row).unwrap();
                let src = &got[r * view.ncols()..(r + 1) * view.ncols()];
                assert!(
                    row.iter().zip(src).all(|(a, b)| same(a, b)),
                    "{stem} T2R row {r}"
                );
            }
        }
    }
}

#[wasm_bindgen_test]
fn gguf_reader_under_wasm() {
    let f = GgufFile::from_bytes(data!("tests/data/models/tiny-qwen3-q8_0.gguf")).unwrap();
    assert_eq!(f.metadata().architecture().unwrap(), "qwen3");
    assert!(f
        .tensors()
        .iter()
        .any(|t| t.name == "blk.0.attn_q_norm.weight"));
    let e =
        GgufFile::from_bytes(&data!("tests/data/models/tiny-qwen3-q8_0.gguf")[..1000]).unwrap_err();
    assert_eq!(e.code(), "gguf_truncated");
}

/// test-tokenizer-0's pairs: inputs split on the separator, one line of ids per input.
fn check_vocab(name: &str, gguf: &[u8], inp: &str, out: &str) {
    let f = ternlm::gguf::GgufHeader::parse(gguf, gguf.len() as u64, Default::default()).unwrap();
    let tok = Tokenizer::from_metadata(&f.metadata).unwrap();
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = out.lines().collect();
    let n = inputs.len().min(outputs.len());
    assert!(n > 10, "{name}: {n} pairs");
    for (text, ids) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = ids.split_whitespace().map(|t| t.parse().unwrap()).collect();
        assert_eq!(tok.encode(text, false, false), want, "{name}: {text:?}");
    }
}

macro_rules! vocab_test {
    ($fn:ident, $name:literal) => {
        #[wasm_bindgen_test]
        fn $fn() {
            check_vocab(
                $name,
                data!(concat!(".cache/vocab/ggml-vocab-", $name, ".gguf")),
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/.cache/vocab/ggml-vocab-",
                    $name,
                    ".gguf.inp"
                )),
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/.cache/vocab/ggml-vocab-",
                    $name,
                    ".gguf.out"
                )),
            );
        }
    };
}

vocab_test!(vocab_llama_bpe, "llama-bpe");
vocab_test!(vocab_qwen2, "qwen2");
vocab_test!(vocab_gpt2, "gpt-2");
vocab_test!(vocab_llama_spm, "llama-spm");
vocab_test!(vocab_phi3, "phi-3");

/// Logits of `model` for golden sequence `seq` against llama.cpp's, and its greedy run.
fn check_model(name: &str, gguf: &[u8], manifest: &str, goldens: &[&[u8]], nmse_bound: f64) {
    use ternlm::model::{LogitsFor, Model};
    use ternlm::session::{Engine, GenerateParams, Input, SamplerParams, SessionOptions};
    let m: Value = serde_json::from_str(manifest).unwrap();
    let model = Model::from_bytes(gguf.to_vec()).unwrap();
    for (seq, want) in m["sequences"].as_array().unwrap().iter().zip(goldens) {
        let tokens: Vec<u32> = seq["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let mut cache = model.new_cache(tokens.len());
        let got = model.forward(&mut cache, &tokens, LogitsFor::All).unwrap();
        let want: Vec<f32> = want
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        let num: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let den: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
        assert!(
            num / den <= nmse_bound,
            "{name}: NMSE {} over {} tokens",
            num / den,
            tokens.len()
        );
    }
    // Greedy generation through the session layer gives llama.cpp's ids.
    let g = &m["greedy"];
    let prompt: Vec<u32> = g["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<u32> = g["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let engine = Engine::new(model).unwrap();
    let mut session = engine
        .session(SessionOptions {
            seed: Some(1),
            ..Default::default()
        })
        .unwrap();
    let sampling = SamplerParams {
        temperature: 0.0,
        repetition_penalty: 1.0,
        ..Default::default()
    };
    let params = GenerateParams {
        sampling: Some(sampling),
        max_tokens: Some(want.len()),
        ignore_eos: true,
        ..Default::default()
    };
    let done = session.complete(Input::Tokens(prompt), params).unwrap();
    assert_eq!(done.tokens, want, "{name}: greedy ids");
}

#[wasm_bindgen_test]
fn llama_f32_model_under_wasm_matches_llama_cpp() {
    check_model(
        "tiny-llama-f32",
        data!("tests/data/models/tiny-llama-f32.gguf"),
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/golden/logits/tiny-llama-f32.json"
        )),
        &[
            data!("tests/data/golden/logits/tiny-llama-f32.s0.f32"),
            data!("tests/data/golden/logits/tiny-llama-f32.s1.f32"),
        ],
        1e-4,
    );
}

#[wasm_bindgen_test]
fn qwen3_q8_0_model_under_wasm_matches_llama_cpp() {
    check_model(
        "tiny-qwen3-q8_0",
        data!("tests/data/models/tiny-qwen3-q8_0.gguf"),
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/golden/logits/tiny-qwen3-q8_0.json"
        )),
        &[
            data!("tests/data/golden/logits/tiny-qwen3-q8_0.s0.f32"),
            data!("tests/data/golden/logits/tiny-qwen3-q8_0.s1.f32"),
        ],
        5e-3,
    );
}

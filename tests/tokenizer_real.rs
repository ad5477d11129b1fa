//! The real vocabularies (SmolLM2-135M: GPT-2 BPE `smollm`; gemma-3-270m: SentencePiece, 262k)
//! against llama.cpp on the 410 tricky strings of tests/data/tokenizer (made by
//! scripts/gen_tokenizer_golden.py with our llama.h tool): ids exactly, decode exactly, and
//! detokenize(tokenize(s)) == s wherever llama.cpp round-trips. Then the streaming property: the
//! concatenation of the streamed deltas (one token at a time) equals decoding all ids at once.
//! The models come from scripts/fetch-models.sh; the test fails when they are missing.

mod model_util;

use model_util::cache_model;
use serde_json::Value;
use std::path::Path;
use ternlm::gguf::SplitSet;
use ternlm::tokenizer::stream::{StopStep, TextStream, Utf8Stream};
use ternlm::tokenizer::Tokenizer;

fn load(file: &str) -> Tokenizer {
    let path = cache_model(file);
    Tokenizer::from_metadata(SplitSet::open(&path).unwrap().metadata()).unwrap()
}

fn goldens(stem: &str) -> Vec<Value> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tokenizer/{stem}.jsonl"));
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(file: &str, stem: &str) {
    let tok = load(file);
    let records = goldens(stem);
    assert!(records.len() >= 400, "{stem}: {} records", records.len());
    let mut failures = Vec::new();
    let mut roundtrips = 0;
    for r in &records {
        let text = r["text"].as_str().unwrap();
        let special = r["special"].as_bool().unwrap();
        let want: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, special, special);
        if got != want {
            failures.push(format!(
                "{stem} special={special} {text:?}\n  want {want:?}\n  got  {got:?}"
            ));
            continue;
        }
        let detok = tok.decode(&got, special, special).unwrap();
        if detok != r["detok"].as_str().unwrap() {
            failures.push(format!(
                "{stem} special={special} decode of {text:?}: {detok:?}"
            ));
        }
        if let Some(plain) = r.get("detok_plain") {
            let d = tok.decode(&got, false, false).unwrap();
            if d != plain.as_str().unwrap() {
                failures.push(format!("{stem} plain decode of {text:?}: {d:?}"));
            }
        }
        if r["roundtrip"].as_bool().unwrap() {
            assert_eq!(
                detok, text,
                "{stem}: llama.cpp round-trips {text:?}, we must too"
            );
            roundtrips += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(roundtrips >= 800, "{stem}: only {roundtrips} round trips");
}

#[test]
fn smollm2_matches_llama_cpp() {
    check(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1",
    );
    let tok = load("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(
        tok.encode("Hello world, this is 🦙.cpp", true, true),
        [19556, 905, 28, 451, 314, 15107, 116, 243, 30, 35392]
    );
}

#[test]
fn gemma3_matches_llama_cpp() {
    check("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m");
}

/// Streams `ids` one token at a time: UTF-8-safe deltas whose concatenation is the whole decode.
fn stream_equals_decode(tok: &Tokenizer, ids: &[u32]) {
    let mut s = Utf8Stream::new();
    let mut out = String::new();
    for &id in ids {
        out.push_str(&s.push(&tok.token_to_piece(id, true).unwrap()));
    }
    out.push_str(&s.finish());
    assert_eq!(out, tok.decode(ids, false, true).unwrap(), "{ids:?}");
}

#[test]
fn streaming_equals_whole_decode_on_real_vocabularies() {
    for (file, stem) in [
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_1",
        ),
        ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"),
    ] {
        let tok = load(file);
        for r in goldens(stem).iter().filter(|r| r["special"] == false) {
            let ids: Vec<u32> = r["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            stream_equals_decode(&tok, &ids);
        }
        // Emoji and CJK split over byte tokens.
        let ids = tok.encode("🦙 👩‍👩‍👧 世界 e\u{301}", false, false);
        stream_equals_decode(&tok, &ids);
    }
}

#[test]
fn stop_strings_spanning_tokens_never_leak() {
    let tok = load("SmolLM2-135M-Instruct.Q4_1.gguf");
    let ids = tok.encode("The answer is 42.\nUser: and more", false, false);
    let mut ts = TextStream::new(["\nUser:"]);
    let mut shown = String::new();
    let mut stopped = false;
    for id in ids {
        match ts.push(&tok.token_to_piece(id, true).unwrap()) {
            StopStep::Text(t) => shown.push_str(&t),
            StopStep::Stopped { text, .. } => {
                shown.push_str(&text);
                stopped = true;
                break;
            }
        }
    }
    assert!(stopped);
    assert_eq!(shown, "The answer is 42.");
}

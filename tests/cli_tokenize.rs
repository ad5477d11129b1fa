//! `ternlm tokenize` / `detokenize` on the real SmolLM2 vocabulary (scripts/fetch-models.sh).

mod model_util;

use model_util::cache_model;
use std::path::PathBuf;
use std::process::Command;

fn smollm2() -> PathBuf {
    cache_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ternlm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn tokenize_and_detokenize() {
    let m = smollm2();
    let m = m.to_str().unwrap();
    let (ok, out, _) = run(&["tokenize", "-m", m, "--text", "Hello world, this is 🦙.cpp"]);
    assert!(ok);
    assert_eq!(out.trim(), "[19556,905,28,451,314,15107,116,243,30,35392]");

    // Special-token text is parsed by default and kept as text with --no-special.
    let (_, special, _) = run(&["tokenize", "-m", m, "--text", "<|im_start|>"]);
    let (_, plain, _) = run(&[
        "tokenize",
        "-m",
        m,
        "--text",
        "<|im_start|>",
        "--no-special",
    ]);
    assert_eq!(special.trim(), "[1]");
    assert!(plain.trim().len() > 4, "{plain}");

    // --chat renders the ChatML template around the message, with the generation prompt.
    let (ok, chat, _) = run(&["tokenize", "-m", m, "--text", "Hi", "--chat"]);
    assert!(ok);
    let ids: Vec<u32> = serde_json::from_str(chat.trim()).unwrap();
    assert_eq!(ids[0], 1, "starts with <|im_start|>");
    let csv: Vec<String> = ids.iter().map(u32::to_string).collect();
    let (ok, text, _) = run(&["detokenize", "-m", m, "--ids", &csv.join(",")]);
    assert!(ok);
    assert!(
        text.contains("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text:?}"
    );

    let (ok, text, _) = run(&["detokenize", "-m", m, "--ids", "19556,905"]);
    assert!(ok);
    assert_eq!(text, "Hello world\n");

    // Out-of-range ids are a typed error, not a panic.
    let (ok, _, err) = run(&["detokenize", "-m", m, "--ids", "99999999"]);
    assert!(!ok);
    assert!(err.contains("[tokenizer_token_range]"), "{err}");
}

//! `ternlm inspect` agrees with gguf-py's `GGUFReader` (the dumps in tests/data/dumps, made by
//! scripts/gguf_dump.py): version, counts, alignment, data offset, every metadata entry (arrays by
//! element type, length, first values and payload sha256), and every tensor's name, shape, type,
//! offset and size. Split sets are compared merged, against the dumps of all their files.
//!
//! The real models (SmolLM2-135M, gemma-3-270m) come from `scripts/fetch-models.sh` into
//! `$TERNLM_CACHE` (default `.cache`); the test fails, not skips, when they are missing.

mod model_util;

use model_util::cache_model;
use serde_json::Value as Json;
use std::path::Path;
use ternlm::gguf::SplitSet;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dump(name: &str) -> Json {
    let p = repo().join("tests/data/dumps").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Compares the summary of the set opened at `model` with the dumps of its files.
fn check(model: &Path, dumps: &[Json]) {
    assert!(
        model.exists(),
        "{} is missing: run scripts/fetch-models.sh (the README's setup command)",
        model.display()
    );
    let set = SplitSet::open(model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let s = ternlm::inspect::summary(&set);
    let files = s["files"].as_array().unwrap();
    assert_eq!(files.len(), dumps.len());
    let mut expected_tensors = Vec::new();
    for (i, (f, d)) in files.iter().zip(dumps).enumerate() {
        for k in [
            "version",
            "tensor_count",
            "kv_count",
            "alignment",
            "data_offset",
        ] {
            assert_eq!(f[k], d[k], "{}: file {i} {k}", model.display());
        }
        for t in d["tensors"].as_array().unwrap() {
            let mut t = t.clone();
            t["file"] = i.into();
            expected_tensors.push(t);
        }
    }
    // Metadata: the first file's, entry by entry in file order.
    let ours = s["metadata"].as_array().unwrap();
    let theirs = dumps[0]["metadata"].as_array().unwrap();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{}: metadata count",
        model.display()
    );
    for (a, b) in ours.iter().zip(theirs) {
        let key = b["key"].as_str().unwrap();
        for field in ["key", "type", "value", "elem_type", "len", "sha256"] {
            assert_eq!(
                a.get(field),
                b.get(field),
                "{}: {key}.{field}",
                model.display()
            );
        }
        if a["type"] == "ARRAY" && b["elem_type"] != "ARRAY" {
            assert_eq!(a["head"], b["head"], "{}: {key} head", model.display());
        }
    }
    let ours = s["tensors"].as_array().unwrap();
    assert_eq!(
        ours.len(),
        expected_tensors.len(),
        "{}: tensor count",
        model.display()
    );
    for (a, b) in ours.iter().zip(&expected_tensors) {
        assert_eq!(a, b, "{}: tensor", model.display());
    }
}

#[test]
fn synthetic_models_match_gguf_py() {
    let dir = repo().join("tests/data/models");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix(".gguf") else {
            continue;
        };
        if stem.ends_with("-00002-of-00002") {
            continue; // compared through its first file
        }
        let dumps = match stem.strip_suffix("-00001-of-00002") {
            Some(base) => vec![dump(stem), dump(&format!("{base}-00002-of-00002"))],
            None => vec![dump(stem)],
        };
        check(&path, &dumps);
        n += 1;
    }
    assert!(n >= 16, "only {n} synthetic model sets found");
}

#[test]
fn real_smollm2_matches_gguf_py() {
    check(
        &cache_model("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &[dump("SmolLM2-135M-Instruct.Q4_1")],
    );
}

#[test]
fn real_gemma3_matches_gguf_py() {
    check(
        &cache_model("gemma-3-270m-q4_k_m.gguf"),
        &[dump("gemma-3-270m-q4_k_m")],
    );
}

#[test]
fn cli_inspect_json_and_text() {
    let model = repo().join("tests/data/models/tiny-split-00002-of-00002.gguf");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ternlm"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, json, _) = run(&["inspect", model.to_str().unwrap(), "--json"]);
    assert!(ok);
    let s: Json = serde_json::from_str(&json).unwrap();
    assert_eq!(s["architecture"], "llama");
    assert_eq!(s["files"].as_array().unwrap().len(), 2);
    assert_eq!(s["tensors"].as_array().unwrap().len(), 21);
    assert_eq!(s["tokenizer"]["model"], "gpt2");
    assert_eq!(s["tokenizer"]["vocab_size"], 265);
    assert_eq!(s["hyperparameters"]["block_count"], 2);
    let params: u64 = s["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(s["total_params"], params);

    let (ok, text, _) = run(&["inspect", model.to_str().unwrap()]);
    assert!(ok);
    assert!(
        text.contains("architecture: llama")
            && text.contains("blk.1.ffn_down.weight")
            && text.contains("totals by type"),
        "{text}"
    );

    // A malformed file gives a typed error on stderr and a failing exit status.
    let bad = std::env::temp_dir().join(format!("ternlm-bad-{}.gguf", std::process::id()));
    std::fs::write(&bad, b"GGUF\x03\0\0\0garbage").unwrap();
    let (ok, _, err) = run(&["inspect", bad.to_str().unwrap()]);
    std::fs::remove_file(&bad).unwrap();
    assert!(!ok);
    assert!(err.contains("[gguf_truncated]"), "{err}");
}

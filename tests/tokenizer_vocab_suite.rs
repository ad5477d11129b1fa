//! llama.cpp's `tests/test-tokenizer-0.cpp` over the vocabulary GGUFs of the cache
//! (`$TERNLM_CACHE/vocab` or `<repo>/.cache/vocab`, filled by `scripts/fetch-models.sh`).
//!
//! For every `ggml-vocab-*.gguf` whose tokenizer ternlm supports and that has `.inp`/`.out` files,
//! every pair is run exactly as test-tokenizer-0 does: inputs split on `"\n__ggml_vocab_test__\n"`,
//! expected ids space-separated one line per input, `encode(text, add_special = false,
//! parse_special = false)`. Then decoding those ids must give what llama.cpp's detokenizer gives,
//! checked against `tests/data/vocab_golden/*.golden` (produced by `scripts/gen_vocab_golden.sh`
//! from llama.cpp), which also holds encodings with BOS/EOS and special-token parsing, inputs
//! containing special tokens, and a digest of every token's piece.
//!
//! A missing cache fails the test (it is not skipped): run `scripts/fetch-models.sh` first.

mod model_util;

use model_util::cache_dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use ternlm::gguf::SplitSet;
use ternlm::tokenizer::Tokenizer;

fn vocab_files() -> Vec<PathBuf> {
    let dir = cache_dir().join("vocab");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "vocab cache {} is missing ({e}): run scripts/fetch-models.sh or set TERNLM_CACHE",
            dir.display()
        )
    });
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ggml-vocab-") && n.ends_with(".gguf"))
        })
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "no ggml-vocab-*.gguf in {}: run scripts/fetch-models.sh",
        dir.display()
    );
    v
}

fn name(p: &Path) -> String {
    let f = p.file_name().unwrap().to_str().unwrap();
    f.trim_start_matches("ggml-vocab-")
        .trim_end_matches(".gguf")
        .to_string()
}

fn with_ext(p: &Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// test-tokenizer-0's `read_tests`: a map, so a repeated input keeps its last expectation.
fn read_pairs(inp: &Path, out: &Path) -> BTreeMap<String, Vec<u32>> {
    let raw = std::fs::read_to_string(inp).unwrap();
    let outs = std::fs::read_to_string(out).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut sinp = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            Some(n) => {
                sinp.push(&raw[pos..pos + n]);
                pos += n + sep.len();
            }
            None => {
                sinp.push(&raw[pos..]);
                break;
            }
        }
    }
    let sout: Vec<&str> = outs.lines().collect();
    assert_eq!(
        sinp.len(),
        sout.len(),
        "{}: input and output files have different numbers of tests",
        inp.display()
    );
    sinp.into_iter()
        .zip(sout)
        .map(|(s, o)| {
            let ids = o
                .split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect();
            (s.to_string(), ids)
        })
        .collect()
}

/// The expected outcome per tokenizer model.
fn supported(model: &str) -> bool {
    matches!(model, "gpt2" | "llama" | "gemma4")
}

#[test]
fn vocab_pairs_match_llama_cpp() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for path in vocab_files() {
        let vocab = name(&path);
        let set = SplitSet::open(&path).unwrap();
        let model = set
            .metadata()
            .str("tokenizer.ggml.model")
            .unwrap()
            .unwrap_or("")
            .to_string();
        let tok = Tokenizer::from_metadata(set.metadata());
        if !supported(&model) {
            let e = tok.expect_err(&format!("{vocab}: model {model} must be refused"));
            assert_eq!(e.code(), "tokenizer_unknown_model", "{vocab}: {e}");
            report.push(format!("{vocab}: model {model} refused (UnknownModel)"));
            continue;
        }
        let tok = tok.unwrap_or_else(|e| panic!("{vocab}: {e}"));
        let (inp, out) = (with_ext(&path, ".inp"), with_ext(&path, ".out"));
        if !inp.exists() || !out.exists() {
            report.push(format!("{vocab}: loads (no .inp/.out pairs)"));
            continue;
        }
        let pairs = read_pairs(&inp, &out);
        let mut passed = 0;
        for (text, want) in &pairs {
            let got = tok.encode(text, false, false);
            if &got == want {
                passed += 1;
            } else {
                failures.push(format!(
                    "{vocab}: input {text:?}\n  expected {want:?}\n  got      {got:?}"
                ));
            }
        }
        report.push(format!("{vocab}: {passed}/{} pairs", pairs.len()));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} failing pairs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The golden's GGUF: a vocabulary of the cache, or one of the two real models.
fn golden_model(name: &str) -> PathBuf {
    let c = cache_dir();
    match name {
        "SmolLM2-135M-Instruct" => c.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "gemma-3-270m" => c.join("models/gemma-3-270m-q4_k_m.gguf"),
        v => c.join(format!("vocab/ggml-vocab-{v}.gguf")),
    }
}

/// `tests/data/vocab_golden/<name>.golden`, one record per line:
/// `M model`, `V n_vocab bos eos eot add_bos add_eos` (-1: none), `H` FNV-1a-64 over every id of
/// (id, piece(special), piece(plain), is_eog), then per input string `S hex(text)`,
/// `T` ids of `encode(text, true, true)`, `D`/`E` hex of `decode(T, false, false)` /
/// `decode(T, true, true)`, `R` hex of `decode(encode(text, false, false), false, false)`.
#[test]
fn goldens_match_llama_cpp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocab_golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "golden"))
        .collect();
    files.sort();
    assert!(files.len() >= 16, "goldens missing in {}", dir.display());
    let opt = |v: Option<u32>| v.map_or(-1, |x| x as i64);
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for file in files {
        let name = file.file_stem().unwrap().to_str().unwrap().to_string();
        let path = golden_model(&name);
        let set = SplitSet::open(&path).unwrap_or_else(|e| {
            panic!(
                "{name}: {} ({e}): run scripts/fetch-models.sh",
                path.display()
            )
        });
        let tok =
            Tokenizer::from_metadata(set.metadata()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = std::fs::read_to_string(&file).unwrap();
        let mut fail = |what: String| failures.push(format!("{name}: {what}"));
        let (mut n_strings, mut input) = (0, Vec::new());
        let mut ids: Vec<u32> = Vec::new();
        for line in text.lines() {
            let (tag, rest) = line.split_at(1);
            let rest = rest.trim_start();
            let input_str = || String::from_utf8(input.clone()).expect("golden input is UTF-8");
            match tag {
                "M" => assert_eq!(tok.model_name(), rest, "{name}: model"),
                "V" => {
                    let v: Vec<i64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    let sp = tok.vocab().special();
                    let got = [
                        tok.n_vocab() as i64,
                        opt(sp.bos),
                        opt(sp.eos),
                        opt(sp.eot),
                        tok.add_bos() as i64,
                        tok.add_eos() as i64,
                    ];
                    // Without an eot key llama.cpp takes the first EOT-looking text its hash map
                    // yields; ternlm takes the first of its list. Both must end generation.
                    let eot_ok = got[3] == v[3]
                        || (tok.is_eog(got[3] as u32) && v[3] >= 0 && tok.is_eog(v[3] as u32));
                    if got[..3] != v[..3] || got[4..] != v[4..] || !eot_ok {
                        fail(format!("vocab facts {got:?}, llama.cpp {v:?}"));
                    } else if got[3] != v[3] {
                        report.push(format!(
                            "{name}: eot {} where llama.cpp picks {}",
                            got[3], v[3]
                        ));
                    }
                }
                "H" => {
                    let mut h = 0xcbf29ce484222325u64;
                    for id in 0..tok.n_vocab() as u32 {
                        h = fnv(h, &id.to_le_bytes());
                        for special in [true, false] {
                            let p = tok.token_to_piece(id, special).unwrap();
                            h = fnv(h, &(p.len() as u32).to_le_bytes());
                            h = fnv(h, &p);
                        }
                        h = fnv(h, &[tok.is_eog(id) as u8]);
                    }
                    if format!("{h:016x}") != rest {
                        fail("token pieces / EOG set differ from llama.cpp".into());
                    }
                }
                "S" => {
                    input = unhex(rest);
                    n_strings += 1;
                }
                "T" => {
                    let want: Vec<u32> = rest
                        .split_whitespace()
                        .map(|x| x.parse().unwrap())
                        .collect();
                    ids = tok.encode(&input_str(), true, true);
                    if ids != want {
                        fail(format!(
                            "encode(special) of {:?}\n  expected {want:?}\n  got      {ids:?}",
                            input_str()
                        ));
                        ids = want;
                    }
                }
                "D" | "E" | "R" => {
                    let got = match tag {
                        "D" => tok.decode_bytes(&ids, false, false),
                        "E" => tok.decode_bytes(&ids, true, true),
                        _ => {
                            tok.decode_bytes(&tok.encode(&input_str(), false, false), false, false)
                        }
                    }
                    .unwrap();
                    let want = unhex(rest);
                    if got != want {
                        fail(format!(
                            "decode {tag} of {:?}\n  expected {:?}\n  got      {:?}",
                            input_str(),
                            String::from_utf8_lossy(&want),
                            String::from_utf8_lossy(&got)
                        ));
                    }
                }
                _ => panic!("{name}: bad golden line {line:?}"),
            }
        }
        report.push(format!("{name}: {n_strings} strings"));
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! Replays the fuzz seeds and every past fuzzer finding (fuzz/seeds/gguf_reader) through the
//! fuzz target's property checks, plus every synthetic model with several chunk sizes.

#[path = "../fuzz/gguf_check.rs"]
mod gguf_check;

use std::path::Path;

#[test]
fn fuzz_seeds_and_findings_hold() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gguf_reader");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        gguf_check::check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 3, "only {n} seeds");
}

#[test]
fn synthetic_models_hold_for_several_chunk_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models");
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "gguf") {
            let bytes = std::fs::read(&path).unwrap();
            for chunk in [1u8, 7, 255] {
                let mut input = vec![chunk];
                input.extend_from_slice(&bytes);
                gguf_check::check(&input);
            }
        }
    }
}

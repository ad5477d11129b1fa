use std::time::Instant;
use ternlm::gguf::SplitSet;
use ternlm::tokenizer::Tokenizer;
#[test]
fn bench() {
    let text = std::fs::read_to_string("/tmp/bench/mixed-1mb.txt").unwrap();
    for f in [".cache/vocab/ggml-vocab-llama-bpe.gguf", ".cache/models/gemma-3-270m-q4_k_m.gguf", ".cache/vocab/ggml-vocab-qwen2.gguf", ".cache/vocab/ggml-vocab-llama-spm.gguf"] {
        let mut best = (f64::MAX, f64::MAX, f64::MAX);
        let mut n = 0;
        for _ in 0..5 {
            let t0 = Instant::now();
            let set = SplitSet::open(std::path::Path::new(f)).unwrap();
            let t1 = Instant::now();
            let tok = Tokenizer::from_metadata(set.metadata()).unwrap();
            let t2 = Instant::now();
            let ids = tok.encode(&text, true, true);
            let t3 = Instant::now();
            n = ids.len();
            best.0 = best.0.min((t1 - t0).as_secs_f64() * 1e3);
            best.1 = best.1.min((t2 - t1).as_secs_f64() * 1e3);
            best.2 = best.2.min((t3 - t2).as_secs_f64() * 1e3);
        }
        eprintln!("{f}: gguf {:.1} ms, build {:.1} ms, encode {:.1} ms ({} tokens, {:.2} MB/s)", best.0, best.1, best.2, n, text.len() as f64 / 1e6 / (best.2 / 1e3));
    }
}
#[test]
fn same_as_llama_tokenize() {
    let text = std::fs::read_to_string("/tmp/bench/mixed-1mb.txt").unwrap();
    let set = SplitSet::open(std::path::Path::new(".cache/vocab/ggml-vocab-llama-bpe.gguf")).unwrap();
    let tok = Tokenizer::from_metadata(set.metadata()).unwrap();
    let ids = tok.encode(&text, true, true);
    let want: Vec<u32> = std::fs::read_to_string("/tmp/bench/ll.ids").unwrap().trim().trim_start_matches('[').trim_end_matches(']').split(", ").map(|x| x.trim().parse().unwrap()).collect();
    assert_eq!(ids.len(), want.len());
    assert!(ids == want);
}
#[test]
fn build_parts() {
    let set = SplitSet::open(std::path::Path::new(".cache/vocab/ggml-vocab-llama-bpe.gguf")).unwrap();
    for _ in 0..3 {
        let t0 = Instant::now();
        let v = ternlm::tokenizer::Vocab::from_metadata(set.metadata()).unwrap();
        let t1 = Instant::now();
        let tok = Tokenizer::from_metadata(set.metadata()).unwrap();
        let t2 = Instant::now();
        eprintln!("vocab {:.1} ms, full {:.1} ms {}", (t1-t0).as_secs_f64()*1e3, (t2-t1).as_secs_f64()*1e3, v.len() + tok.n_vocab());
    }
}

//! Throughput of the CPU backend on a real model (not a correctness test; run by hand):
//! `cargo test --release --test model_bench -- --ignored --nocapture`
//! Environment: BENCH_MODEL (default .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf),
//! BENCH_PROMPT (default 512), BENCH_GEN (default 128), TERNLM_THREADS.

use std::path::PathBuf;
use std::time::Instant;
use ternlm::model::{LogitsFor, Model};

#[test]
#[ignore = "benchmark; run with --release --ignored"]
fn prefill_and_decode_throughput() {
    let path = std::env::var("BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return;
    }
    let n_prompt: usize = std::env::var("BENCH_PROMPT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let n_gen: usize = std::env::var("BENCH_GEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let model = Model::from_file(&path).unwrap();
    let v = model.spec().n_vocab as u32;
    let prompt: Vec<u32> = (0..n_prompt as u32).map(|i| (i * 7919 + 13) % v).collect();
    let mut cache = model.new_cache(n_prompt + n_gen + 1);
    // Warm-up (first-touch of the weights).
    model
        .forward(&mut cache, &prompt[..8], LogitsFor::Last)
        .unwrap();
    cache.truncate(0);

    let t = Instant::now();
    let logits = model.forward(&mut cache, &prompt, LogitsFor::Last).unwrap();
    let pp = t.elapsed().as_secs_f64();
    let mut next = argmax(&logits);
    let t = Instant::now();
    for _ in 0..n_gen {
        let l = model.forward(&mut cache, &[next], LogitsFor::Last).unwrap();
        next = argmax(&l);
    }
    let tg = t.elapsed().as_secs_f64();
    // As llama-bench's tg: decode from an empty cache.
    let mut cache = model.new_cache(n_gen + 1);
    let mut next = prompt[0];
    let t = Instant::now();
    for _ in 0..n_gen {
        let l = model.forward(&mut cache, &[next], LogitsFor::Last).unwrap();
        next = argmax(&l);
    }
    let tg0 = t.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} threads, kernel {:?}: prefill {n_prompt} tokens {:.1} tok/s; decode {n_gen} \
         tokens {:.1} tok/s from an empty cache, {:.1} tok/s after the prompt",
        path.file_name().unwrap().to_string_lossy(),
        model.threads(),
        model.kernel(),
        n_prompt as f64 / pp,
        n_gen as f64 / tg0,
        n_gen as f64 / tg
    );
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

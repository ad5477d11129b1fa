//! Decode attention timing (`attn::attention`, one query row), not a correctness test: the
//! real decode shapes over KV caches of 32-4096 positions, each call recorded `CALLS` times
//! back to back in one submission (as a decode step records one per layer), GPU time per call
//! (`gpu_util::gpu_seconds_per_call`).
//! Ignored by default; on a GPU machine:
//! `cargo test --release --test gpu_bench_attn -- --ignored --nocapture`.

#![cfg(not(target_arch = "wasm32"))]

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::attn;
use ternlm::backend::AttnParams;

/// Calls per timed submission (a 30-layer model's worth, a few times over).
const CALLS: usize = 120;

#[test]
#[ignore]
fn attention_decode_timing() {
    let ctx = ctx();
    eprintln!("adapter {} (subgroups {})", ctx.adapter.name, ctx.subgroups);
    // (name, n_head, n_head_kv, head_dim)
    let shapes = [
        ("smollm2-135m", 9, 3, 64),
        ("bitnet-2b", 20, 5, 128),
        ("llama-3.2-1b", 32, 8, 64),
        ("gemma-3", 4, 1, 256),
    ];
    let mut rng = Rng::new(3);
    for (name, n_head, n_head_kv, hd) in shapes {
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim: hd,
            head_dim_v: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window: None,
            batched: false,
        };
        let cap = 4096;
        let row = attn::kv_row_words(&ctx, n_head_kv * hd);
        let q = upload_f32(&ctx, &rng.values(n_head * hd));
        let k = upload_f32(&ctx, &rng.values(cap * row));
        let v = upload_f32(&ctx, &rng.values(cap * row));
        let o = ctx.storage("o", (n_head * hd * 4) as u64);
        let scratch_len = attn::attention_splits(1, cap - 1, &p).2.max(1);
        let scratch = ctx.storage("scratch", (scratch_len * 4) as u64);
        for n_kv in [32, 48, 64, 96, 128, 512, 1024, 2048, 4096] {
            let t = gpu_seconds_per_call(&ctx, CALLS, &|e| {
                attn::attention(&ctx, e, &q, &k, &v, &o, &scratch, 1, n_kv - 1, &p).unwrap()
            });
            let (splits, _, _) = attn::attention_splits(1, n_kv - 1, &p);
            eprintln!(
                "{name} heads {n_head}/{n_head_kv} hd {hd} ctx {n_kv:5}: {:7.2} µs/call ({splits} splits)",
                t * 1e6
            );
        }
    }
}

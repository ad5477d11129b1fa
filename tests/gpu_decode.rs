//! Greedy decoding of committed synthetic models through the async model API
//! (`Model::forward_argmax_async`, `forward_async`): the CPU and the GPU must give the same ids,
//! natively (lavapipe) and in headless Chromium (tests/gpu_browser.rs includes this file), and
//! those ids are llama.cpp's own greedy continuation (`greedy.generated_ids` of
//! tests/data/golden/logits/<model>.json), so every side checks one constant.

mod gpu_util;

use gpu_util::*;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::{LogitsFor, Model};
use ternlm::session::sampler::argmax;

/// The prompt in one call, then one token per call, each step's argmax fed back; then the whole
/// sequence again in one call with every position's logits, whose argmaxes must be the same
/// ids (the logits readback and a multi-token chunk).
async fn decode(m: &Model, c: &DecodeCase) -> Vec<u32> {
    let n = c.want.len();
    let mut cache = m.new_cache(c.prompt.len() + n);
    let mut ids = Vec::with_capacity(n);
    let mut id = m
        .forward_argmax_async(&mut cache, c.prompt)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
    ids.push(id);
    while ids.len() < n {
        id = m
            .forward_argmax_async(&mut cache, &[id])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        ids.push(id);
    }
    let mut seq = c.prompt.to_vec();
    seq.extend(&ids[..n - 1]);
    let mut cache = m.new_cache(seq.len());
    let logits = m
        .forward_async(&mut cache, &seq, LogitsFor::All)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let n_vocab = m.spec().n_vocab;
    let recomputed: Vec<u32> = logits
        .chunks(n_vocab)
        .skip(c.prompt.len() - 1)
        .map(argmax)
        .collect();
    assert_eq!(
        recomputed, ids,
        "{}: argmax of the logits of one call",
        c.name
    );
    ids
}

fn load(c: &DecodeCase) -> Model {
    Model::from_bytes(c.bytes.to_vec()).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

#[gpu_test]
async fn greedy_ids_on_cpu() {
    for c in DECODE_CASES {
        assert_eq!(decode(&load(c), c).await, c.want, "{} on the CPU", c.name);
    }
}

#[gpu_test]
async fn greedy_ids_on_gpu() {
    for c in DECODE_CASES {
        let mut m = load(c);
        m.use_gpu_async(&GpuOptions::default())
            .await
            .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
        let adapter = &m.gpu().expect("attached").ctx.adapter;
        eprintln!("{}: {} ({})", c.name, adapter.name, adapter.backend);
        assert_eq!(decode(&m, c).await, c.want, "{} on the GPU", c.name);
    }
}

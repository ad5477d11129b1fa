//! Sampling on the GPU from the top candidates (issue #5 item 3; runtime.md §5.4): a generation
//! whose sampler needs only the best `k + |touched|` logits reads back those (`ops::top_k`,
//! 8 bytes each) instead of the row, and must sample exactly the tokens of the same GPU model
//! reading the whole row (`GenerateParams::full_logits`), for the same seed, under greedy,
//! penalized greedy, top-k with temperature / min-p / top-p / penalties / negative biases / bans,
//! final log-probabilities, and the chains that keep the full row (Mirostat, a raising bias,
//! more candidates than half the vocabulary). Prints the bytes read back per generated token of both paths
//! (`GpuContext::bytes_read`).
//!
//! Also `Model::forward_top_k` against the CPU's `top_k` of the same GPU's full logits row.

mod model_util;

use model_util::*;
use ternlm::backend::cpu::ops::top_k;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::{LogitsFor, Model};
use ternlm::session::{
    Engine, GenerateParams, Input, LogprobSource, SamplerParams, Session, SessionOptions,
};

fn gpu_model(path: &std::path::Path) -> Model {
    let mut m = load(path);
    m.use_gpu(&GpuOptions::default()).unwrap();
    m
}

fn session(e: &Engine) -> Session {
    e.session(SessionOptions {
        n_ctx: Some(256),
        prefill_chunk: None,
        seed: Some(3),
        clock: None,
    })
    .unwrap()
}

/// Deterministic prompt ids below `n_vocab`.
fn prompt(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % n_vocab as u32)
        .collect()
}

/// The sampler settings each path runs, and whether the top-candidates path applies.
fn settings() -> Vec<(&'static str, SamplerParams, bool)> {
    let d = SamplerParams::default();
    vec![
        ("greedy", SamplerParams::greedy(), true),
        (
            "greedy+penalties",
            SamplerParams {
                repetition_penalty: 1.5,
                penalty_window: 16,
                banned_tokens: vec![1],
                ..SamplerParams::greedy()
            },
            true,
        ),
        ("default (T .7, k 40, p .9, rep 1.1/64)", d.clone(), true),
        (
            "k 5, T 1.5, min-p, presence/frequency, bias<0, ban",
            SamplerParams {
                top_k: 5,
                temperature: 1.5,
                min_p: 0.05,
                presence_penalty: 0.5,
                frequency_penalty: 0.3,
                logit_bias: vec![(2, -3.0)],
                banned_tokens: vec![4],
                ..d.clone()
            },
            true,
        ),
        (
            "k 100, T 2, p 1",
            SamplerParams {
                top_k: 100,
                temperature: 2.0,
                top_p: 1.0,
                repetition_penalty: 1.0,
                ..d.clone()
            },
            true,
        ),
        (
            "k 200 (full row: more bytes than 265 logits)",
            SamplerParams {
                top_k: 200,
                repetition_penalty: 1.0,
                ..d.clone()
            },
            false,
        ),
        (
            "mirostat (full row)",
            SamplerParams {
                mirostat: 2,
                ..d.clone()
            },
            false,
        ),
        (
            "bias > 0 (full row)",
            SamplerParams {
                logit_bias: vec![(9, 2.0)],
                ..d.clone()
            },
            false,
        ),
    ]
}

/// Generates `n` tokens from `p` on `e` (on the GPU), reading the full row or not: the tokens,
/// the final log-probabilities when asked, and the bytes read back.
fn run(
    e: &Engine,
    p: &[u32],
    sp: &SamplerParams,
    n: usize,
    full: bool,
    logprobs: bool,
) -> (Vec<u32>, Vec<Option<f32>>, u64) {
    let ctx = &e.model().gpu().unwrap().ctx;
    let mut s = session(e);
    let params = GenerateParams {
        sampling: Some(sp.clone()),
        max_tokens: Some(n),
        ignore_eos: true,
        full_logits: full,
        logprobs,
        top_logprobs: if logprobs { 3 } else { 0 },
        logprob_source: LogprobSource::Final,
        ..Default::default()
    };
    let b0 = ctx.bytes_read();
    let (mut ids, mut lps) = (Vec::new(), Vec::new());
    for ev in s.generate(Input::Tokens(p.to_vec()), params).unwrap() {
        if let ternlm::session::Event::Token { id, logprob, .. } = ev.unwrap() {
            ids.push(id);
            lps.push(logprob);
        }
    }
    (ids, lps, ctx.bytes_read() - b0)
}

fn same_tokens(e: &Engine, name: &str, n: usize) {
    let n_vocab = e.n_vocab();
    let p = prompt(9, n_vocab);
    let row = (n_vocab * 4) as u64;
    for (label, sp, top) in settings() {
        for logprobs in [false, true] {
            let (a, la, bytes_full) = run(e, &p, &sp, n, true, logprobs);
            let (b, lb, bytes_top) = run(e, &p, &sp, n, false, logprobs);
            let case = format!("{name} {label} logprobs={logprobs}");
            assert_eq!(a.len(), n, "{case}");
            assert_eq!(a, b, "{case}: tokens");
            assert_eq!(la, lb, "{case}: final log-probabilities");
            // The prompt's logits row, then one row per fed token.
            assert_eq!(bytes_full, n as u64 * row, "{case}: full path bytes");
            if top {
                assert!(
                    bytes_top - row < (n as u64 - 1) * row,
                    "{case}: {bytes_top} B"
                );
                assert!(bytes_top - row <= (n as u64 - 1) * 8 * 256, "{case}");
            } else {
                assert_eq!(bytes_top, bytes_full, "{case}: the full row");
            }
            if !logprobs {
                eprintln!(
                    "{case}: {} B/token read back after the prompt with the full row, {:.0} with \
                     the top candidates ({n} tokens)",
                    row,
                    (bytes_top - row) as f64 / (n - 1) as f64
                );
            }
        }
    }
}

#[test]
fn top_candidates_sample_the_tokens_of_the_full_row() {
    for name in ["tiny-llama-f32", "tiny-qwen3-q8_0", "tiny-gemma3-f32"] {
        let e = Engine::new(gpu_model(&models_dir().join(format!("{name}.gguf")))).unwrap();
        same_tokens(&e, name, 24);
    }
}

/// A real vocabulary (49,152 tokens): what the readback per token becomes.
#[test]
fn top_candidates_on_smollm2() {
    let e = Engine::new(gpu_model(&cache_model("SmolLM2-135M-Instruct.Q4_1.gguf"))).unwrap();
    let n_vocab = e.n_vocab();
    let p = prompt(9, n_vocab);
    let sp = SamplerParams::default();
    let (a, _, bytes_full) = run(&e, &p, &sp, 6, true, false);
    let (b, _, bytes_top) = run(&e, &p, &sp, 6, false, false);
    assert_eq!(a, b, "SmolLM2 default sampling: tokens");
    let row = (n_vocab * 4) as u64;
    eprintln!(
        "SmolLM2 default sampling: {} B/token after the prompt with the full row, {:.0} with the \
         top candidates ({a:?})",
        (bytes_full - row) / 5,
        (bytes_top - row) as f64 / 5.0
    );
    assert!(bytes_top - row <= 5 * 8 * 256);
}

/// `Model::forward_top_k` on the GPU: the CPU's top_k of the same model's logits row, value bits
/// and ids, with 8·k bytes read back; k above the vocabulary gives every id; the async form.
#[test]
fn forward_top_k_is_the_rows_top_k() {
    let m = gpu_model(&models_dir().join("tiny-llama-f32.gguf"));
    let ctx = &m.gpu().unwrap().ctx;
    let n_vocab = m.spec().n_vocab;
    let p = prompt(7, n_vocab);
    for k in [1, 2, 40, 256] {
        let mut c1 = m.new_cache(64);
        let mut c2 = m.new_cache(64);
        let row = m.forward(&mut c1, &p, LogitsFor::Last).unwrap();
        let b0 = ctx.bytes_read();
        let got = m.forward_top_k(&mut c2, &p, k).unwrap();
        assert_eq!(ctx.bytes_read() - b0, 8 * k as u64, "k {k}: bytes");
        let want = top_k(&row, k);
        assert_eq!(got.len(), k.min(n_vocab));
        let bits = |v: &[(u32, f32)]| v.iter().map(|&(i, x)| (i, x.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "k {k}");
        // the next token through the async form, against the full row of the same step
        let next = got[0].0;
        let row = m.forward(&mut c1, &[next], LogitsFor::Last).unwrap();
        let got = pollster::block_on(m.forward_top_k_async(&mut c2, &[next], k)).unwrap();
        assert_eq!(bits(&got), bits(&top_k(&row, k)), "k {k}, async step");
        assert_eq!(c1.len(), c2.len());
    }
    // Too large a k is a typed error and leaves the cache as it was.
    let mut c = m.new_cache(64);
    let e = m.forward_top_k(&mut c, &p, 257).unwrap_err();
    assert_eq!(e.code(), "gpu_validation");
    assert_eq!(c.len(), 0);
}

//! Sessions through their async API (`Session::complete_async`, `snapshot_async`,
//! `save_state_async`, …) on the CPU and on the GPU: natively (lavapipe in CI) and in headless
//! Chromium on WebGPU (tests/gpu_browser.rs includes this file), where a GPU readback can only be
//! awaited. Greedy generation gives llama.cpp's ids (tests/data/golden/logits, as
//! tests/gpu_decode.rs); sampled generation gives the same tokens on both backends; prefix reuse,
//! snapshot/restore, saved state and cancellation behave as on the CPU.

mod gpu_util;

use gpu_util::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::Model;
use ternlm::session::{
    Completion, Engine, FinishReason, GenerateParams, SamplerParams, Session, SessionOptions,
};

/// The case's engine on the CPU, or on the GPU with `opts`.
async fn engine(c: &DecodeCase, gpu: Option<&GpuOptions>) -> Engine {
    let mut m = Model::from_bytes(c.bytes.to_vec()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    if let Some(o) = gpu {
        m.use_gpu_async(o)
            .await
            .unwrap_or_else(|e| panic!("no GPU adapter: {e}"));
    }
    Engine::new(m).unwrap()
}

fn session(e: &Engine) -> Session {
    e.session(SessionOptions {
        n_ctx: Some(64),
        seed: Some(7),
        ..Default::default()
    })
    .unwrap()
}

fn params(sampling: SamplerParams, n: usize) -> GenerateParams {
    GenerateParams {
        sampling: Some(sampling),
        max_tokens: Some(n),
        ignore_eos: true,
        ..Default::default()
    }
}

async fn complete(s: &mut Session, prompt: &[u32], p: GenerateParams) -> Completion {
    s.complete_async(prompt.to_vec(), p)
        .await
        .unwrap_or_else(|e| panic!("generation failed: {e}"))
}

/// Greedy generation, prefix reuse, a snapshot restored, a saved state loaded into a new session
/// and a cancelled generation; returns every generated id in order, and checks each step
/// against what the CPU engine must also give.
async fn script(c: &DecodeCase, e: &Engine) -> Vec<u32> {
    let greedy = || params(SamplerParams::greedy(), 16);
    let mut s = session(e);
    let a = complete(&mut s, c.prompt, greedy()).await;
    assert_eq!(a.tokens, c.want, "{}: llama.cpp's greedy ids", c.name);
    assert_eq!(a.stats.finish_reason, FinishReason::Length);
    // the last id is not fed: the session holds the prompt and 15 ids
    assert_eq!(s.len(), c.prompt.len() + 15);
    let snap = s.snapshot_async().await.unwrap();
    let saved = s.save_state_async().await.unwrap();

    // prefix reuse: the prompt and every id so far, only the last one fed
    let mut longer = c.prompt.to_vec();
    longer.extend(&a.tokens);
    let b = complete(&mut s, &longer, params(SamplerParams::greedy(), 8)).await;
    assert_eq!(
        b.stats.n_cached,
        longer.len() - 1,
        "{}: prefix reuse",
        c.name
    );

    s.restore(&snap).unwrap();
    let again = complete(&mut s, &longer, params(SamplerParams::greedy(), 8)).await;
    assert_eq!(again.tokens, b.tokens, "{}: after restore", c.name);

    let mut t = session(e);
    t.load_state(&saved).unwrap();
    assert_eq!(t.tokens(), snap.tokens());
    let loaded = complete(&mut t, &longer, params(SamplerParams::greedy(), 8)).await;
    assert_eq!(loaded.tokens, b.tokens, "{}: after load_state", c.name);

    // a cancelled generation ends at once and leaves the session usable
    let cancelled = GenerateParams {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..greedy()
    };
    let x = complete(&mut t, c.prompt, cancelled).await;
    assert_eq!(x.stats.finish_reason, FinishReason::Cancelled);
    assert!(x.tokens.is_empty());
    let y = complete(&mut t, c.prompt, greedy()).await;
    assert_eq!(y.tokens, c.want, "{}: after a cancelled generation", c.name);

    [a.tokens, b.tokens].concat()
}

#[gpu_test]
async fn session_script_async_on_cpu_and_gpu() {
    for c in DECODE_CASES {
        let cpu = script(c, &engine(c, None).await).await;
        let gpu = script(c, &engine(c, Some(&GpuOptions::default())).await).await;
        assert_eq!(gpu, cpu, "{}: GPU against CPU", c.name);
    }
}

/// Temperature sampling through the async API draws the same tokens on both backends from one
/// seed (the GPU reading back only the top candidates: `Session` picks that path itself), on f32
/// models, whose logits the two backends compute alike: the GPU's KV cache is f32 here, so that
/// its logits are the CPU's to rounding and no draw falls on the other side of a boundary.
/// (Quantized models' logits are close, not that close: the CPU multiplies their weights with
/// x quantized to 8 bits, as llama.cpp does, where most GPU kernels multiply f32 x — tiny-bitnet's
/// logits of a 9-token prompt differ by NMSE 4e-4 — so a draw can land on either side;
/// tests/session_gpu_topk.rs compares the GPU with itself there.)
#[gpu_test]
async fn sampled_generation_async_same_on_cpu_and_gpu() {
    let models: [(&str, &[u8]); 2] = [
        (
            "tiny-llama-f32",
            include_bytes!("data/models/tiny-llama-f32.gguf"),
        ),
        (
            "tiny-gemma3-f32",
            include_bytes!("data/models/tiny-gemma3-f32.gguf"),
        ),
    ];
    let sampling = SamplerParams {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.95,
        repetition_penalty: 1.2,
        penalty_window: 16,
        seed: Some(11),
        ..SamplerParams::default()
    };
    let gpu_opts = GpuOptions {
        kv_f32: true,
        ..Default::default()
    };
    let prompt = DECODE_CASES[0].prompt;
    for (name, bytes) in models {
        let c = DecodeCase {
            name,
            bytes,
            prompt,
            want: &[],
        };
        let run = |e: Engine, sp: SamplerParams| async move {
            complete(&mut session(&e), prompt, params(sp, 24)).await
        };
        let cpu = run(engine(&c, None).await, sampling.clone()).await;
        let gpu = run(engine(&c, Some(&gpu_opts)).await, sampling.clone()).await;
        assert_eq!(cpu.tokens.len(), 24);
        assert_eq!(gpu.tokens, cpu.tokens, "{name}: sampled ids");
        assert_eq!(gpu.text, cpu.text, "{name}: text");
        let greedy = run(engine(&c, None).await, SamplerParams::greedy()).await;
        assert_ne!(
            cpu.tokens, greedy.tokens,
            "{name}: sampling made no difference"
        );
    }
}

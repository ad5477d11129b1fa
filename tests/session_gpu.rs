//! The KV cache on the GPU (model/kv.rs) under the session semantics of the CPU engine
//! (runtime.md §2–§3): the same script of prefill, greedy decode, truncate, snapshot/restore,
//! prefix reuse and save/load runs on a CPU session and on a GPU session and must give the same
//! tokens and logits; one cache moves between a CPU model, a GPU model and a second device; a
//! GPU forward reads back only its logits (or the argmax id), and the host copy is synced only
//! when something reads it.
//!
//! The GPU keeps its cache in f32 here (`GpuOptions::kv_f32`) and the CPU runs f32 activations
//! (`Kernel::Reference`), so both compute the same values up to f32 rounding (NMSE ≤
//! [`BOUND`]); the default f16 cache is checked with its own bound ([`F16_BOUND`]).

mod model_util;

use model_util::*;
use ternlm::backend::cpu::Kernel;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::{KvCache, LogitsFor, Model};
use ternlm::session::{Engine, Session, SessionOptions};

/// GPU (f32 KV) against CPU (f32 activations), NMSE over a logits row (seen: ≤ 1e-12).
const BOUND: f64 = 1e-9;
/// GPU with the f16 cache against the CPU's f32 cache (seen: 3.6e-7 on tiny-gemma3-f32).
const F16_BOUND: f64 = 1e-5;

/// GQA + llama RoPE, sliding window 8 (crossed by every script here), QK-norm.
const MODELS: &[&str] = &["tiny-llama-f32", "tiny-gemma3-f32", "tiny-qwen3-f32"];

fn kv_f32() -> GpuOptions {
    GpuOptions {
        kv_f32: true,
        ..GpuOptions::default()
    }
}

fn model(name: &str, gpu: Option<&GpuOptions>) -> Model {
    let mut m = load(&models_dir().join(format!("{name}.gguf")));
    m.set_kernel(Kernel::Reference);
    if let Some(opts) = gpu {
        m.use_gpu(opts).unwrap();
    }
    m
}

fn session(e: &Engine) -> Session {
    e.session(SessionOptions {
        n_ctx: Some(128),
        prefill_chunk: Some(7),
        seed: Some(3),
        clock: None,
    })
    .unwrap()
}

/// Deterministic ids below 264 (no control token).
fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt * 97) >> 7) % 264)
        .collect()
}

fn nmse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    num / den.max(1e-30)
}

/// The GPU session's and the CPU session's current logits agree.
fn same_logits(what: &str, gpu: &Session, cpu: &Session, bound: f64) {
    let (g, c) = (gpu.logits().unwrap(), cpu.logits().unwrap());
    let e = nmse(g, c);
    eprintln!("{what}: NMSE {e:.2e}");
    assert!(e <= bound, "{what}: NMSE {e:e} > {bound:e}");
    assert_eq!(
        ternlm::session::sampler::argmax(g),
        ternlm::session::sampler::argmax(c),
        "{what}: top-1"
    );
}

/// `n` greedy steps on both sessions from their current logits: the same ids, the same logits.
fn greedy_both(what: &str, gpu: &mut Session, cpu: &mut Session, n: usize, bound: f64) {
    for step in 0..n {
        let t = ternlm::session::sampler::argmax(cpu.logits().unwrap());
        gpu.decode(t).unwrap();
        cpu.decode(t).unwrap();
        same_logits(&format!("{what} step {step}"), gpu, cpu, bound);
    }
    assert_eq!(gpu.tokens(), cpu.tokens(), "{what}: tokens");
}

/// Bytes of the K/V rows `[0, n)` of every layer as the GPU stores them (f16 pairs: a row of
/// `k` elements is `⌈k/2⌉` words; f32: `k` words).
fn kv_bytes(c: &KvCache, n: usize, f16: bool) -> u64 {
    let words = |x: usize| if f16 { x.div_ceil(2) } else { x };
    (0..c.n_layer())
        .map(|l| {
            let (k, v) = c.row_len(l);
            (n * (words(k) + words(v)) * 4) as u64
        })
        .sum()
}

/// The whole session script, GPU against CPU.
fn script(name: &str, opts: &GpuOptions, bound: f64) {
    let (ec, eg) = (
        Engine::new(model(name, None)).unwrap(),
        Engine::new(model(name, Some(opts))).unwrap(),
    );
    let ctx = &eg.model().gpu().unwrap().ctx;
    let (mut c, mut g) = (session(&ec), session(&eg));
    let n_vocab = ec.n_vocab() as u64;

    // Prefill in chunks of 7, then greedy decode.
    let p = prompt(20, 1);
    c.prefill(&p).unwrap();
    g.prefill(&p).unwrap();
    same_logits(&format!("{name} prefill"), &g, &c, bound);
    let read = ctx.bytes_read();
    greedy_both(&format!("{name} decode"), &mut g, &mut c, 6, bound);
    assert_eq!(
        ctx.bytes_read() - read,
        6 * n_vocab * 4,
        "{name}: a decode step reads back its logits only"
    );
    assert_eq!(g.kv_cache().host_rows(), 0, "{name}: no K/V row read back");

    // Snapshot: the rows come back once, then stay on the host.
    let read = ctx.bytes_read();
    let snap = g.snapshot().unwrap();
    assert_eq!(
        ctx.bytes_read() - read,
        kv_bytes(g.kv_cache(), g.len(), ctx.kv_f16)
    );
    assert_eq!(snap.tokens(), c.snapshot().unwrap().tokens());
    let read = ctx.bytes_read();
    let again = g.snapshot().unwrap();
    assert_eq!(
        ctx.bytes_read(),
        read,
        "{name}: a second snapshot reads nothing"
    );
    assert_eq!(again.tokens(), snap.tokens());
    assert_eq!(g.kv_cache().host_rows(), g.len());

    // Truncate only moves lengths; decoding again overwrites the GPU rows.
    greedy_both(&format!("{name} after snapshot"), &mut g, &mut c, 3, bound);
    let read = ctx.bytes_read();
    g.truncate(15);
    c.truncate(15);
    assert_eq!(ctx.bytes_read(), read);
    assert_eq!(
        (g.kv_cache().host_rows(), g.kv_cache().gpu_rows()),
        (15, 15)
    );
    g.decode(7).unwrap();
    c.decode(7).unwrap();
    same_logits(&format!("{name} truncate + decode"), &g, &c, bound);
    greedy_both(&format!("{name} after truncate"), &mut g, &mut c, 3, bound);

    // Restore: the host rows are authoritative again, the next GPU forward uploads them.
    g.restore(&snap).unwrap();
    c.restore(&snap).unwrap();
    assert_eq!((g.kv_cache().host_rows(), g.kv_cache().gpu_rows()), (26, 0));
    greedy_both(&format!("{name} after restore"), &mut g, &mut c, 4, bound);

    // Prefix reuse: keep 18 of the cached tokens, prefill a new suffix.
    let mut p2 = g.tokens()[..18].to_vec();
    p2.extend(prompt(9, 5));
    let (kg, kc) = (g.feed_prompt(&p2).unwrap(), c.feed_prompt(&p2).unwrap());
    assert!(kg == kc && kg >= 18, "{name}: reused {kg} / {kc}");
    same_logits(&format!("{name} prefix reuse"), &g, &c, bound);
    greedy_both(
        &format!("{name} after prefix reuse"),
        &mut g,
        &mut c,
        3,
        bound,
    );

    // Save on the GPU, load into a fresh GPU session and into a CPU session; save on the CPU,
    // load on the GPU: every pair continues alike.
    let saved = g.save_state().unwrap();
    assert_eq!(saved.len(), g.state_size());
    let (mut g2, mut c2) = (session(&eg), session(&ec));
    g2.load_state(&saved).unwrap();
    c2.load_state(&saved).unwrap();
    greedy_both(
        &format!("{name} GPU state on GPU/CPU"),
        &mut g2,
        &mut c2,
        3,
        bound,
    );
    let mut g3 = session(&eg);
    g3.load_state(&c.save_state().unwrap()).unwrap();
    greedy_both(
        &format!("{name} CPU state on GPU"),
        &mut g3,
        &mut c,
        3,
        bound,
    );
}

#[test]
fn session_script_matches_cpu_with_f32_kv() {
    for name in MODELS {
        script(name, &kv_f32(), BOUND);
    }
}

#[test]
fn session_script_matches_cpu_with_f16_kv() {
    script("tiny-gemma3-f32", &GpuOptions::default(), F16_BOUND);
}

/// One cache, three owners in turn: the CPU model, a GPU model, and a GPU model on a second
/// device with f16 storage. Each switch moves only the missing rows (one readback or one
/// upload), and every step's logits equal the CPU-only run's.
#[test]
fn one_cache_moves_between_cpu_and_gpus() {
    let name = "tiny-gemma3-f32";
    let cpu = model(name, None);
    let gpu = model(name, Some(&kv_f32()));
    let other = model(name, Some(&GpuOptions::default()));
    let ctx = &gpu.gpu().unwrap().ctx;
    let toks = prompt(30, 9);
    let mut reference = cpu.new_cache(64);
    let want = cpu.forward(&mut reference, &toks, LogitsFor::All).unwrap();
    let nv = cpu.spec().n_vocab;
    let row = |i: usize| &want[i * nv..(i + 1) * nv];

    let mut c = cpu.new_cache(64);
    // Prefill 10 on the GPU: nothing but the last logits comes back.
    let read = ctx.bytes_read();
    let l = gpu.forward(&mut c, &toks[..10], LogitsFor::Last).unwrap();
    assert_eq!(ctx.bytes_read() - read, (nv * 4) as u64);
    assert!(nmse(&l, row(9)) <= BOUND);
    assert_eq!((c.host_rows(), c.gpu_rows()), (0, 10));
    assert_eq!(c.layer_k(0).unwrap_err().code(), "session_state");

    // The CPU continues: one readback of the 10 rows first.
    let read = ctx.bytes_read();
    for i in 10..14 {
        let l = cpu
            .forward(&mut c, &toks[i..i + 1], LogitsFor::Last)
            .unwrap();
        assert!(nmse(&l, row(i)) <= BOUND, "cpu step {i}");
    }
    assert_eq!(ctx.bytes_read() - read, kv_bytes(&c, 10, false));
    assert_eq!((c.host_rows(), c.gpu_rows()), (14, 10));

    // Back on the GPU: rows 10..14 are uploaded, nothing read back but logits.
    let read = ctx.bytes_read();
    for i in 14..18 {
        let l = gpu
            .forward(&mut c, &toks[i..i + 1], LogitsFor::Last)
            .unwrap();
        assert!(nmse(&l, row(i)) <= BOUND, "gpu step {i}");
    }
    assert_eq!(ctx.bytes_read() - read, (4 * nv * 4) as u64);
    assert_eq!((c.host_rows(), c.gpu_rows()), (14, 18));

    // A clone keeps the GPU-only rows (copied on the GPU) and is independent of the original.
    let mut twin = c.clone();
    let l = gpu.forward(&mut c, &[3, 4], LogitsFor::Last).unwrap();
    let l_twin = gpu
        .forward(&mut twin, &toks[18..20], LogitsFor::Last)
        .unwrap();
    assert!(nmse(&l_twin, row(19)) <= BOUND, "clone");
    assert_ne!(l, l_twin);
    c.truncate(18);

    // Truncate inside the GPU-only rows, then a second device with f16 storage: the rows are
    // read back from the first device once and uploaded to the second.
    c.truncate(16);
    let read = ctx.bytes_read();
    for i in 16..24 {
        let l = other
            .forward(&mut c, &toks[i..i + 1], LogitsFor::Last)
            .unwrap();
        assert!(nmse(&l, row(i)) <= F16_BOUND, "second device step {i}");
    }
    assert_eq!(
        ctx.bytes_read() - read,
        kv_bytes(&c, 16, false) - kv_bytes(&c, 14, false)
    );
    assert_eq!((c.host_rows(), c.gpu_rows()), (16, 24));

    // And the CPU again: the second device's rows 16..24 (f16, widened exactly) come back.
    let l = cpu.forward(&mut c, &toks[24..30], LogitsFor::Last).unwrap();
    assert!(nmse(&l, row(29)) <= F16_BOUND);
    assert_eq!(c.host_rows(), 30);
}

//! Session numerics on the tiny synthetic models (testing.md §4.1): cached decode vs full
//! recompute, chunked vs single-shot prefill, the three-arm checkpoint test, restore-then-continue
//! and prefix reuse.

mod model_util;

use model_util::tiny_engine as engine;
use ternlm::model::LogitsFor;
use ternlm::session::{Engine, Session, SessionOptions};

/// Architectures and the features they bring: GQA everywhere, llama3 RoPE scaling, tied
/// embeddings with MQA, qwen2 biases, qwen3 QK-norm, gemma3 sliding window 8 (crossed by every
/// test here), bitnet ternary weights.
const MODELS: &[&str] = &[
    "tiny-llama-f32",
    "tiny-llama3-f32",
    "tiny-llamatied-f32",
    "tiny-qwen2-f32",
    "tiny-qwen3-f32",
    "tiny-gemma3-f32",
    "tiny-bitnet-tq2_0",
];

fn session(e: &Engine, chunk: usize) -> Session {
    e.session(SessionOptions {
        n_ctx: Some(256),
        prefill_chunk: Some(chunk),
        seed: Some(1),
        clock: None,
    })
    .unwrap()
}

/// A deterministic prompt of byte and merge tokens (ids < 264, no control token).
fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| {
            (i.wrapping_mul(2654435761)
                .wrapping_add(salt.wrapping_mul(97))
                >> 7)
                % 264
        })
        .collect()
}

fn argmax(l: &[f32]) -> u32 {
    ternlm::session::sampler::argmax(l)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy continuation of `n` tokens from the session's current logits; returns the tokens and
/// the logits each was chosen from.
fn greedy(s: &mut Session, n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut toks = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..n {
        let l = s.logits().unwrap().to_vec();
        let t = argmax(&l);
        toks.push(t);
        rows.push(l);
        s.decode(t).unwrap();
    }
    (toks, rows)
}

/// Cached decode vs recompute over ≥ 32 greedy steps (tolerance 1e-3, f32 KV). Every model is
/// checked against one batched no-cache forward of the whole sequence (row `i` of a causal
/// forward is the recompute of step `i`); three models also run the literal per-step recompute
/// (a fresh cache and a full forward at every step), which is O(n²) and slow in debug builds.
#[test]
fn cached_decode_equals_full_recompute() {
    const STEPS: usize = 34;
    for name in MODELS {
        let e = engine(name);
        let model = e.model().clone();
        let per_step = matches!(
            *name,
            "tiny-llama3-f32" | "tiny-llamatied-f32" | "tiny-gemma3-f32"
        );
        let mut s = session(&e, 512);
        let mut seq = prompt(9, 1);
        s.prefill(&seq).unwrap();
        let mut cached_rows = Vec::new();
        for step in 0..STEPS {
            let cached = s.logits().unwrap().to_vec();
            if per_step {
                let mut fresh_cache = model.new_cache(256);
                let fresh = model
                    .forward(&mut fresh_cache, &seq, LogitsFor::Last)
                    .unwrap();
                let d = max_abs(&cached, &fresh);
                assert!(d <= 1e-3, "{name} step {step}: max-abs {d}");
            }
            let t = argmax(&cached);
            seq.push(t);
            s.decode(t).unwrap();
            cached_rows.push(cached);
        }
        assert_eq!(s.tokens(), &seq[..]);
        let mut fresh_cache = model.new_cache(256);
        let all = model
            .forward(&mut fresh_cache, &seq, LogitsFor::All)
            .unwrap();
        let v = e.n_vocab();
        let first = seq.len() - 1 - STEPS;
        for (step, cached) in cached_rows.iter().enumerate() {
            let row = &all[(first + step) * v..(first + step + 1) * v];
            let d = max_abs(cached, row);
            assert!(
                d <= 1e-3,
                "{name} step {step}: batched recompute max-abs {d}"
            );
        }
    }
}

#[test]
fn chunked_prefill_equals_single_shot() {
    for name in MODELS {
        let e = engine(name);
        let p = prompt(41, 2);
        let mut one = session(&e, 512);
        let all_one = one.eval(&p, LogitsFor::All).unwrap();
        let last_one = one.logits().unwrap().to_vec();
        for chunk in [1, 2, 7, 512] {
            let mut s = session(&e, chunk);
            let all = s.eval(&p, LogitsFor::All).unwrap();
            let d = max_abs(&all, &all_one);
            assert!(d < 1e-4, "{name} chunk {chunk}: all-rows max-abs {d}");
            assert_eq!(s.logits().unwrap(), &all[all.len() - e.n_vocab()..]);
            if chunk == 7 {
                // logits of the last row only, through the last chunk
                let mut s = session(&e, chunk);
                let last = s.prefill(&p).unwrap();
                let d = max_abs(&last, &last_one);
                assert!(d < 1e-4, "{name} chunk {chunk}: last-row max-abs {d}");
            }
            assert_eq!(s.tokens(), &p[..]);
            assert_eq!(s.kv_cache().len(), p.len());
        }
    }
}

#[test]
fn three_arm_checkpoint_continuations_agree() {
    for name in MODELS {
        let e = engine(name);
        let p = prompt(30, 3);
        let split = 17;
        // A: one-shot prefill
        let mut a = session(&e, 512);
        a.prefill(&p).unwrap();
        let (ta, la) = greedy(&mut a, 24);
        // B: two-chunk prefill
        let mut b = session(&e, 512);
        b.prefill(&p[..split]).unwrap();
        b.prefill(&p[split..]).unwrap();
        let (tb, lb) = greedy(&mut b, 24);
        // C: prefill, snapshot, 24 decode steps, restore, tail prefill
        let mut c = session(&e, 512);
        c.prefill(&p[..split]).unwrap();
        let snap = c.snapshot().unwrap();
        greedy(&mut c, 24);
        assert_eq!(c.len(), split + 24);
        c.restore(&snap).unwrap();
        assert_eq!(c.tokens(), &p[..split]);
        c.prefill(&p[split..]).unwrap();
        let (tc, lc) = greedy(&mut c, 24);
        assert_eq!(ta, tb, "{name}: A vs B");
        assert_eq!(ta, tc, "{name}: A vs C");
        for (i, ((x, y), z)) in la.iter().zip(&lb).zip(&lc).enumerate() {
            assert!(max_abs(x, y) < 1e-4, "{name} step {i}: A vs B");
            assert!(max_abs(x, z) < 1e-4, "{name} step {i}: A vs C");
        }
        // C's restored arm and B ran the same chunks: bit-identical
        assert_eq!(lb, lc, "{name}: B vs C bits");
    }
}

#[test]
fn restore_then_continue_equals_never_having_left() {
    for name in ["tiny-llama-f32", "tiny-gemma3-f32", "tiny-bitnet-tq2_0"] {
        let e = engine(name);
        let mut s = session(&e, 5);
        s.prefill(&prompt(12, 4)).unwrap();
        greedy(&mut s, 6);
        let snap = s.snapshot().unwrap();
        let (t1, l1) = greedy(&mut s, 12);
        let end = s.snapshot().unwrap();
        // a long excursion that crosses the sliding window, then back
        s.restore(&snap).unwrap();
        greedy(&mut s, 30);
        s.restore(&snap).unwrap();
        let (t2, l2) = greedy(&mut s, 12);
        assert_eq!(t1, t2, "{name}");
        assert_eq!(l1, l2, "{name}: bit-identical logits");
        assert_eq!(s.snapshot().unwrap(), end);
        // into another session of the same engine (another capacity)
        let mut other = e
            .session(SessionOptions {
                n_ctx: Some(64),
                ..Default::default()
            })
            .unwrap();
        other.restore(&snap).unwrap();
        let (t3, l3) = greedy(&mut other, 12);
        assert_eq!((t3, l3), (t1, l1), "{name}: other session");
        // a snapshot longer than the capacity is refused, the session unchanged
        let mut tiny = e
            .session(SessionOptions {
                n_ctx: Some(8),
                ..Default::default()
            })
            .unwrap();
        tiny.prefill(&[1, 2, 3]).unwrap();
        let before = tiny.snapshot().unwrap();
        assert!(tiny.restore(&snap).is_err());
        assert_eq!(tiny.snapshot().unwrap(), before);
    }
    // a snapshot of another model
    let (a, b) = (engine("tiny-llama-f32"), engine("tiny-llama-q8_0"));
    let mut sa = session(&a, 512);
    sa.prefill(&[1, 2, 3]).unwrap();
    let mut sb = session(&b, 512);
    let err = sb.restore(&sa.snapshot().unwrap()).unwrap_err();
    assert_eq!(err.code(), "state_model_mismatch");
    assert!(sb.is_empty());
}

#[test]
fn prefix_reuse_prefills_only_the_new_suffix() {
    for name in ["tiny-llama-f32", "tiny-qwen3-f32", "tiny-gemma3-f32"] {
        let e = engine(name);
        let p1 = prompt(20, 5);
        let mut p2 = p1.clone();
        p2.extend(prompt(9, 6));

        let mut fresh = session(&e, 512);
        assert_eq!(fresh.feed_prompt(&p2).unwrap(), 0);
        let want = fresh.logits().unwrap().to_vec();

        let mut s = session(&e, 512);
        assert_eq!(s.feed_prompt(&p1).unwrap(), 0);
        let kept: Vec<Vec<f32>> = (0..s.kv_cache().n_layer())
            .map(|l| s.kv_cache().layer_k(l).unwrap().to_vec())
            .collect();
        // extends the cache: the 20 cached tokens are reused, only the 9 new ones run
        let ran = s.tokens_evaluated();
        assert_eq!(s.feed_prompt(&p2).unwrap(), 20);
        assert_eq!(s.tokens_evaluated() - ran, 9);
        assert_eq!(s.tokens(), &p2[..]);
        let d = max_abs(s.logits().unwrap(), &want);
        assert!(d < 1e-4, "{name}: reuse vs fresh {d}");
        // the cached rows are untouched
        for (l, k) in kept.iter().enumerate() {
            let (kr, _) = s.kv_cache().row_len(l);
            assert_eq!(&s.kv_cache().layer_k(l).unwrap()[..20 * kr], &k[..]);
        }
        // the same prompt again: nothing to run
        let ran = s.tokens_evaluated();
        assert_eq!(s.feed_prompt(&p2).unwrap(), p2.len());
        assert_eq!(s.tokens_evaluated(), ran);
        // a prompt equal to a prefix: one token re-fed for its logits
        assert_eq!(s.feed_prompt(&p1).unwrap(), p1.len() - 1);
        assert_eq!(s.tokens_evaluated(), ran + 1);
        assert_eq!(s.tokens(), &p1[..]);
        // diverging after 10 tokens: truncated to the common prefix
        let mut p3 = p1[..10].to_vec();
        p3.extend([7, 7, 7, 7]);
        assert_eq!(s.feed_prompt(&p3).unwrap(), 10);
        let mut f3 = session(&e, 512);
        f3.feed_prompt(&p3).unwrap();
        assert!(max_abs(s.logits().unwrap(), f3.logits().unwrap()) < 1e-4);
        // nothing in common
        assert_eq!(s.feed_prompt(&[200, 201]).unwrap(), 0);
        // an out-of-range id leaves the session as it was
        let before = s.snapshot().unwrap();
        assert!(s.feed_prompt(&[200, 201, 99_999]).is_err());
        assert_eq!(s.snapshot().unwrap(), before);
    }
}

#[test]
fn failed_eval_leaves_the_session_unchanged() {
    let e = engine("tiny-llama-f32");
    let mut s = e
        .session(SessionOptions {
            n_ctx: Some(16),
            prefill_chunk: Some(3),
            ..Default::default()
        })
        .unwrap();
    s.prefill(&prompt(10, 7)).unwrap();
    let before = s.snapshot().unwrap();
    // an id out of range in the third chunk: earlier chunks must be rolled back
    let mut bad = prompt(5, 8);
    bad.push(100_000);
    let err = s.prefill(&bad).unwrap_err();
    assert_eq!(err.code(), "model_token_range");
    assert_eq!(s.snapshot().unwrap(), before);
    // past the capacity
    let err = s.prefill(&prompt(7, 9)).unwrap_err();
    assert_eq!(err.code(), "context_overflow");
    assert_eq!(s.snapshot().unwrap(), before);
    // empty input with logits wanted
    assert_eq!(s.prefill(&[]).unwrap_err().code(), "model_empty_input");
    assert!(s.eval(&[], LogitsFor::None).unwrap().is_empty());
    // truncate / clear
    s.truncate(4);
    assert_eq!((s.len(), s.kv_cache().len()), (4, 4));
    assert!(s.logits().is_none());
    s.truncate(100);
    assert_eq!(s.len(), 4);
    s.clear();
    assert!(s.is_empty() && s.kv_cache().is_empty());

    // the llama.cpp-parity memory API
    assert_eq!(s.memory_seq_pos_max(0).unwrap(), -1);
    s.prefill(&prompt(6, 10)).unwrap();
    assert_eq!(s.memory_seq_pos_max(0).unwrap(), 5);
    assert!(!s.memory_seq_rm(0, 1, 3).unwrap()); // a middle range
    assert!(s.memory_seq_rm(0, 5, 3).unwrap()); // an empty range
    assert_eq!(s.len(), 6);
    assert!(s.memory_seq_rm(0, 4, -1).unwrap());
    assert_eq!(s.len(), 4);
    assert!(s.memory_seq_rm(0, 2, 100).unwrap());
    assert_eq!(s.len(), 2);
    assert_eq!(
        s.memory_seq_rm(1, 0, -1).unwrap_err().code(),
        "session_params"
    );
    assert_eq!(
        s.memory_seq_pos_max(2).unwrap_err().code(),
        "session_params"
    );
    assert!(s.memory_seq_rm(0, -1, -1).unwrap());
    assert!(s.is_empty());
    s.prefill(&[1]).unwrap();
    s.memory_clear();
    assert!(s.is_empty());
}

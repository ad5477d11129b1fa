//! Saved session state (runtime.md §3.2): round trips, and every bad input is a typed error that
//! leaves the loading session exactly as it was.

mod model_util;

use model_util::tiny_engine as engine;
use ternlm::error::{Error, SessionError, StateError};
use ternlm::session::state::{STATE_MAGIC, STATE_VERSION};
use ternlm::session::{Engine, Event, GenerateParams, SamplerParams, Session, SessionOptions};

fn session(e: &Engine, n_ctx: usize) -> Session {
    e.session(SessionOptions {
        n_ctx: Some(n_ctx),
        seed: Some(3),
        ..Default::default()
    })
    .unwrap()
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 264).collect()
}

fn greedy(s: &mut Session, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let t = ternlm::session::sampler::argmax(s.logits().unwrap());
            s.decode(t).unwrap();
            t
        })
        .collect()
}

/// Stochastic tokens through the generation loop (the sampler's RNG continues from the state).
fn sample(s: &mut Session, n: usize) -> Vec<u32> {
    let params = GenerateParams {
        sampling: Some(SamplerParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: None,
            ..Default::default()
        }),
        max_tokens: Some(n),
        ignore_eos: true,
        ..Default::default()
    };
    let input = s.tokens().to_vec();
    s.complete(input, params).unwrap().tokens
}

fn state_err(e: Error) -> StateError {
    match e {
        Error::Session(SessionError::State(s)) => s,
        other => panic!("not a state error: {other}"),
    }
}

#[test]
fn save_load_round_trip_continues_identically() {
    for name in [
        "tiny-llama-f32",
        "tiny-qwen3-f32",
        "tiny-gemma3-f32",
        "tiny-bitnet-tq2_0",
    ] {
        let e = engine(name);
        let mut a = session(&e, 128);
        a.prefill(&prompt(15)).unwrap();
        greedy(&mut a, 5);
        let bytes = a.save_state().unwrap();
        assert_eq!(bytes.len(), a.state_size());
        assert_eq!(&bytes[..4], &STATE_MAGIC);
        let snap = a.snapshot().unwrap();
        let cont_a = greedy(&mut a, 10);
        let logits_a = a.logits().unwrap().to_vec();
        let samp_a = sample(&mut a, 8);

        // a new session (other capacity, other seed) continues exactly as the original
        let mut b = e
            .session(SessionOptions {
                n_ctx: Some(40),
                seed: Some(999),
                ..Default::default()
            })
            .unwrap();
        b.load_state(&bytes).unwrap();
        assert_eq!(b.snapshot().unwrap(), snap, "{name}");
        assert_eq!(greedy(&mut b, 10), cont_a, "{name}");
        assert_eq!(b.logits().unwrap(), &logits_a[..]);
        assert_eq!(sample(&mut b, 8), samp_a, "{name}: sampler RNG restored");

        // loading into a used session replaces its content
        let mut c = session(&e, 128);
        c.prefill(&prompt(30)).unwrap();
        c.load_state(&bytes).unwrap();
        assert_eq!(c.snapshot().unwrap(), snap);

        // an empty session saves and loads too
        let empty = session(&e, 16).save_state().unwrap();
        c.load_state(&empty).unwrap();
        assert!(c.is_empty() && c.logits().is_none());
    }
}

#[test]
fn bad_state_is_a_typed_error_and_changes_nothing() {
    let e = engine("tiny-llama-f32");
    let mut src = session(&e, 64);
    src.prefill(&prompt(12)).unwrap();
    let good = src.save_state().unwrap();

    let mut s = session(&e, 64);
    s.prefill(&prompt(5)).unwrap();
    let before = s.snapshot().unwrap();
    let mut check = |bytes: &[u8], want: &str| {
        let err = s.load_state(bytes).unwrap_err();
        if want == "state_*" {
            assert!(err.code().starts_with("state_"), "{err}");
        } else {
            assert_eq!(err.code(), want, "{err}");
        }
        assert_eq!(
            s.snapshot().unwrap(),
            before,
            "session changed by a failed load ({want})"
        );
    };

    // truncation anywhere
    let mut cuts: Vec<usize> = (0..good.len()).step_by(97).collect();
    cuts.extend(good.len() - 16..good.len());
    for cut in cuts {
        let want = if cut < 4 {
            "state_bad_magic"
        } else {
            "state_truncated"
        };
        check(&good[..cut], want);
    }
    check(&[], "state_bad_magic");
    check(b"GGUF\x03\0\0\0", "state_bad_magic");

    // header fields
    let patch = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    check(
        &patch(4, &(STATE_VERSION + 1).to_le_bytes()),
        "state_bad_version",
    );
    check(&patch(8, &[0xAB]), "state_model_mismatch");
    check(&patch(40, &7u32.to_le_bytes()), "state_shape_mismatch"); // n_vocab
    check(&patch(44, &3u32.to_le_bytes()), "state_shape_mismatch"); // n_layer
    check(&patch(48, &1u32.to_le_bytes()), "state_shape_mismatch"); // dtype
    check(&patch(56, &65u32.to_le_bytes()), "state_len_overflow"); // > capacity
    check(&patch(56, &u32::MAX.to_le_bytes()), "state_len_overflow");
    // a token count that disagrees with the body: caught somewhere in the layout
    check(&patch(56, &13u32.to_le_bytes()), "state_*");
    check(&patch(56, &11u32.to_le_bytes()), "state_*");
    check(&patch(56, &0u32.to_le_bytes()), "state_*");
    check(&patch(60, &2u32.to_le_bytes()), "state_bad_value"); // flags
    check(&patch(64, &1000u32.to_le_bytes()), "state_bad_value"); // token id ≥ n_vocab

    // a flipped bit in the KV body, the logits or the checksum
    for at in [
        good.len() / 2,
        good.len() - 40,
        good.len() - 1,
        64 + 12 * 4 + 12 + 8,
    ] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        check(&b, "state_checksum");
    }
    // trailing garbage
    let mut longer = good.clone();
    longer.extend([0, 0, 0, 0]);
    check(&longer, "state_trailing_bytes");

    // the same state into a session too small for it
    let mut small = session(&e, 8);
    let err = small.load_state(&good).unwrap_err();
    assert!(matches!(
        state_err(err),
        StateError::LenOverflow {
            len: 12,
            capacity: 8
        }
    ));
    assert!(small.is_empty());

    // foreign models: another architecture, and the same shapes with other weights
    for other in ["tiny-qwen2-f32", "tiny-llama-q8_0", "tiny-llama-f16"] {
        let oe = engine(other);
        let mut os = session(&oe, 64);
        os.prefill(&prompt(3)).unwrap();
        let snap = os.snapshot().unwrap();
        let err = os.load_state(&good).unwrap_err();
        assert_eq!(state_err(err), StateError::ModelMismatch, "{other}");
        assert_eq!(os.snapshot().unwrap(), snap);
    }

    // still usable after all that
    s.load_state(&good).unwrap();
    assert_eq!(s.tokens(), &prompt(12)[..]);
}

#[test]
fn state_mid_generation_resumes_the_stream() {
    // a state saved between two generations carries the token history used by the penalties
    let e = engine("tiny-qwen2-f32");
    let mut a = session(&e, 96);
    let params = || GenerateParams {
        sampling: Some(SamplerParams {
            temperature: 0.9,
            repetition_penalty: 1.3,
            seed: None,
            ..Default::default()
        }),
        max_tokens: Some(6),
        ignore_eos: true,
        ..Default::default()
    };
    let first = a.complete(prompt(10), params()).unwrap();
    let saved = a.save_state().unwrap();
    let mut next_prompt = prompt(10);
    next_prompt.extend(&first.tokens);
    let second_a = a.complete(next_prompt.clone(), params()).unwrap();

    let mut b = session(&e, 96);
    b.load_state(&saved).unwrap();
    let second_b = b.complete(next_prompt, params()).unwrap();
    assert_eq!(second_a.tokens, second_b.tokens);
    assert_eq!(second_a.stats.n_cached, 10 + 6 - 1);
    assert_eq!(second_b.stats.n_cached, 10 + 6 - 1);
    // events of a generation include the final Done
    let mut c = session(&e, 96);
    let evs: Vec<Event> = c
        .generate(prompt(4), params())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(matches!(evs.last(), Some(Event::Done(_))));
}

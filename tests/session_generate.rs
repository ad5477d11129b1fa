//! The generation loop (runtime.md §4–§6, §8): stops and finish reasons, stop strings that span
//! tokens, context overflow and truncation, seeded sampling, cancellation, step-by-step driving,
//! metrics, log-probabilities and the sampling defaults from metadata.

mod model_util;

use model_util::tiny_engine as engine;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use ternlm::gguf::{GgufHeader, Limits};
use ternlm::session::{
    Engine, EngineOptions, Event, FinishReason, GenerateParams, Input, LogprobSource, ManualClock,
    SamplerParams, Session, SessionOptions, Stats,
};
use ternlm::tokenizer::chat::ChatMessage;

/// `<|endoftext|>`: BOS = EOS of the tiny models' vocabulary.
const EOT: u32 = 264;

fn session(e: &Engine, n_ctx: usize) -> Session {
    e.session(SessionOptions {
        n_ctx: Some(n_ctx),
        seed: Some(5),
        ..Default::default()
    })
    .unwrap()
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 53 + 7) % 264).collect()
}

fn greedy_params(max: usize) -> GenerateParams {
    GenerateParams {
        sampling: Some(SamplerParams::greedy()),
        max_tokens: Some(max),
        ..Default::default()
    }
}

fn stochastic(seed: Option<u64>) -> SamplerParams {
    SamplerParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed,
        ..Default::default()
    }
}

/// Every event, with the text deltas split out.
struct Run {
    ids: Vec<u32>,
    deltas: Vec<String>,
    tail: String,
    stats: Stats,
}

impl Run {
    fn text(&self) -> String {
        self.deltas.concat() + &self.tail
    }
}

fn run(s: &mut Session, input: impl Into<Input>, p: GenerateParams) -> Run {
    let mut r = Run {
        ids: Vec::new(),
        deltas: Vec::new(),
        tail: String::new(),
        stats: dummy_stats(),
    };
    let mut done = false;
    for ev in s.generate(input, p).unwrap() {
        assert!(!done, "event after Done");
        match ev.unwrap() {
            Event::Token { id, text_delta, .. } => {
                r.ids.push(id);
                r.deltas.push(text_delta);
            }
            Event::Text { text_delta } => r.tail.push_str(&text_delta),
            Event::Done(st) => {
                r.stats = st;
                done = true;
            }
        }
    }
    assert!(done);
    r
}

fn dummy_stats() -> Stats {
    Stats {
        finish_reason: FinishReason::Cancelled,
        n_prompt: 0,
        n_cached: 0,
        n_truncated: 0,
        n_generated: 0,
        ttft_ms: 0.0,
        prefill_ms: 0.0,
        prefill_tps: 0.0,
        decode_ms: 0.0,
        decode_tps: 0.0,
        kv_len: 0,
        n_ctx: 0,
        seed: None,
    }
}

#[test]
fn length_and_tokens_match_the_primitives() {
    let e = engine("tiny-llama-f32");
    let mut s = session(&e, 128);
    let r = run(&mut s, prompt(12), greedy_params(20));
    assert_eq!(r.stats.finish_reason, FinishReason::Length);
    assert_eq!(r.ids.len(), 20);
    assert_eq!(r.stats.n_generated, 20);
    assert_eq!(r.stats.n_prompt, 12);
    assert_eq!(r.stats.n_cached, 0);
    // the last token is not fed
    assert_eq!(s.len(), 12 + 19);
    assert_eq!(r.stats.kv_len, 31);
    // the same greedy tokens as the primitives
    let mut p = session(&e, 128);
    p.prefill(&prompt(12)).unwrap();
    let mut want = Vec::new();
    for _ in 0..20 {
        let t = ternlm::session::sampler::argmax(p.logits().unwrap());
        want.push(t);
        p.decode(t).unwrap();
    }
    assert_eq!(r.ids, want);
    // the text is the detokenization of the ids
    assert_eq!(r.text(), e.detokenize(&r.ids, false).unwrap());
    // max_tokens 0: nothing sampled
    let r0 = run(&mut session(&e, 128), prompt(3), greedy_params(0));
    assert_eq!(
        (r0.ids.len(), r0.stats.finish_reason),
        (0, FinishReason::Length)
    );
}

#[test]
fn end_of_generation_tokens_stop_and_are_not_emitted() {
    let e = engine("tiny-qwen2-f32");
    assert!(e.is_eog(EOT));
    assert_eq!(e.eog_ids(), &[EOT]);
    let force_eot = |ignore_eos: bool, render_special: bool| GenerateParams {
        sampling: Some(SamplerParams {
            logit_bias: vec![(EOT, 1000.0)],
            ..SamplerParams::greedy()
        }),
        max_tokens: Some(3),
        ignore_eos,
        render_special,
        ..Default::default()
    };
    let mut s = session(&e, 64);
    let r = run(&mut s, prompt(5), force_eot(false, false));
    assert_eq!(r.stats.finish_reason, FinishReason::Eos);
    assert!(r.ids.is_empty() && r.text().is_empty());
    assert_eq!(r.stats.n_generated, 0);
    assert_eq!(s.len(), 5);
    // ignore_eos: the control token is generated but adds no text unless rendered
    let r = run(&mut s, prompt(5), force_eot(true, false));
    assert_eq!(r.ids, vec![EOT; 3]);
    assert_eq!(r.text(), "");
    assert_eq!(r.stats.n_cached, 5);
    let r = run(&mut s, prompt(5), force_eot(true, true));
    assert_eq!(r.text(), "<|endoftext|>".repeat(3));

    // mid-stream: bias the sampler towards EOT between two steps; held-back text (a partial
    // stop string) is released in a Text event before Done
    let mut s = session(&e, 64);
    let free = run(&mut s, prompt(5), greedy_params(4));
    let last = free.deltas[2].chars().last().expect("a non-empty delta");
    let stop = format!("{last}\u{1}\u{2}");
    let mut s = session(&e, 64);
    let mut params = greedy_params(10);
    params.stop = vec![stop];
    let mut gen = s.start(prompt(5), params).unwrap();
    let mut text = String::new();
    for _ in 0..3 {
        match gen.next(&mut s).unwrap().unwrap() {
            Event::Token { text_delta, .. } => text.push_str(&text_delta),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(text + &last.to_string(), free.deltas[..3].concat());
    s.sampler_mut().set_params(SamplerParams {
        logit_bias: vec![(EOT, 1000.0)],
        ..SamplerParams::greedy()
    });
    assert_eq!(
        gen.next(&mut s).unwrap().unwrap(),
        Event::Text {
            text_delta: last.to_string()
        }
    );
    match gen.next(&mut s).unwrap().unwrap() {
        Event::Done(st) => assert_eq!(st.finish_reason, FinishReason::Eos),
        other => panic!("{other:?}"),
    }
    assert!(gen.next(&mut s).is_none());
    assert!(gen.is_done());
}

#[test]
fn stop_strings_spanning_tokens_never_leak() {
    let e = engine("tiny-llama-f32");
    let free = run(&mut session(&e, 128), prompt(8), greedy_params(30));
    let full = free.text();
    // a stop string made of the end of one token's text and the start of the next's
    let i = (4..free.deltas.len() - 1)
        .find(|&i| !free.deltas[i].is_empty() && !free.deltas[i + 1].is_empty())
        .expect("two adjacent non-empty deltas");
    let a: String = free.deltas[i].chars().last().into_iter().collect();
    let b: String = free.deltas[i + 1].chars().take(1).collect();
    let stop = a + &b;
    let cut = full.find(&stop).unwrap();

    let mut params = greedy_params(30);
    params.stop = vec!["never-matches".into(), stop.clone()];
    let r = run(&mut session(&e, 128), prompt(8), params);
    assert_eq!(r.stats.finish_reason, FinishReason::StopSequence);
    assert_eq!(r.text(), full[..cut]);
    assert!(!r.text().contains(&stop));
    assert!(r.tail.is_empty());

    // a stop string that is only ever partially matched is released at the end
    let mut params = greedy_params(30);
    params.stop = vec![format!("{}\u{7}", &full[full.len() - 1..])];
    let r = run(&mut session(&e, 128), prompt(8), params);
    assert_eq!(r.stats.finish_reason, FinishReason::Length);
    assert_eq!(r.text(), full);
}

#[test]
fn context_overflow_is_an_error_unless_truncation_is_asked() {
    let e = engine("tiny-llama-f32");
    let mut s = session(&e, 16);
    s.prefill(&[1, 2, 3]).unwrap();
    let before = s.snapshot().unwrap();
    let err = s.generate(prompt(20), greedy_params(4)).err().unwrap();
    assert_eq!(err.code(), "context_overflow");
    assert_eq!(s.snapshot().unwrap(), before);
    // an empty prompt and bad parameters are refused up front too
    let err = s
        .generate(Vec::<u32>::new(), greedy_params(4))
        .err()
        .unwrap();
    assert_eq!(err.code(), "model_empty_input");
    let mut bad = greedy_params(4);
    bad.sampling = Some(SamplerParams {
        top_p: 2.0,
        ..Default::default()
    });
    assert_eq!(
        s.generate(prompt(2), bad).err().unwrap().code(),
        "session_params"
    );
    assert_eq!(s.snapshot().unwrap(), before);

    // truncation: keep the tail (and BOS), leave `reserve` free
    let mut p = vec![EOT];
    p.extend(prompt(19));
    let mut params = greedy_params(100);
    params.truncate = Some(ternlm::session::Truncation {
        keep_bos: true,
        reserve: 4,
    });
    let r = run(&mut s, p.clone(), params);
    assert_eq!(r.stats.n_prompt, 12);
    assert_eq!(r.stats.n_truncated, 8);
    assert_eq!(s.tokens()[0], EOT);
    assert_eq!(&s.tokens()[1..12], &p[9..]);
    // no max_tokens left: the context fills up; 5 tokens fit (4 fed + 1 sampled last)
    assert_eq!(r.stats.finish_reason, FinishReason::ContextFull);
    assert_eq!(r.ids.len(), 5);
    assert_eq!(s.len(), 16);

    let mut params = greedy_params(2);
    params.truncate = Some(ternlm::session::Truncation {
        keep_bos: false,
        reserve: 0,
    });
    let r = run(&mut s, p.clone(), params);
    assert_eq!(r.stats.n_truncated, 4);
    assert_eq!(&s.tokens()[..16], &p[4..]);
    assert_eq!(r.stats.finish_reason, FinishReason::ContextFull);
    assert_eq!(r.ids.len(), 1);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let e = engine("tiny-qwen3-f32");
    let params = |seed| GenerateParams {
        sampling: Some(stochastic(seed)),
        max_tokens: Some(24),
        ignore_eos: true,
        ..Default::default()
    };
    let a = run(&mut session(&e, 128), prompt(6), params(Some(7)));
    let b = run(&mut session(&e, 128), prompt(6), params(Some(7)));
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.text(), b.text());
    assert_eq!(a.stats.seed, Some(7));
    let c = run(&mut session(&e, 128), prompt(6), params(Some(8)));
    assert_ne!(a.ids, c.ids);
    // the same session re-seeded replays; unseeded requests continue one stream, which a
    // snapshot captures
    let mut s = session(&e, 128);
    assert_eq!(run(&mut s, prompt(6), params(Some(7))).ids, a.ids);
    let snap = s.snapshot().unwrap();
    let x = run(&mut s, prompt(6), params(None));
    let y = run(&mut s, prompt(6), params(None));
    assert_ne!(x.ids, y.ids);
    s.restore(&snap).unwrap();
    assert_eq!(run(&mut s, prompt(6), params(None)).ids, x.ids);
    // sessions created with the same seed agree without a request seed
    let u = run(&mut session(&e, 128), prompt(6), params(None));
    let v = run(&mut session(&e, 128), prompt(6), params(None));
    assert_eq!(u.ids, v.ids);
}

#[test]
fn cancellation_ends_between_tokens_and_keeps_the_session_usable() {
    let e = engine("tiny-gemma3-f32");
    let mut s = session(&e, 128);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut params = greedy_params(50);
    params.cancel = Some(cancel.clone());
    let mut ids = Vec::new();
    let mut stats = None;
    for ev in s.generate(prompt(10), params).unwrap() {
        match ev.unwrap() {
            Event::Token { id, .. } => {
                ids.push(id);
                if ids.len() == 3 {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            Event::Text { .. } => {}
            Event::Done(st) => stats = Some(st),
        }
    }
    let stats = stats.unwrap();
    assert_eq!(stats.finish_reason, FinishReason::Cancelled);
    assert_eq!(ids.len(), 3);
    assert_eq!(s.len(), 10 + 2);
    // usable: the continuation equals an uninterrupted run
    let mut cont = prompt(10);
    cont.extend(&ids);
    let rest = run(&mut s, cont, greedy_params(5));
    assert_eq!(rest.stats.n_cached, 12);
    let whole = run(&mut session(&e, 128), prompt(10), greedy_params(8));
    assert_eq!([ids, rest.ids].concat(), whole.ids);
    // cancelled before the first step: no prefill at all
    let mut fresh = session(&e, 128);
    let mut params = greedy_params(5);
    params.cancel = Some(Arc::new(AtomicBool::new(true)));
    let r = run(&mut fresh, prompt(4), params);
    assert_eq!(r.stats.finish_reason, FinishReason::Cancelled);
    assert!(fresh.is_empty());
}

#[test]
fn step_driven_generation_metrics_and_interference() {
    let e = engine("tiny-llama-f32");
    let clock = Arc::new(ManualClock::new());
    let mut s = e
        .session(SessionOptions {
            n_ctx: Some(64),
            seed: Some(1),
            clock: Some(clock.clone()),
            prefill_chunk: Some(4),
        })
        .unwrap();
    s.prefill(&prompt(6)).unwrap();
    let mut p = prompt(6);
    p.extend([40, 41, 42, 43]);
    let mut gen = s.start(p, greedy_params(4)).unwrap();
    assert_eq!(gen.prompt().len(), 10);
    clock.advance_ms(5.0);
    // one step: the prefill of the 4 new tokens and the first token
    let ev = gen.next(&mut s).unwrap().unwrap();
    assert!(matches!(ev, Event::Token { pos: 10, .. }), "{ev:?}");
    assert_eq!(s.len(), 10);
    for _ in 0..3 {
        clock.advance_ms(10.0);
        gen.next(&mut s).unwrap().unwrap();
    }
    let Event::Done(st) = gen.next(&mut s).unwrap().unwrap() else {
        panic!("expected Done")
    };
    assert_eq!(st.n_cached, 6);
    assert_eq!(st.n_prompt, 10);
    assert_eq!(st.n_generated, 4);
    assert_eq!(st.ttft_ms, 5.0);
    assert_eq!(st.decode_ms, 30.0);
    assert!((st.decode_tps - 100.0).abs() < 1e-9);
    assert_eq!((st.kv_len, st.n_ctx), (13, 64));
    assert!(gen.next(&mut s).is_none());

    // changing the session between steps is detected, not silently used
    let mut gen = s.start(prompt(3), greedy_params(4)).unwrap();
    gen.next(&mut s).unwrap().unwrap();
    s.truncate(1);
    let err = gen.next(&mut s).unwrap().unwrap_err();
    assert_eq!(err.code(), "session_state");
    assert!(gen.next(&mut s).is_none());
}

#[test]
fn logprobs_describe_the_raw_or_final_distribution() {
    let e = engine("tiny-qwen2-f32");
    let mut s = session(&e, 64);
    let mut params = greedy_params(3);
    params.logprobs = true;
    params.top_logprobs = 4;
    let mut gen = s.start(prompt(5), params.clone()).unwrap();
    let Event::Token {
        id,
        logprob,
        top_logprobs,
        ..
    } = gen.next(&mut s).unwrap().unwrap()
    else {
        panic!()
    };
    // raw: the log-softmax of the prompt's last logits
    let mut ref_s = session(&e, 64);
    let l = ref_s.prefill(&prompt(5)).unwrap();
    let lse = l.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
    assert!((logprob.unwrap() as f64 - (l[id as usize] as f64 - lse)).abs() < 1e-5);
    assert_eq!(top_logprobs.len(), 4);
    assert_eq!(top_logprobs[0].id, id);
    assert!(top_logprobs
        .windows(2)
        .all(|w| w[0].logprob >= w[1].logprob));
    // final, greedy: probability 1
    params.logprob_source = LogprobSource::Final;
    let mut s = session(&e, 64);
    let mut gen = s.start(prompt(5), params).unwrap();
    let Event::Token {
        logprob,
        top_logprobs,
        ..
    } = gen.next(&mut s).unwrap().unwrap()
    else {
        panic!()
    };
    assert_eq!(logprob, Some(0.0));
    assert_eq!(top_logprobs.len(), 1);
}

#[test]
fn chat_input_and_text_input() {
    let e = engine("tiny-llama-f32");
    // no template in the tiny models: ChatML
    assert!(e.chat_template().unwrap().source().contains("<|im_start|>"));
    let msgs = vec![
        ChatMessage::new("system", "be brief"),
        ChatMessage::new("user", "hi"),
    ];
    let text = e.apply_chat_template(&msgs, true).unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n"));
    let mut s = session(&e, 256);
    let r = run(&mut s, msgs, greedy_params(3));
    assert_eq!(r.stats.n_prompt, e.tokenize(&text, true, true).len());
    assert_eq!(
        &s.tokens()[..r.stats.n_prompt],
        &e.tokenize(&text, true, true)[..]
    );
    // a template chosen at load: a built-in name or a source; a broken one fails the load
    let opts = |t: &str| EngineOptions {
        chat_template: Some(t.into()),
    };
    let model = e.model().clone();
    let llama3 = Engine::with_options(model.clone(), opts("llama3")).unwrap();
    assert!(llama3
        .apply_chat_template(&[ChatMessage::new("user", "x")], true)
        .unwrap()
        .contains("<|start_header_id|>assistant"));
    let custom = Engine::with_options(model.clone(), opts("{{ messages[0].content }}!")).unwrap();
    assert_eq!(
        custom
            .apply_chat_template(&[ChatMessage::new("user", "x")], true)
            .unwrap(),
        "x!"
    );
    let err = Engine::with_options(model, opts("{% if %}")).unwrap_err();
    assert_eq!(err.code(), "template");
    // text input: the same tokens as tokenize
    let r = run(&mut s, "hello there", greedy_params(2));
    assert_eq!(
        r.stats.n_prompt,
        e.tokenize("hello there", true, true).len()
    );
}

/// A GGUF of metadata only.
fn gguf_with(kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, ty, v) in kvs {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(v);
    }
    b
}

#[test]
fn sampling_defaults_come_from_metadata() {
    const U32: u32 = 4;
    const I32: u32 = 5;
    const F32: u32 = 6;
    let bytes = gguf_with(&[
        ("general.sampling.temp", F32, 0.6f32.to_le_bytes().to_vec()),
        ("general.sampling.top_k", I32, 20i32.to_le_bytes().to_vec()),
        (
            "general.sampling.top_p",
            F32,
            0.95f32.to_le_bytes().to_vec(),
        ),
        (
            "general.sampling.min_p",
            F32,
            0.05f32.to_le_bytes().to_vec(),
        ),
        (
            "general.sampling.penalty_last_n",
            I32,
            (-1i32).to_le_bytes().to_vec(),
        ),
        (
            "general.sampling.penalty_repeat",
            F32,
            1.05f32.to_le_bytes().to_vec(),
        ),
        (
            "general.sampling.mirostat",
            I32,
            2i32.to_le_bytes().to_vec(),
        ),
        // wrong type: ignored
        (
            "general.sampling.mirostat_eta",
            U32,
            3u32.to_le_bytes().to_vec(),
        ),
    ]);
    let h = GgufHeader::parse(&bytes, bytes.len() as u64, Limits::default()).unwrap();
    let p = SamplerParams::from_metadata(&h.metadata);
    assert_eq!(p.temperature, 0.6);
    assert_eq!(p.top_k, 20);
    assert_eq!(p.top_p, 0.95);
    assert_eq!(p.min_p, 0.05);
    assert_eq!(p.penalty_window, usize::MAX);
    assert_eq!(p.repetition_penalty, 1.05);
    assert_eq!(p.mirostat, 2);
    assert_eq!(p.mirostat_eta, 0.1);
    // the tiny models have none: the built-in table
    let e = engine("tiny-llama-f32");
    assert_eq!(e.default_sampling(), &SamplerParams::default());
}

/// The real SmolLM2 (skipped when `.cache/models` lacks it): ChatML's `<|im_end|>` is an
/// end-of-generation token.
#[test]
fn smollm2_template_end_token_is_eog() {
    let path = format!(
        "{}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        env!("CARGO_MANIFEST_DIR")
    );
    if !Path::new(&path).exists() {
        eprintln!("skipped: {path} not found");
        return;
    }
    let e = Engine::from_file(Path::new(&path)).unwrap();
    let im_end = e.tokenizer().vocab().id("<|im_end|>").unwrap();
    assert!(e.is_eog(im_end));
    assert!(e.chat_template().unwrap().source().contains("<|im_end|>"));
}

/// End to end on SmolLM2 (fetched by `scripts/fetch-models.sh`; a missing model fails): a chat
/// turn answers, stops on `<|im_end|>`, and the next turn reuses the cached conversation.
#[test]
fn smollm2_chat_answers_and_reuses_the_conversation() {
    let path = format!(
        "{}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        env!("CARGO_MANIFEST_DIR")
    );
    assert!(
        Path::new(&path).exists(),
        "{path} not found: run scripts/fetch-models.sh"
    );
    let e = Engine::from_file(Path::new(&path)).unwrap();
    let mut s = e
        .session(SessionOptions {
            n_ctx: Some(512),
            ..Default::default()
        })
        .unwrap();
    let mut msgs = vec![ChatMessage::new(
        "user",
        "What is the capital of France? Answer in one word.",
    )];
    let a = s.complete(msgs.clone(), greedy_params(32)).unwrap();
    eprintln!("{:?} {:?}", a.text, a.stats);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(a.stats.finish_reason, FinishReason::Eos);
    msgs.push(ChatMessage::new("assistant", a.text.clone()));
    msgs.push(ChatMessage::new("user", "And of Germany?"));
    let b = s.complete(msgs, greedy_params(32)).unwrap();
    eprintln!("{:?} {:?}", b.text, b.stats);
    assert!(b.stats.n_cached >= a.stats.n_prompt, "{:?}", b.stats);
    assert!(b.text.contains("Berlin"), "{:?}", b.text);
}

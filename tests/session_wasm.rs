//! Sessions under wasm32 in node (`cargo test --target wasm32-unknown-unknown --no-default-features
//! --test session_wasm`): the clock (`std::time::Instant` would panic here), entropy seeding,
//! generation, snapshots and saved state on a tiny model compiled into the test binary.
#![cfg(target_arch = "wasm32")]

use ternlm::session::{Engine, Event, FinishReason, GenerateParams, SamplerParams, SessionOptions};
use wasm_bindgen_test::wasm_bindgen_test;

const MODEL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/models/tiny-llama-f32.gguf"
));

#[wasm_bindgen_test]
fn generation_state_and_clock_work_under_wasm() {
    let e = Engine::from_bytes(MODEL.to_vec()).unwrap();
    // no seed: entropy from JS
    let mut s = e.session(SessionOptions::default()).unwrap();
    assert_eq!(s.n_ctx(), 512);
    let prompt: Vec<u32> = (0..12).map(|i| (i * 31 + 5) % 264).collect();
    let params = GenerateParams {
        sampling: Some(SamplerParams::greedy()),
        max_tokens: Some(8),
        ..Default::default()
    };
    let mut ids = Vec::new();
    let mut stats = None;
    for ev in s.generate(prompt.clone(), params.clone()).unwrap() {
        match ev.unwrap() {
            Event::Token { id, .. } => ids.push(id),
            Event::Text { .. } => {}
            Event::Done(st) => stats = Some(st),
        }
    }
    let stats = stats.unwrap();
    assert_eq!(stats.finish_reason, FinishReason::Length);
    assert_eq!(ids.len(), 8);
    assert!(stats.ttft_ms >= 0.0 && stats.decode_ms >= 0.0);

    // the same tokens natively and after a save/load round trip into another session
    let bytes = s.save_state().unwrap();
    let mut t = e
        .session(SessionOptions {
            n_ctx: Some(64),
            seed: Some(1),
            ..Default::default()
        })
        .unwrap();
    t.load_state(&bytes).unwrap();
    assert_eq!(t.tokens(), s.tokens());
    let snap = t.snapshot().unwrap();
    let a = t.complete(prompt.clone(), params.clone()).unwrap();
    assert_eq!(a.tokens, ids);
    t.restore(&snap).unwrap();
    assert_eq!(t.snapshot().unwrap(), snap);
    let mut truncated = bytes.clone();
    truncated.truncate(bytes.len() / 2);
    assert_eq!(
        t.load_state(&truncated).unwrap_err().code(),
        "state_truncated"
    );
}

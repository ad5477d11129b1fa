//! Loading: typed errors for broken or mismatched files (testing.md §4.1 "Loading"), the fused
//! `attn_qkv` layout, the tied head, and the spec facts of the real models.

mod model_util;

use model_util::*;
use ternlm::backend::cpu::Kernel;
use ternlm::gguf::Value;
use ternlm::model::{LogitsFor, Model};
use ternlm::quant::GgmlType;

fn tiny(name: &str) -> Edit {
    Edit::read(&models_dir().join(name))
}

fn load_err(e: &Edit) -> String {
    match Model::from_bytes(e.write()) {
        Ok(_) => panic!("the edited model loaded"),
        Err(err) => format!("{} {err}", err.code()),
    }
}

#[test]
fn the_editor_round_trips() {
    let m = Model::from_bytes(tiny("tiny-llama-f32.gguf").write()).unwrap();
    let orig = load(&models_dir().join("tiny-llama-f32.gguf"));
    let (mut a, mut b) = (m.new_cache(8), orig.new_cache(8));
    assert_eq!(
        m.forward(&mut a, &[1, 2, 3], LogitsFor::All).unwrap(),
        orig.forward(&mut b, &[1, 2, 3], LogitsFor::All).unwrap()
    );
}

#[test]
fn garbage_and_truncated_files_are_errors() {
    assert!(Model::from_bytes(Vec::new()).is_err());
    assert!(Model::from_bytes(b"not a gguf file at all".to_vec()).is_err());
    let bytes = std::fs::read(models_dir().join("tiny-llama-f32.gguf")).unwrap();
    for cut in [16, bytes.len() / 2, bytes.len() - 1] {
        let e = Model::from_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(e.code().starts_with("gguf_"), "cut {cut}: {}", e.code());
    }
}

#[test]
fn unknown_architecture() {
    let mut e = tiny("tiny-llama-f32.gguf");
    e.set("general.architecture", Value::String("mamba".into()));
    assert!(load_err(&e).starts_with("model_unsupported_arch"));
}

#[test]
fn missing_and_misshapen_tensors() {
    let mut e = tiny("tiny-llama-f32.gguf");
    e.remove_tensor("blk.1.ffn_up.weight");
    assert_eq!(
        load_err(&e),
        "model_missing_tensor model: missing tensor 'blk.1.ffn_up.weight'"
    );

    let mut e = tiny("tiny-llama-f32.gguf");
    e.remove_tensor("blk.0.attn_k.weight");
    e.add_tensor(
        "blk.0.attn_k.weight",
        GgmlType::F32,
        vec![64, 16],
        vec![0; 64 * 16 * 4],
    );
    assert!(
        load_err(&e).starts_with("model_tensor_shape"),
        "{}",
        load_err(&e)
    );

    // qwen3 needs its QK-norm weights: never substitute another norm (architectures.md §4).
    let mut e = tiny("tiny-qwen3-f32.gguf");
    e.remove_tensor("blk.0.attn_q_norm.weight");
    assert!(load_err(&e).contains("blk.0.attn_q_norm.weight"));

    // gemma3's post-norms are required too.
    let mut e = tiny("tiny-gemma3-f32.gguf");
    e.remove_tensor("blk.1.post_ffw_norm.weight");
    assert!(load_err(&e).starts_with("model_missing_tensor"));
}

#[test]
fn dims_probe_and_metadata_mismatches() {
    let mut e = tiny("tiny-llama-f32.gguf");
    e.set("llama.block_count", Value::U32(3));
    assert!(
        load_err(&e).starts_with("model_mismatch"),
        "{}",
        load_err(&e)
    );

    let mut e = tiny("tiny-llama-f32.gguf");
    e.set("llama.embedding_length", Value::U32(32));
    assert!(load_err(&e).starts_with("model_mismatch"));

    let mut e = tiny("tiny-llama-f32.gguf");
    e.set("llama.vocab_size", Value::U32(300));
    assert!(load_err(&e).starts_with("model_mismatch"));

    let mut e = tiny("tiny-llama-f32.gguf");
    e.set("llama.attention.head_count_kv", Value::U32(3));
    assert!(load_err(&e).starts_with("model_mismatch"));

    let mut e = tiny("tiny-llama-f32.gguf");
    e.set("llama.rope.scaling.type", Value::String("yarn".into()));
    e.set("llama.rope.scaling.factor", Value::F32(4.0));
    assert!(load_err(&e).contains("yarn"));

    let mut e = tiny("tiny-llama-f32.gguf");
    e.kv.retain(|(k, _)| k != "llama.attention.layer_norm_rms_epsilon");
    assert!(load_err(&e).starts_with("gguf_missing_key"));

    // bitnet ties its head: an output.weight is refused, as llama.cpp does.
    let mut e = tiny("tiny-bitnet-tq2_0.gguf");
    let (ty, ne, data) = {
        let t = e
            .tensors
            .iter()
            .find(|t| t.0 == "token_embd.weight")
            .unwrap();
        (t.1, t.2.clone(), t.3.clone())
    };
    e.add_tensor("output.weight", ty, ne, data);
    assert!(load_err(&e).starts_with("model_mismatch"));
}

#[test]
fn fused_qkv_equals_separate_projections() {
    let mut e = tiny("tiny-llama-f32.gguf");
    for il in 0..2 {
        let mut data = Vec::new();
        let mut rows = 0;
        for role in ["attn_q", "attn_k", "attn_v"] {
            let (_, ne, d) = e.remove_tensor(&format!("blk.{il}.{role}.weight"));
            rows += ne[1];
            data.extend(d);
        }
        e.add_tensor(
            &format!("blk.{il}.attn_qkv.weight"),
            GgmlType::F32,
            vec![64, rows],
            data,
        );
    }
    let mut fused = Model::from_bytes(e.write()).unwrap();
    let mut orig = load(&models_dir().join("tiny-llama-f32.gguf"));
    fused.set_kernel(Kernel::Reference);
    orig.set_kernel(Kernel::Reference);
    assert!(matches!(
        fused.weights().layers[0].qkv,
        ternlm::model::Qkv::Fused(_)
    ));
    let toks = [5, 9, 200, 31, 7];
    let (mut a, mut b) = (fused.new_cache(8), orig.new_cache(8));
    assert_eq!(
        fused.forward(&mut a, &toks, LogitsFor::All).unwrap(),
        orig.forward(&mut b, &toks, LogitsFor::All).unwrap()
    );
}

#[test]
fn tied_head_binds_token_embd() {
    let m = load(&models_dir().join("tiny-llamatied-q8_0.gguf"));
    assert!(m.spec().tied_output);
    assert!(m.weights().output.is_none());
    assert_eq!(m.weights().lm_head(), &m.weights().token_embd);
    let m = load(&models_dir().join("tiny-llama-f32.gguf"));
    assert!(!m.spec().tied_output && m.weights().output.is_some());
}

#[test]
fn real_model_specs() {
    {
        let s = load(&cache_model("SmolLM2-135M-Instruct.Q4_1.gguf"))
            .spec()
            .clone();
        assert_eq!(
            (s.arch.name, s.n_layer, s.n_embd, s.n_ff),
            ("llama", 30, 576, 1536)
        );
        assert_eq!(
            (s.n_head, s.n_head_kv, s.head_dim, s.n_vocab),
            (9, 3, 64, 49152)
        );
        assert_eq!(
            (s.rope.freq_base, s.tied_output, s.n_ctx_train),
            (100000.0, true, 8192)
        );
        assert!(s.layers.iter().all(|l| l.sliding_window.is_none()));
    }
    {
        let s = load(&cache_model("gemma-3-270m-q4_k_m.gguf"))
            .spec()
            .clone();
        assert_eq!(
            (s.arch.name, s.n_layer, s.n_embd, s.n_ff),
            ("gemma3", 18, 640, 2048)
        );
        assert_eq!(
            (s.n_head, s.n_head_kv, s.head_dim, s.n_vocab),
            (4, 1, 256, 262144)
        );
        assert_eq!(s.embed_scale, Some(640f32.sqrt()));
        assert_eq!(s.attn_scale, 1.0 / 16.0);
        assert_eq!((s.final_softcap, s.tied_output, s.eps), (None, true, 1e-6));
        // Every 6th layer is global (pattern 6, no key in the file): 5, 11, 17.
        for (i, l) in s.layers.iter().enumerate() {
            let global = i % 6 == 5;
            assert_eq!(l.sliding_window, (!global).then_some(512), "layer {i}");
            assert_eq!(l.rope_base, if global { 1e6 } else { 1e4 }, "layer {i}");
        }
    }
}

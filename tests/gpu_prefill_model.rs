//! The GPU prefill path (gemm.wgsl for every matmul of 16+ tokens with its fusions,
//! attention_prefill.wgsl) through the whole decoder on the real models (SmolLM2-135M Q4_1:
//! GQA 9/3, Q4_1 + Q8_0; gemma-3-270m Q4_K_M: head_dim 256, QK-norm, post-norms, Q4_K/Q5_0/Q6_K
//! mixes): the logits of every position of a 41-token prompt, prefilled in one chunk, in two
//! (25 tokens, then 16 more over the cached rows) and as 25 then 16 one-token decode steps
//! (the decode attention with RoPE and the KV write folded in), equal the CPU's with f32
//! activations (`Kernel::Reference`), the GPU's with an f32 KV cache and f32 activations
//! (`GpuOptions::f32_activations`). Missing models fail the test (`scripts/fetch-models.sh`).

mod model_util;

use model_util::*;
use ternlm::backend::cpu::Kernel;
use ternlm::backend::gpu::GpuOptions;
use ternlm::model::{LogitsFor, Model};

/// f32 GEMM and attention sums in another order than the CPU's: near exact.
const BOUND: f64 = 1e-8;

#[test]
fn gpu_prefill_matches_cpu_on_real_models() {
    for name in ["SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m-q4_k_m"] {
        let mut m = Model::from_file(&cache_model(&format!("{name}.gguf"))).unwrap();
        m.set_threads(2);
        m.set_kernel(Kernel::Reference);
        let n_vocab = m.spec().n_vocab;
        let toks: Vec<u32> = (0..41u32).map(|i| 10 + (i * 7919) % 20_000).collect();
        let cpu = m
            .forward(&mut m.new_cache(toks.len()), &toks, LogitsFor::All)
            .unwrap();
        m.use_gpu(&GpuOptions {
            kv_f32: true,
            f32_activations: true,
            ..GpuOptions::default()
        })
        .unwrap();
        let one = m
            .forward(&mut m.new_cache(toks.len()), &toks, LogitsFor::All)
            .unwrap();
        let mut cache = m.new_cache(toks.len());
        let mut two = m.forward(&mut cache, &toks[..25], LogitsFor::All).unwrap();
        two.extend(m.forward(&mut cache, &toks[25..], LogitsFor::All).unwrap());
        // 25 prefilled, then one-token decode steps (RoPE and the KV write inside the
        // attention dispatch: attn::attention_rope_kv).
        let mut cache = m.new_cache(toks.len());
        let mut steps = m.forward(&mut cache, &toks[..25], LogitsFor::All).unwrap();
        for t in &toks[25..] {
            steps.extend(m.forward(&mut cache, &[*t], LogitsFor::All).unwrap());
        }
        for (what, gpu) in [
            ("one chunk", &one),
            ("two chunks", &two),
            ("25 + 16 steps", &steps),
        ] {
            let s = compare(gpu, &cpu, n_vocab, BOUND);
            eprintln!(
                "{name} {what}: GPU vs CPU NMSE {:.2e}, top-1 {}/{}",
                s.nmse, s.agree, s.positions
            );
            assert!(s.nmse <= BOUND, "{name} {what}: NMSE {:e}", s.nmse);
            assert_eq!(s.agree, s.positions, "{name} {what}: top-1");
        }
    }
}

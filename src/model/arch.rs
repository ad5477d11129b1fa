//! Architectures as data (spec/architectures.md §2–§6; STYLE.md practice 2).
//!
//! One table maps `general.architecture` to the flags the generic decoder reads. Every flag here
//! was checked against the vendored llama.cpp (`src/models/<arch>.cpp`, `src/llama-model.cpp`),
//! which is our oracle. A separate code path exists only where the math differs; everything else
//! is a flag. Out of scope: MoE, MLA and recurrent layers (later issues).

use crate::error::{ModelError, Result};

/// How RoPE pairs the dimensions of a head (llama.cpp `llama_model_rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// GPT-J / "interleaved": pairs `(x[2i], x[2i+1])`. The HF→GGUF converter permutes Q/K of
    /// `llama` so that this is right for GGUF files (never for the HF weights).
    Norm,
    /// GPT-NeoX / "rotate half": pairs `(x[i], x[i + n_rot/2])`.
    Neox,
}

/// The gate activation of the gated FFN `down(act(gate·x) ⊙ up·x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `g / (1 + e^−g)` (SwiGLU).
    Silu,
    /// `0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))` (GeGLU, tanh approximation as ggml's
    /// `ggml_gelu_f32`; ggml's CPU path additionally rounds `g` to f16 for a table lookup, a
    /// ≤ 2⁻¹¹ relative difference we do not copy).
    GeluTanh,
    /// `max(g, 0)²` (BitNet b1.58 2B-4T).
    Relu2,
}

impl Activation {
    /// The value of `bitnet.hidden_activation` / `{arch}.hidden_activation` strings we accept.
    fn from_name(s: &str) -> Option<Self> {
        match s {
            "silu" | "swish" => Some(Activation::Silu),
            "relu2" | "relu_sqr" | "relu_squared" => Some(Activation::Relu2),
            "gelu" | "gelu_tanh" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }
}

/// Where the LM head comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputRule {
    /// `output.weight` if present, else `token_embd` bound again (never copied).
    TiedIfAbsent,
    /// Always `token_embd`; an `output.weight` in the file is an error (llama.cpp's `bitnet`
    /// fails with "wrong number of tensors" on such a file).
    AlwaysTied,
}

/// Which layers use sliding-window attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwaRule {
    /// Every layer attends to the whole causal prefix.
    None,
    /// gemma3 (`llama_model_gemma3::load_arch_hparams`): active iff `{arch}.attention.sliding_window`
    /// is present and > 0. The pattern is `{arch}.attention.sliding_window_pattern`, either a
    /// per-layer bool array or an integer `p` (default `default_pattern` = 6); with an integer,
    /// layer `il` is sliding iff `il % p < p − 1` (`set_swa_pattern(p, dense_first = false)`), so
    /// every 6th layer (5, 11, 17 on the 270M) is global. Sliding layers use the RoPE base
    /// `{arch}.rope.freq_base_swa` (default 10000, ggml's `rope_freq_base_train_swa`) and a RoPE
    /// frequency scale of 1; global layers use `rope.freq_base` and the file's linear scaling.
    Pattern { default_pattern: u32 },
}

/// How the attention scale is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnScaleRule {
    /// Softmax scale `1/sqrt(hd)` applied to `q·k` (or `{arch}.attention.scale` when present).
    InvSqrtHd,
    /// gemma3: `Q ← Q · f_attention_scale` after RoPE, then softmax with scale 1
    /// (`ggml_scale(Qcur, hparams.f_attention_scale)` … `build_attn(…, 1.0f)`). The scale is
    /// `1/sqrt(key_length)`, except for the 62-layer 27B where it is `1/sqrt(n_embd/n_head)`.
    ScaleQueryGemma3,
}

/// Whether the input embedding is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedScale {
    None,
    /// gemma: `x₀ ← x₀ · sqrtf(n_embd)`, the constant an f32 (`ggml_scale(inpL, sqrtf(n_embd))`
    /// in `src/models/gemma3.cpp`; 25.298221 for n_embd 640).
    SqrtNEmbd,
}

/// The flags of one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchSpec {
    /// `general.architecture`.
    pub name: &'static str,
    pub rope: RopeStyle,
    /// Per-head RMSNorm of q and k after projection, before RoPE (`attn_q_norm`/`attn_k_norm`,
    /// required when set).
    pub qk_norm: bool,
    /// gemma3's `post_attention_norm` / `post_ffw_norm` on the block outputs before each residual
    /// add (required when set).
    pub post_norms: bool,
    /// BitNet's `attn_sub_norm` (before `attn_output`) and `ffn_sub_norm` (before `ffn_down`).
    pub sub_norms: bool,
    pub embed_scale: EmbedScale,
    /// Default activation; `{arch}.hidden_activation` may override it where `activation_key`.
    pub activation: Activation,
    /// Whether `{arch}.hidden_activation` is read (bitnet extension: `"relu2"` selects ReLU²).
    pub activation_key: bool,
    pub output: OutputRule,
    pub swa: SwaRule,
    pub attn_scale: AttnScaleRule,
    /// Per-tensor f32 multipliers `blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,
    /// ffn_down}.scale` `{1}` that multiply the matmul's output (BitNet).
    pub tensor_scales: bool,
    /// `{arch}.final_logit_softcapping`: `logits ← c·tanh(logits/c)` when present and non-zero.
    pub final_softcap: bool,
    /// llama.cpp refuses `rope.dimension_count ≠ key_length` for `llama`.
    pub full_rotary: bool,
}

const BASE: ArchSpec = ArchSpec {
    name: "",
    rope: RopeStyle::Norm,
    qk_norm: false,
    post_norms: false,
    sub_norms: false,
    embed_scale: EmbedScale::None,
    activation: Activation::Silu,
    activation_key: false,
    output: OutputRule::TiedIfAbsent,
    swa: SwaRule::None,
    attn_scale: AttnScaleRule::InvSqrtHd,
    tensor_scales: false,
    final_softcap: false,
    full_rotary: false,
};

/// The table. Optional q/k/v/o and FFN biases are accepted for every architecture (llama.cpp's
/// `create_tensor_qkv` loads them as optional everywhere); qwen2 files carry q/k/v biases.
pub static ARCHS: &[ArchSpec] = &[
    // src/models/llama.cpp: NORM RoPE, SwiGLU, optional rope_freqs (llama3), tied if no output.
    ArchSpec {
        name: "llama",
        full_rotary: true,
        ..BASE
    },
    // src/models/qwen2.cpp: llama + q/k/v biases, NEOX RoPE, optional `output.bias`.
    ArchSpec {
        name: "qwen2",
        rope: RopeStyle::Neox,
        ..BASE
    },
    // src/models/qwen3.cpp: NEOX, per-head QK-norm before RoPE; hd from key_length.
    ArchSpec {
        name: "qwen3",
        rope: RopeStyle::Neox,
        qk_norm: true,
        ..BASE
    },
    // src/models/gemma3.cpp; the gaps of architectures.md §5, closed from the oracle and the
    // real gemma-3-270m file (tests/model_load.rs checks the file's values):
    // 1. x₀ ← x₀·sqrtf(n_embd), an f32 constant (EmbedScale::SqrtNEmbd);
    // 2. norm weights already hold HF's `1 + w`: the converter adds 1 to every `*norm.weight`
    //    (conversion/gemma.py `norm_shift`) and the graph multiplies by the stored weight
    //    (build_norm → ggml_mul), so we use them as stored;
    // 3. gate GELU, tanh form (LLM_FFN_GELU, LLM_FFN_PAR → ggml_geglu_split);
    // 4. h = x + post_attention_norm(attn); x' = h + post_ffw_norm(ffn(ffn_norm(h)));
    //    QK-norm per head before RoPE;
    // 5. sliding window from attention.sliding_window (512), pattern 6 when the key
    //    sliding_window_pattern is absent (the 270M has none): layers 5, 11, 17 are global; key
    //    j is visible to query i iff i − 512 < j ≤ i (is_masked_swa: p1 − p0 ≥ n_swa masks);
    // 6. RoPE base rope.freq_base_swa (absent → 10000) on sliding layers, rope.freq_base (1e6)
    //    on global ones; NEOX;
    // 7. Q scaled by 1/sqrt(key_length) = 1/16 before the dot products, softmax scale 1; no
    //    attention soft-capping in gemma3; final_logit_softcapping only if the key is present
    //    (absent in the 270M);
    // 8. tied head (no output.weight in the 270M).
    ArchSpec {
        name: "gemma3",
        rope: RopeStyle::Neox,
        qk_norm: true,
        post_norms: true,
        embed_scale: EmbedScale::SqrtNEmbd,
        activation: Activation::GeluTanh,
        swa: SwaRule::Pattern { default_pattern: 6 },
        attn_scale: AttnScaleRule::ScaleQueryGemma3,
        final_softcap: true,
        ..BASE
    },
    // src/models/bitnet.cpp: NEOX, sub-norms, always tied, per-tensor scales, and a hard-coded
    // SiLU gate (LLM_FFN_SILU) in the oracle revision; `bitnet.hidden_activation = "relu2"` is
    // our documented extension (architectures.md §6).
    ArchSpec {
        name: "bitnet",
        rope: RopeStyle::Neox,
        sub_norms: true,
        activation_key: true,
        output: OutputRule::AlwaysTied,
        tensor_scales: true,
        ..BASE
    },
    // The BitNet fork's 2B-4T (`bitnet-25`): as bitnet with ReLU². Upstream llama.cpp does not
    // know it; the oracle is bitnet.cpp or our own f32 reference.
    ArchSpec {
        name: "bitnet-25",
        rope: RopeStyle::Neox,
        sub_norms: true,
        activation: Activation::Relu2,
        activation_key: true,
        output: OutputRule::AlwaysTied,
        tensor_scales: true,
        ..BASE
    },
];

/// The table entry for `general.architecture`; unknown names are an error (never llama).
pub fn lookup(name: &str) -> Result<&'static ArchSpec> {
    ARCHS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ModelError::UnsupportedArch(name.to_string()).into())
}

/// Resolves `{arch}.hidden_activation` (when the architecture reads it) to an activation.
pub(crate) fn activation_from_key(arch: &ArchSpec, value: Option<&str>) -> Result<Activation> {
    match value {
        Some(v) if arch.activation_key => Activation::from_name(v).ok_or_else(|| {
            ModelError::Mismatch(format!(
                "{}.hidden_activation = '{v}' is not one of silu, relu2, gelu",
                arch.name
            ))
            .into()
        }),
        _ => Ok(arch.activation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_arch_is_an_error() {
        let e = lookup("mamba").unwrap_err();
        assert_eq!(e.code(), "model_unsupported_arch");
        assert_eq!(lookup("llama").unwrap().rope, RopeStyle::Norm);
        assert_eq!(lookup("qwen2").unwrap().rope, RopeStyle::Neox);
        assert_eq!(lookup("bitnet").unwrap().activation, Activation::Silu);
        assert_eq!(lookup("bitnet-25").unwrap().activation, Activation::Relu2);
    }

    #[test]
    fn bitnet_activation_key() {
        let b = lookup("bitnet").unwrap();
        assert_eq!(activation_from_key(b, None).unwrap(), Activation::Silu);
        assert_eq!(
            activation_from_key(b, Some("relu2")).unwrap(),
            Activation::Relu2
        );
        assert!(activation_from_key(b, Some("tanh")).is_err());
        // Architectures that do not read the key ignore it.
        let l = lookup("llama").unwrap();
        assert_eq!(
            activation_from_key(l, Some("relu2")).unwrap(),
            Activation::Silu
        );
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in ARCHS.iter().enumerate() {
            assert!(ARCHS[i + 1..].iter().all(|b| b.name != a.name));
        }
    }
}

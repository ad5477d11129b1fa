//! The model spec: hyperparameters from metadata **and** tensor shapes, cross-checked at load
//! (spec/architectures.md §0, §1.4).
//!
//! Key names and defaults follow llama.cpp's `llama_model_base::load_hparams` and each
//! architecture's `load_arch_hparams` (the oracle): `rope.freq_base` defaults to 10000,
//! `key_length`/`value_length` to `n_embd/H`, `rope.dimension_count` to the head size,
//! `head_count_kv` to `head_count`; `layer_norm_rms_epsilon` and `context_length` are required.
//! `{arch}.attention.scale` is not read: llama.cpp reads it only for the granite family, none of
//! the architectures here.
//!
//! RoPE angles are formed exactly as llama.cpp forms them, in f32 by repeated multiplication
//! ([`RopeFreqs`]): on quantized real models a one-ulp difference in one angle flips int8
//! activation roundings downstream and moves whole logit rows.

use super::arch::{self, Activation, ArchSpec, AttnScaleRule, EmbedScale, RopeStyle, SwaRule};
use super::weights::Table;
use crate::backend::RopeFreqs;
use crate::error::{ModelError, Result};
use crate::gguf::{Array, Metadata, Value};

/// RoPE scaling as the file asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Angles divided by `factor` (`rope.scaling.type = linear` with `rope.scaling.factor`).
    Linear {
        factor: f64,
    },
    /// Llama 3 frequency scaling computed from metadata. Only used when the file has no
    /// `rope_freqs.weight` (which already holds the result and is then used alone).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: f64,
    },
}

/// RoPE of the model's global (non-sliding) layers.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub style: RopeStyle,
    /// Rotated dimensions per head (the first `n_rot`; the rest pass through).
    pub n_rot: usize,
    pub freq_base: f64,
    pub scaling: RopeScaling,
    /// `rope.scaling.attn_factor`: multiplies cos and sin (ggml's `attn_factor`); 1 by default.
    pub attn_factor: f32,
    /// Whether `rope_freqs.weight` divides the frequencies (llama3 baked into the file).
    pub has_freq_factors: bool,
}

/// Per-layer attention facts.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Sliding window `W`: query at position `i` sees keys `j` with `i − W < j ≤ i`
    /// (llama.cpp masks `p1 − p0 ≥ n_swa`). `None` for full causal attention.
    pub sliding_window: Option<usize>,
    pub rope_base: f64,
    pub rope: RopeFreqs,
}

/// Everything the decoder needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub arch: &'static ArchSpec,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head size of q and k (`key_length`).
    pub head_dim: usize,
    /// Per-head size of v (`value_length`).
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    /// RMSNorm epsilon, from metadata (never hard-coded).
    pub eps: f32,
    pub rope: RopeSpec,
    pub activation: Activation,
    /// The attention scale: applied to `q·k` ([`AttnScaleRule::InvSqrtHd`]) or to Q before the
    /// dot products ([`AttnScaleRule::ScaleQueryGemma3`]).
    pub attn_scale: f32,
    pub embed_scale: Option<f32>,
    pub final_softcap: Option<f32>,
    /// The LM head is `token_embd` (no `output.weight`).
    pub tied_output: bool,
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// q floats per token (`H·hd`).
    pub fn q_len(&self) -> usize {
        self.n_head * self.head_dim
    }
    /// k floats per token per layer (`Hkv·hd`).
    pub fn k_len(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    /// v floats per token per layer (`Hkv·hd_v`).
    pub fn v_len(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

fn mismatch(s: impl Into<String>) -> crate::Error {
    ModelError::Mismatch(s.into()).into()
}

/// What the tensor names and shapes alone say (the dims probe, architectures.md §0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimsProbe {
    /// `1 + max N` over `blk.N.*` (0 when there is none).
    pub n_layer: usize,
    /// Length of `blk.0.attn_norm.weight`.
    pub n_embd: Option<u64>,
}

/// Pure: probe the tensor table.
pub fn dims_probe<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u64])>) -> DimsProbe {
    let mut n_layer = 0usize;
    let mut n_embd = None;
    for (name, ne) in tensors {
        if let Some(rest) = name.strip_prefix("blk.") {
            if let Some(n) = rest.split('.').next().and_then(|n| n.parse::<usize>().ok()) {
                n_layer = n_layer.max(n.saturating_add(1));
            }
        }
        if name == "blk.0.attn_norm.weight" {
            n_embd = ne.first().copied();
        }
    }
    DimsProbe { n_layer, n_embd }
}

/// Pure: compare the probe with the metadata's `block_count` and `embedding_length`.
pub fn check_dims(probe: &DimsProbe, block_count: usize, n_embd: usize) -> Result<()> {
    if probe.n_layer != block_count {
        return Err(mismatch(format!(
            "block_count = {block_count}, but the tensors have {} blocks",
            probe.n_layer
        )));
    }
    match probe.n_embd {
        Some(e) if e == n_embd as u64 => Ok(()),
        Some(e) => Err(mismatch(format!(
            "embedding_length = {n_embd}, but blk.0.attn_norm.weight has {e} elements"
        ))),
        None => Err(ModelError::MissingTensor("blk.0.attn_norm.weight".into()).into()),
    }
}

/// A per-layer integer key that must be the same for every layer (per-layer head counts and
/// widths are not supported yet).
fn uniform(md: &Metadata, name: &str, n_layer: usize) -> Result<Option<usize>> {
    let Some(v) = md.arch_int_per_layer(name, n_layer)? else {
        return Ok(None);
    };
    match v.first() {
        None => Ok(None),
        Some(&x) if v.iter().all(|&y| y == x) => Ok(Some(x as usize)),
        Some(_) => Err(mismatch(format!(
            "per-layer {name} values {v:?} are not supported"
        ))),
    }
}

fn req_usize(md: &Metadata, name: &str) -> Result<usize> {
    let key = md.arch_key(name)?;
    Ok(Metadata::required(&key, md.int::<usize>(&key))?)
}

/// The RoPE frequencies of one layer (see [`RopeFreqs`]). Llama 3 scaling from metadata (no
/// `rope_freqs` tensor) becomes per-pair divisors, as the converter would have written them.
fn layer_rope(
    n_rot: usize,
    base: f64,
    freq_scale: f64,
    freq_factors: Option<&[f32]>,
    llama3: Option<&RopeScaling>,
) -> RopeFreqs {
    let factors = (0..n_rot / 2)
        .map(|i| {
            if let Some(ff) = freq_factors {
                return ff[i];
            }
            let f = base.powf(-2.0 * i as f64 / n_rot as f64);
            if let Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            }) = llama3
            {
                let scaled = llama3_scale(
                    f,
                    *factor,
                    *low_freq_factor,
                    *high_freq_factor,
                    *original_context,
                );
                return (f / scaled) as f32;
            }
            1.0
        })
        .collect();
    RopeFreqs {
        theta_scale: (base as f32).powf(-2.0 / n_rot as f32),
        freq_scale: freq_scale as f32,
        factors,
    }
}

/// The Llama 3 frequency rule (architectures.md §1.4), in f64.
pub fn llama3_scale(f: f64, factor: f64, low: f64, high: f64, orig: f64) -> f64 {
    let low_wl = orig / low;
    let high_wl = orig / high;
    let wl = 2.0 * std::f64::consts::PI / f;
    if wl < high_wl {
        f
    } else if wl > low_wl {
        f / factor
    } else {
        let s = (orig / wl - low) / (high - low);
        (1.0 - s) * f / factor + s * f
    }
}

/// The sliding-window layers of a gemma3-style pattern.
fn swa_layers(md: &Metadata, n_layer: usize, default_pattern: u32) -> Result<Vec<bool>> {
    let key = md.arch_key("attention.sliding_window_pattern")?;
    match md.get(&key) {
        Some(Value::Array(Array::Bool(v))) => {
            if v.len() != n_layer {
                return Err(mismatch(format!(
                    "{key} has {} entries for {n_layer} layers",
                    v.len()
                )));
            }
            Ok(v.clone())
        }
        _ => {
            let p = md.int::<u32>(&key)?.unwrap_or(default_pattern);
            // llama.cpp set_swa_pattern(p, dense_first = false): p = 0 means all sliding.
            Ok((0..n_layer as u32)
                .map(|il| p == 0 || il % p < p - 1)
                .collect())
        }
    }
}

impl ModelSpec {
    /// Builds and checks the spec from the metadata and the tensor table. `rope_freqs` is the
    /// decoded `rope_freqs.weight` when the file has one.
    pub(crate) fn build(md: &Metadata, table: &Table, rope_freqs: Option<&[f32]>) -> Result<Self> {
        let arch = arch::lookup(md.architecture()?)?;
        let n_layer = req_usize(md, "block_count")?;
        let n_embd = req_usize(md, "embedding_length")?;
        let n_ctx_train = req_usize(md, "context_length")?;
        check_dims(
            &dims_probe(table.names().map(|n| (n, table.shape(n).unwrap_or(&[])))),
            n_layer,
            n_embd,
        )?;
        if n_layer == 0 || n_embd == 0 {
            return Err(mismatch(
                "block_count and embedding_length must be positive",
            ));
        }

        let n_head = uniform(md, "attention.head_count", n_layer)?
            .ok_or_else(|| mismatch(format!("missing {}.attention.head_count", arch.name)))?;
        let n_head_kv = uniform(md, "attention.head_count_kv", n_layer)?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(mismatch(format!(
                "head_count {n_head} is not a positive multiple of head_count_kv {n_head_kv}"
            )));
        }
        let default_hd = || {
            if n_embd % n_head == 0 {
                Ok(n_embd / n_head)
            } else {
                Err(mismatch(format!(
                    "embedding_length {n_embd} is not a multiple of head_count {n_head} and \
                     attention.key_length is absent"
                )))
            }
        };
        let head_dim = match md.arch_int::<usize>("attention.key_length")? {
            Some(k) => k,
            None => default_hd()?,
        };
        let head_dim_v = match md.arch_int::<usize>("attention.value_length")? {
            Some(k) => k,
            None => default_hd()?,
        };
        if head_dim == 0 || head_dim != head_dim_v {
            // Every architecture here asserts n_embd_head_k == n_embd_head_v in llama.cpp.
            return Err(mismatch(format!(
                "key_length {head_dim} and value_length {head_dim_v} must be equal and positive"
            )));
        }

        let n_ff = match uniform(md, "feed_forward_length", n_layer)? {
            Some(f) => f,
            None => table
                .shape("blk.0.ffn_gate.weight")
                .and_then(|s| s.get(1))
                .map(|&f| f as usize)
                .ok_or_else(|| ModelError::MissingTensor("blk.0.ffn_gate.weight".into()))?,
        };

        let embd = table
            .shape("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match embd {
            [e, v] if *e == n_embd as u64 => *v as usize,
            _ => {
                return Err(ModelError::TensorShape {
                    name: "token_embd.weight".into(),
                    expected: vec![n_embd as u64, 0],
                    found: embd.to_vec(),
                }
                .into())
            }
        };
        if let Some(vs) = md.arch_int::<usize>("vocab_size")? {
            if vs != n_vocab {
                return Err(mismatch(format!(
                    "vocab_size = {vs}, but token_embd has {n_vocab} rows"
                )));
            }
        }
        if let Ok(Some(a)) = md.array("tokenizer.ggml.tokens") {
            if a.len() != n_vocab {
                return Err(mismatch(format!(
                    "the tokenizer has {} tokens, but token_embd has {n_vocab} rows",
                    a.len()
                )));
            }
        }

        let eps_key = md.arch_key("attention.layer_norm_rms_epsilon")?;
        let eps = Metadata::required(&eps_key, md.float(&eps_key))? as f32;

        // RoPE.
        let n_rot = md
            .arch_int::<usize>("rope.dimension_count")?
            .unwrap_or(head_dim);
        if n_rot % 2 != 0 || n_rot > head_dim || (arch.full_rotary && n_rot != head_dim) {
            return Err(mismatch(format!(
                "rope.dimension_count {n_rot} does not fit head size {head_dim}"
            )));
        }
        let freq_base = md.arch_float("rope.freq_base")?.unwrap_or(10000.0);
        let scaling_type = md
            .str(&md.arch_key("rope.scaling.type")?)?
            .unwrap_or("linear")
            .to_string();
        let factor = match md.arch_float("rope.scaling.factor")? {
            Some(f) => f,
            None => md.arch_float("rope.scale_linear")?.unwrap_or(0.0),
        };
        let scaling = match scaling_type.as_str() {
            "none" => RopeScaling::None,
            "linear" if factor == 0.0 || factor == 1.0 => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor },
            "llama3" => RopeScaling::Llama3 {
                factor: if factor == 0.0 { 1.0 } else { factor },
                low_freq_factor: md
                    .arch_float("rope.scaling.low_freq_factor")?
                    .unwrap_or(1.0),
                high_freq_factor: md
                    .arch_float("rope.scaling.high_freq_factor")?
                    .unwrap_or(4.0),
                original_context: md
                    .arch_float("rope.scaling.original_context_length")?
                    .unwrap_or(8192.0),
            },
            other => {
                return Err(mismatch(format!(
                    "rope.scaling.type '{other}' is not supported"
                )))
            }
        };
        let attn_factor = md
            .arch_float("rope.scaling.attn_factor")?
            .map_or(1.0, |f| f as f32);
        if let Some(ff) = rope_freqs {
            if ff.len() != n_rot / 2 {
                return Err(ModelError::TensorShape {
                    name: "rope_freqs.weight".into(),
                    expected: vec![(n_rot / 2) as u64],
                    found: vec![ff.len() as u64],
                }
                .into());
            }
        }
        let freq_scale = match scaling {
            RopeScaling::Linear { factor } => 1.0 / factor,
            _ => 1.0,
        };

        // Sliding window and per-layer RoPE base.
        let (swa, window, base_swa) = match arch.swa {
            SwaRule::None => (vec![false; n_layer], 0, freq_base),
            SwaRule::Pattern { default_pattern } => {
                match md.arch_int::<usize>("attention.sliding_window")? {
                    Some(w) if w > 0 => (
                        swa_layers(md, n_layer, default_pattern)?,
                        w,
                        md.arch_float("rope.freq_base_swa")?.unwrap_or(10000.0),
                    ),
                    _ => (vec![false; n_layer], 0, freq_base),
                }
            }
        };
        let llama3 = matches!(scaling, RopeScaling::Llama3 { .. }).then_some(&scaling);
        let rope_full = layer_rope(n_rot, freq_base, freq_scale, rope_freqs, llama3);
        // Sliding layers: rope_freq_base_train_swa and rope_freq_scale_train_swa = 1
        // (llama_model::get_rope_freq_base/scale); the frequency factors still apply.
        let rope_swa = layer_rope(n_rot, base_swa, 1.0, rope_freqs, llama3);
        let layers = swa
            .iter()
            .map(|&s| LayerSpec {
                sliding_window: s.then_some(window),
                rope_base: if s { base_swa } else { freq_base },
                rope: if s {
                    rope_swa.clone()
                } else {
                    rope_full.clone()
                },
            })
            .collect();

        let attn_scale = match arch.attn_scale {
            AttnScaleRule::InvSqrtHd => 1.0 / (head_dim as f32).sqrt(),
            // gemma3 load_arch_hparams: the 27B (62 layers) uses n_embd/n_head.
            AttnScaleRule::ScaleQueryGemma3 if n_layer == 62 => {
                1.0 / ((n_embd / n_head) as f32).sqrt()
            }
            AttnScaleRule::ScaleQueryGemma3 => 1.0 / (head_dim as f32).sqrt(),
        };
        let embed_scale = match arch.embed_scale {
            EmbedScale::None => None,
            EmbedScale::SqrtNEmbd => Some((n_embd as f32).sqrt()),
        };
        let final_softcap = if arch.final_softcap {
            md.arch_float("final_logit_softcapping")?
                .map(|c| c as f32)
                .filter(|&c| c != 0.0)
        } else {
            None
        };
        let act_key = md.arch_key("hidden_activation")?;
        let activation = arch::activation_from_key(arch, md.str(&act_key)?)?;

        Ok(ModelSpec {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            n_vocab,
            n_ctx_train,
            eps,
            rope: RopeSpec {
                style: arch.rope,
                n_rot,
                freq_base,
                scaling,
                attn_factor,
                has_freq_factors: rope_freqs.is_some(),
            },
            activation,
            attn_scale,
            embed_scale,
            final_softcap,
            tied_output: table.shape("output.weight").is_none(),
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_counts_blocks_and_width() {
        let t: Vec<(&str, Vec<u64>)> = vec![
            ("token_embd.weight", vec![8, 10]),
            ("blk.0.attn_norm.weight", vec![8]),
            ("blk.2.ffn_up.weight", vec![8, 16]),
            ("blk.x.bad", vec![1]),
        ];
        let p = dims_probe(t.iter().map(|(n, s)| (*n, s.as_slice())));
        assert_eq!(
            p,
            DimsProbe {
                n_layer: 3,
                n_embd: Some(8)
            }
        );
        assert!(check_dims(&p, 3, 8).is_ok());
        assert_eq!(check_dims(&p, 2, 8).unwrap_err().code(), "model_mismatch");
        assert_eq!(check_dims(&p, 3, 16).unwrap_err().code(), "model_mismatch");
        let empty = dims_probe(std::iter::empty());
        assert_eq!(
            check_dims(&empty, 0, 8).unwrap_err().code(),
            "model_missing_tensor"
        );
    }

    #[test]
    fn llama3_rule() {
        // High frequencies (short wavelengths) unchanged, low ones divided, smooth in between.
        let (factor, low, high, orig) = (32.0, 1.0, 4.0, 8192.0);
        let hi = 1.0;
        assert_eq!(llama3_scale(hi, factor, low, high, orig), hi);
        let lo = 2.0 * std::f64::consts::PI / 20000.0;
        assert!((llama3_scale(lo, factor, low, high, orig) - lo / factor).abs() < 1e-15);
        let mid = 2.0 * std::f64::consts::PI / 4096.0;
        let m = llama3_scale(mid, factor, low, high, orig);
        assert!(m < mid && m > mid / factor);
    }

    #[test]
    fn rope_angles() {
        let r = layer_rope(8, 10000.0, 0.5, None, None);
        assert_eq!(r.factors, [1.0; 4]);
        let a: Vec<f32> = r.angles(3).collect();
        assert_eq!(a[0], 1.5);
        assert!((a[1] - 1.5 * 10000f32.powf(-0.25)).abs() < 1e-6);
        let ff = [1.0f32, 2.0, 4.0, 8.0];
        let r = layer_rope(8, 10000.0, 1.0, Some(&ff), None);
        let a: Vec<f32> = r.angles(1).collect();
        assert!((a[3] - 10000f32.powf(-0.75) / 8.0).abs() < 1e-7);
    }
}

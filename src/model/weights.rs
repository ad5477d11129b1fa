//! Weights by role, bound to the file's bytes with every shape checked at load
//! (spec/architectures.md §0, §1.5; STYLE.md practice 2).
//!
//! A [`Weight`] is a descriptor (name, type, shape, byte range); the bytes stay in the file
//! buffer the [`super::Model`] owns, so nothing large is copied. The tied LM head is the
//! `token_embd` descriptor bound again. Small vectors (norm weights, biases, `rope_freqs`, the
//! BitNet `.scale` multipliers) are decoded to f32 at load: they are a few KB.
//!
//! Missing required tensors are [`ModelError::MissingTensor`] naming them; a wrong shape is
//! [`ModelError::TensorShape`]; a type we cannot decode is a quant error from
//! [`TensorView::new`]. Nothing here panics on input.

use super::arch::OutputRule;
use super::spec::ModelSpec;
use crate::error::{ModelError, Result};
use crate::gguf::TensorInfo;
use crate::quant::{GgmlType, TensorView};
use std::collections::HashMap;
use std::ops::Range;

/// One tensor of the file: where its bytes are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `ne[0]` = columns (the input dimension of a matmul).
    pub ne: Vec<u64>,
    /// Which file of a split set holds it (0 for single files).
    pub part: usize,
    /// Byte range in that file (absolute, data offset included).
    pub range: Range<usize>,
    /// `ne[0]`.
    pub cols: usize,
    /// Product of `ne[1..]`: the output features of a matmul, the rows of an embedding.
    pub rows: usize,
}

impl Weight {
    /// A checked view of the tensor's bytes in `file` (the bytes of part `self.part`).
    pub fn view<'a>(&'a self, file: &'a [u8]) -> Result<TensorView<'a>> {
        let data = file.get(self.range.clone()).ok_or_else(|| {
            ModelError::Mismatch(format!("tensor '{}' lies outside its file", self.name))
        })?;
        TensorView::new(&self.name, self.ty, &self.ne, data)
    }
}

/// Every tensor of the model by name, with the file it lives in.
pub(crate) struct Table<'h> {
    map: HashMap<&'h str, (usize, &'h TensorInfo, u64)>,
}

impl<'h> Table<'h> {
    /// `parts[i]` = (tensor infos, data offset) of file `i`.
    pub fn new(parts: &[(&'h [TensorInfo], u64)]) -> Self {
        let mut map = HashMap::new();
        for (p, (infos, data_offset)) in parts.iter().enumerate() {
            for t in infos.iter() {
                map.insert(t.name.as_str(), (p, t, *data_offset));
            }
        }
        Table { map }
    }

    pub fn names(&self) -> impl Iterator<Item = &'h str> + '_ {
        self.map.keys().copied()
    }

    pub fn shape(&self, name: &str) -> Option<&'h [u64]> {
        self.map.get(name).map(|(_, t, _)| t.ne.as_slice())
    }

    /// The tensor `name`, if present, with its shape checked against `expected` (ggml order;
    /// trailing 1s are ignored on both sides).
    pub fn opt(&self, name: &str, expected: &[usize]) -> Result<Option<Weight>> {
        let Some(&(part, t, data_offset)) = self.map.get(name) else {
            return Ok(None);
        };
        let trim = |v: Vec<u64>| {
            let mut v = v;
            while v.len() > 1 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        let want = trim(expected.iter().map(|&x| x as u64).collect());
        let got = trim(t.ne.clone());
        if want != got {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: want,
                found: t.ne.clone(),
            }
            .into());
        }
        let too_big = || ModelError::Mismatch(format!("tensor '{name}' does not fit in memory"));
        let start = data_offset
            .checked_add(t.offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(too_big)?;
        let len = usize::try_from(t.n_bytes).map_err(|_| too_big())?;
        let end = start.checked_add(len).ok_or_else(too_big)?;
        let cols = usize::try_from(t.ne[0]).map_err(|_| too_big())?;
        let rows = t.ne[1..]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(too_big)?;
        Ok(Some(Weight {
            name: name.to_string(),
            ty: t.ty,
            ne: t.ne.clone(),
            part,
            range: start..end,
            cols,
            rows,
        }))
    }

    /// As [`Table::opt`], but absence is [`ModelError::MissingTensor`].
    pub fn req(&self, name: &str, expected: &[usize]) -> Result<Weight> {
        self.opt(name, expected)?
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()).into())
    }
}

/// A small tensor decoded to f32 at load (norm weights, biases, frequency factors).
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    pub name: String,
    pub data: Vec<f32>,
}

/// Where the tensors' bytes are while a model loads.
pub(crate) enum Source<'a> {
    /// The files, in memory.
    Files(&'a [&'a [u8]]),
    /// A model streamed to the GPU ([`super::GpuLoader`]): the small tensors' bytes kept on the
    /// host by name; the matrices named by `on_gpu` were uploaded (and checked) as they came.
    Streamed {
        host: &'a HashMap<String, Vec<u8>>,
        on_gpu: &'a dyn Fn(&str) -> bool,
    },
}

impl Source<'_> {
    /// A checked view of `w`'s bytes, or `None` when they are on the GPU only.
    pub fn view<'b>(&'b self, w: &'b Weight) -> Result<Option<TensorView<'b>>> {
        match self {
            Source::Files(parts) => w.view(parts.get(w.part).copied().unwrap_or(&[])).map(Some),
            Source::Streamed { host, on_gpu } => match host.get(&w.name) {
                Some(b) => TensorView::new(&w.name, w.ty, &w.ne, b).map(Some),
                None if on_gpu(&w.name) => Ok(None),
                None => Err(ModelError::MissingTensor(w.name.clone()).into()),
            },
        }
    }

    /// `w` decoded to f32 (a small tensor: its bytes must be at hand).
    pub fn dequantize(&self, w: &Weight) -> Result<Vec<f32>> {
        match self.view(w)? {
            Some(v) => v.dequantize(),
            None => Err(ModelError::Mismatch(format!(
                "tensor '{}' is read on the host but was uploaded to the GPU",
                w.name
            ))
            .into()),
        }
    }
}

fn decode_vector(w: &Weight, src: &Source) -> Result<Vector> {
    Ok(Vector {
        name: w.name.clone(),
        data: src.dequantize(w)?,
    })
}

/// The weights of one decoder block.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vector,
    pub qkv: Qkv,
    pub q_bias: Option<Vector>,
    pub k_bias: Option<Vector>,
    pub v_bias: Option<Vector>,
    /// Per-head QK-norm weights `{hd}` (qwen3, gemma3).
    pub q_norm: Option<Vector>,
    pub k_norm: Option<Vector>,
    pub wo: Weight,
    pub wo_bias: Option<Vector>,
    /// BitNet: RMSNorm of the attention output before `attn_output`.
    pub attn_sub_norm: Option<Vector>,
    /// gemma3: `post_attention_norm` on the attention block's output.
    pub attn_post_norm: Option<Vector>,
    pub ffn_norm: Vector,
    pub ffn_gate: Weight,
    pub ffn_up: Weight,
    pub ffn_down: Weight,
    pub ffn_gate_bias: Option<Vector>,
    pub ffn_up_bias: Option<Vector>,
    pub ffn_down_bias: Option<Vector>,
    /// BitNet: RMSNorm of the gated FFN activation before `ffn_down`.
    pub ffn_sub_norm: Option<Vector>,
    /// gemma3: `post_ffw_norm` on the FFN block's output.
    pub ffn_post_norm: Option<Vector>,
    /// BitNet per-tensor output multipliers (`blk.N.<role>.scale`), 1.0 when absent.
    pub scales: Scales,
}

/// The q/k/v projections: separate tensors, or one fused `attn_qkv` with rows `[Q | K | V]`.
#[derive(Debug, Clone)]
pub enum Qkv {
    Separate { q: Weight, k: Weight, v: Weight },
    Fused(Weight),
}

/// Output multipliers of each projection (llama.cpp `wq_s`, `ffn_up_s`, …).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub q: f32,
    pub k: f32,
    pub v: f32,
    pub o: f32,
    pub gate: f32,
    pub up: f32,
    pub down: f32,
}

impl Default for Scales {
    fn default() -> Self {
        Scales {
            q: 1.0,
            k: 1.0,
            v: 1.0,
            o: 1.0,
            gate: 1.0,
            up: 1.0,
            down: 1.0,
        }
    }
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    pub token_embd: Weight,
    pub output_norm: Vector,
    /// `output.weight`, or `None` when the head is tied to `token_embd` (see [`Weights::lm_head`]).
    pub output: Option<Weight>,
    pub output_bias: Option<Vector>,
    pub layers: Vec<LayerWeights>,
}

impl Weights {
    /// The LM head: `output.weight`, or `token_embd` bound again when tied (never a copy).
    pub fn lm_head(&self) -> &Weight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Binds and checks every tensor the spec needs.
    pub(crate) fn load(spec: &ModelSpec, table: &Table, src: &Source) -> Result<Weights> {
        let (d, v) = (spec.n_embd, spec.n_vocab);
        let (hd, hdv) = (spec.head_dim, spec.head_dim_v);
        let (nq, nk, nv) = (spec.n_head * hd, spec.n_head_kv * hd, spec.n_head_kv * hdv);
        let arch = spec.arch;
        let vector = |name: &str, len: usize| -> Result<Vector> {
            decode_vector(&table.req(name, &[len])?, src)
        };
        let opt_vector = |name: &str, len: usize| -> Result<Option<Vector>> {
            table
                .opt(name, &[len])?
                .map(|w| decode_vector(&w, src))
                .transpose()
        };
        let check_view = |w: &Weight| -> Result<()> { src.view(w).map(|_| ()) };

        let token_embd = table.req("token_embd.weight", &[d, v])?;
        check_view(&token_embd)?;
        let output = table.opt("output.weight", &[d, v])?;
        if output.is_some() && arch.output == OutputRule::AlwaysTied {
            return Err(ModelError::Mismatch(format!(
                "{} models tie the LM head to token_embd; the file has an output.weight",
                arch.name
            ))
            .into());
        }
        if let Some(w) = &output {
            check_view(w)?;
        }
        let mut layers = Vec::with_capacity(spec.n_layer);
        for il in 0..spec.n_layer {
            let n = |role: &str| format!("blk.{il}.{role}");
            let n_ff = spec.n_ff;
            let qkv = match table.opt(&n("attn_qkv.weight"), &[d, nq + nk + nv])? {
                Some(w) => Qkv::Fused(w),
                None => Qkv::Separate {
                    q: table.req(&n("attn_q.weight"), &[d, nq])?,
                    k: table.req(&n("attn_k.weight"), &[d, nk])?,
                    v: table.req(&n("attn_v.weight"), &[d, nv])?,
                },
            };
            match &qkv {
                Qkv::Fused(w) => check_view(w)?,
                Qkv::Separate { q, k, v } => {
                    check_view(q)?;
                    check_view(k)?;
                    check_view(v)?;
                }
            }
            let (q_norm, k_norm) = if arch.qk_norm {
                (
                    Some(vector(&n("attn_q_norm.weight"), hd)?),
                    Some(vector(&n("attn_k_norm.weight"), hd)?),
                )
            } else {
                (None, None)
            };
            let wo = table.req(&n("attn_output.weight"), &[spec.n_head * hdv, d])?;
            check_view(&wo)?;
            let ffn_gate = table.req(&n("ffn_gate.weight"), &[d, n_ff])?;
            let ffn_up = table.req(&n("ffn_up.weight"), &[d, n_ff])?;
            let ffn_down = table.req(&n("ffn_down.weight"), &[n_ff, d])?;
            for w in [&ffn_gate, &ffn_up, &ffn_down] {
                check_view(w)?;
            }
            let mut scales = Scales::default();
            if arch.tensor_scales {
                let scale = |role: &str| -> Result<f32> {
                    Ok(opt_vector(&n(&format!("{role}.scale")), 1)?.map_or(1.0, |s| s.data[0]))
                };
                scales = Scales {
                    q: scale("attn_q")?,
                    k: scale("attn_k")?,
                    v: scale("attn_v")?,
                    o: scale("attn_output")?,
                    gate: scale("ffn_gate")?,
                    up: scale("ffn_up")?,
                    down: scale("ffn_down")?,
                };
            }
            layers.push(LayerWeights {
                attn_norm: vector(&n("attn_norm.weight"), d)?,
                qkv,
                q_bias: opt_vector(&n("attn_q.bias"), nq)?,
                k_bias: opt_vector(&n("attn_k.bias"), nk)?,
                v_bias: opt_vector(&n("attn_v.bias"), nv)?,
                q_norm,
                k_norm,
                wo,
                wo_bias: opt_vector(&n("attn_output.bias"), d)?,
                attn_sub_norm: if arch.sub_norms {
                    Some(vector(&n("attn_sub_norm.weight"), spec.n_head * hdv)?)
                } else {
                    None
                },
                attn_post_norm: if arch.post_norms {
                    Some(vector(&n("post_attention_norm.weight"), d)?)
                } else {
                    None
                },
                ffn_norm: vector(&n("ffn_norm.weight"), d)?,
                ffn_gate,
                ffn_up,
                ffn_down,
                ffn_gate_bias: opt_vector(&n("ffn_gate.bias"), n_ff)?,
                ffn_up_bias: opt_vector(&n("ffn_up.bias"), n_ff)?,
                ffn_down_bias: opt_vector(&n("ffn_down.bias"), d)?,
                ffn_sub_norm: if arch.sub_norms {
                    Some(vector(&n("ffn_sub_norm.weight"), n_ff)?)
                } else {
                    None
                },
                ffn_post_norm: if arch.post_norms {
                    Some(vector(&n("post_ffw_norm.weight"), d)?)
                } else {
                    None
                },
                scales,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm: vector("output_norm.weight", d)?,
            output,
            output_bias: opt_vector("output.bias", v)?,
            layers,
        })
    }
}

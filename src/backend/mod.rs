//! Compute backends: the small set of ops the generic decoder is written against
//! (STYLE.md practice 1: the model code talks only to this interface).
//!
//! [`cpu`] is the reference implementation and the oracle for every other backend. A GPU backend
//! implements the same trait by recording each call into one command encoder per token: nothing
//! in the interface reads a tensor back except [`Backend::read`], which the decoder calls only for
//! the logits and for debug taps.
//!
//! Shapes: a [`Backend::Tensor`] is a row-major `[rows × cols]` f32 matrix, one row per token.
//! Weights are `{cols = in, rows = out}` ([`Weight`]); `matmul` computes `y[t] = W·x[t]`.

pub mod cpu;
pub mod gpu;

use crate::error::Result;
use crate::model::arch::{Activation, RopeStyle};
use crate::model::{Vector, Weight};

pub use cpu::CpuBackend;

/// RoPE frequencies of one layer, in llama.cpp's form so the angles come out bit-identical
/// (`ggml_rope_cache_init`): for position `p`, `t_0 = p` and `t_{i+1} = t_i·theta_scale` in f32,
/// and pair `i` turns by `freq_scale·(t_i / factors[i])`.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFreqs {
    /// `base^(−2/n_rot)` in f32.
    pub theta_scale: f32,
    /// Linear scaling (1 when none).
    pub freq_scale: f32,
    /// Per-pair divisors, `n_rot/2` of them (`rope_freqs`, or 1).
    pub factors: Vec<f32>,
}

impl RopeFreqs {
    /// The angles of the `n_rot/2` pairs at position `pos`.
    pub fn angles(&self, pos: usize) -> impl Iterator<Item = f32> + '_ {
        let mut t = pos as f32;
        self.factors.iter().map(move |&ff| {
            let a = self.freq_scale * (t / ff);
            t *= self.theta_scale;
            a
        })
    }
}

/// RoPE of one layer.
#[derive(Debug, Clone, Copy)]
pub struct RopeParams<'a> {
    pub style: RopeStyle,
    pub head_dim: usize,
    /// Rotated dims per head (the first `n_rot`).
    pub n_rot: usize,
    /// The layer's frequencies (see [`RopeFreqs`]).
    pub freqs: &'a RopeFreqs,
    /// Multiplies cos and sin (1 unless `rope.scaling.attn_factor`).
    pub attn_factor: f32,
}

/// Attention of one layer.
#[derive(Debug, Clone, Copy)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Multiplies `q·k` before the softmax.
    pub scale: f32,
    /// Sliding window `W`: a query at `i` sees keys `i − W < j ≤ i`.
    pub window: Option<usize>,
    /// Sum `kqv` in the order of llamafile's sgemm, as llama.cpp's CPU graph does for a batch of
    /// two or more tokens, instead of `ggml_vec_dot_f32`'s (its one-token order). The CPU
    /// backend follows it to the bit; the GPU ignores it. See [`BatchOrder`].
    pub batched: bool,
}

/// How the sums of a multi-token batch are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchOrder {
    /// Every token's row is computed exactly as if it were decoded alone (llama.cpp's one-token
    /// order), so results never depend on how tokens were batched or cached.
    #[default]
    Invariant,
    /// Attention's `kqv` of a batch of two or more tokens in llama.cpp's batch (sgemm) order:
    /// a prompt prefilled in one batch and then decoded is llama.cpp's run to the bit, but a
    /// position's logits depend, in the last bits, on the batch it ran in.
    LlamaCpp,
}

/// The ops of a decoder step.
pub trait Backend {
    /// An activation matrix `[rows × cols]`, resident where the backend computes.
    type Tensor;
    /// Per-sequence KV storage.
    type Cache;

    /// `(rows, cols)` of a tensor.
    fn shape(&self, x: &Self::Tensor) -> (usize, usize);
    /// Rows `ids` of an embedding table `{cols, rows}` of any supported type. Ids are
    /// range-checked by the caller.
    fn embed(&self, w: &Weight, ids: &[u32]) -> Result<Self::Tensor>;
    /// `y_i[t] = W_i · x[t]` for several weights sharing one input (q/k/v, gate/up), so the
    /// input is prepared once.
    fn matmul(&self, ws: &[&Weight], x: &Self::Tensor) -> Result<Vec<Self::Tensor>>;
    /// `x[t] += b`.
    fn add_bias(&self, x: &mut Self::Tensor, b: &Vector);
    /// `x *= s`.
    fn scale(&self, x: &mut Self::Tensor, s: f32);
    /// `x += y` (residual).
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor);
    /// RMSNorm of each `group`-long slice of each row (`group = cols` for a plain norm,
    /// `head_dim` for a per-head norm), times `w` (`w.data.len() == group`) when given.
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        w: Option<&Vector>,
        group: usize,
        eps: f32,
    ) -> Self::Tensor;
    /// Rotates every head of every row in place; row `t` is at position `pos0 + t`.
    fn rope(&self, x: &mut Self::Tensor, pos0: usize, p: &RopeParams);
    /// Writes K and V rows of `layer` at positions `[pos0, pos0 + rows)`.
    fn store_kv(
        &self,
        cache: &mut Self::Cache,
        layer: usize,
        pos0: usize,
        k: &Self::Tensor,
        v: &Self::Tensor,
    );
    /// Causal attention of the query rows (row `t` at position `pos0 + t`) over cached rows
    /// `[0, pos0 + t]`, GQA by index (`kv head = h / (H/Hkv)`). Output `[rows × H·hd_v]`.
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        layer: usize,
        pos0: usize,
        p: &AttnParams,
    ) -> Self::Tensor;
    /// `act(gate) ⊙ up`.
    fn glu(&self, gate: &Self::Tensor, up: &Self::Tensor, act: Activation) -> Self::Tensor;
    /// Splits the columns into consecutive blocks of the given widths (a fused `[Q | K | V]`).
    fn split_cols(&self, x: &Self::Tensor, widths: &[usize]) -> Vec<Self::Tensor>;
    /// The listed rows, in order.
    fn select_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Self::Tensor;
    /// `x ← c·tanh(x/c)`.
    fn softcap(&self, x: &mut Self::Tensor, cap: f32);
    /// Copies a tensor to the host, row-major. A backend that records work (the GPU) runs it
    /// here, and reports here any error of the ops recorded before.
    fn read(&self, x: &Self::Tensor) -> Result<Vec<f32>>;
    /// The index of each row's largest value ([`cpu::ops::argmax`]), copied to the host in
    /// place of the rows (greedy decoding on the GPU reads back only the token ids).
    fn read_argmax(&self, x: &Self::Tensor) -> Result<Vec<u32>> {
        let cols = self.shape(x).1.max(1);
        Ok(self.read(x)?.chunks(cols).map(cpu::ops::argmax).collect())
    }

    // Fused forms of op sequences of the decoder. Each default is the sequence itself, so a
    // backend overrides only what it fuses; `norm` is an RMSNorm over whole rows, times its
    // weight, applied to `x` first.

    /// `matmul(ws, rms_norm(x))`.
    fn norm_matmul(
        &self,
        ws: &[&Weight],
        x: &Self::Tensor,
        norm: (&Vector, f32),
    ) -> Result<Vec<Self::Tensor>> {
        let n = self.rms_norm(x, Some(norm.0), self.shape(x).1, norm.1);
        self.matmul(ws, &n)
    }

    /// `acc += W·a` (`a` normalized first when `norm` is given).
    fn matmul_add(
        &self,
        w: &Weight,
        a: &Self::Tensor,
        norm: Option<(&Vector, f32)>,
        acc: &mut Self::Tensor,
    ) -> Result<()> {
        let y = match norm {
            Some(n) => self.norm_matmul(&[w], a, n)?,
            None => self.matmul(&[w], a)?,
        };
        self.add(acc, &y[0]);
        Ok(())
    }

    /// RoPE of `q` in place and of `k`, then `k` and `v` stored as [`Backend::store_kv`] does.
    #[allow(clippy::too_many_arguments)]
    fn rope_store_kv(
        &self,
        cache: &mut Self::Cache,
        layer: usize,
        pos0: usize,
        q: &mut Self::Tensor,
        mut k: Self::Tensor,
        v: &Self::Tensor,
        p: &RopeParams,
    ) {
        self.rope(q, pos0, p);
        self.rope(&mut k, pos0, p);
        self.store_kv(cache, layer, pos0, &k, v);
    }

    /// [`Backend::rope_store_kv`], `q` times `q_scale` when given (gemma3's query scale), then
    /// [`Backend::attention`] of `q` over the cache: RoPE, the KV write and attention as one op
    /// (the GPU runs them in its decode attention dispatch). Output `[rows × H·hd_v]`.
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_attention(
        &self,
        cache: &mut Self::Cache,
        layer: usize,
        pos0: usize,
        (mut q, k, v): (Self::Tensor, Self::Tensor, &Self::Tensor),
        rope: &RopeParams,
        q_scale: Option<f32>,
        p: &AttnParams,
    ) -> Self::Tensor {
        self.rope_store_kv(cache, layer, pos0, &mut q, k, v, rope);
        if let Some(s) = q_scale {
            self.scale(&mut q, s);
        }
        self.attention(&q, cache, layer, pos0, p)
    }

    /// `act(gate·n) ⊙ up·n` with `n = rms_norm(x)`.
    fn norm_glu(
        &self,
        gate: &Weight,
        up: &Weight,
        x: &Self::Tensor,
        norm: (&Vector, f32),
        act: Activation,
    ) -> Result<Self::Tensor> {
        let mut gu = self.norm_matmul(&[gate, up], x, norm)?;
        let u = gu.pop().expect("two outputs");
        let g = gu.pop().expect("two outputs");
        Ok(self.glu(&g, &u, act))
    }
}

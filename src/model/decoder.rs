//! The one generic decoder (spec/architectures.md §1–§6): every supported architecture is this
//! function with the flags of its [`super::arch::ArchSpec`]. It only talks to a [`Backend`].
//!
//! Per layer (flags in brackets):
//! ```text
//! n   = RMSNorm(x)·attn_norm                                        attn_norm-L
//! q,k,v = W·n (+bias) (×scale)                                      [biases, BitNet scales]
//! q,k = RMSNorm_per_head(q,k)·{q,k}_norm                            [qk_norm]  Qcur_normed-L
//! q,k = RoPE(q,k) at pos0..                                         Qcur-L Kcur-L Vcur-L
//! q  *= attn_scale; softmax scale 1                                 [gemma3]
//! a   = softmax(q·kᵀ·s + causal/window mask)·v                      kqv_out-L
//! a   = RMSNorm(a)·attn_sub_norm                                    [sub_norms] attn_sub_norm-L
//! o   = wo·a (+bias) (×scale)                                       attn_out-L
//! o   = RMSNorm(o)·post_attention_norm                              [post_norms] attn_post_norm-L
//! h   = x + o                                                       ffn_inp-L
//! m   = RMSNorm(h)·ffn_norm                                         ffn_norm-L
//! f   = act(gate·m) ⊙ up·m                                          ffn_act-L
//! f   = RMSNorm(f)·ffn_sub_norm                                     [sub_norms] ffn_sub_norm-L
//! y   = down·f (+bias) (×scale)                                     ffn_out-L
//! y   = RMSNorm(y)·post_ffw_norm                                    [post_norms] ffn_post_norm-L
//! x'  = h + y                                                       l_out-L
//! ```
//! then `result_norm`, the LM head (`result_output`) and the optional final soft-cap, for the
//! selected rows only. As in llama.cpp (`inp_out_ids`), the last layer's FFN runs only on the
//! rows whose logits are wanted.

use super::arch::{AttnScaleRule, OutputRule};
use super::spec::ModelSpec;
use super::tap::TapEvent;
use super::weights::{Qkv, Weight, Weights};
use crate::backend::{AttnParams, Backend, BatchOrder, RopeParams};
use crate::error::Result;

/// The debug hook: called with each named intermediate.
pub type Tap<'a> = Option<&'a mut dyn FnMut(&TapEvent)>;

/// One chunk of work: `tokens` at positions `pos0..`, and the rows (indices into `tokens`)
/// whose logits are wanted.
pub(crate) struct Chunk<'a> {
    pub tokens: &'a [u32],
    pub pos0: usize,
    pub out_rows: &'a [usize],
    pub order: BatchOrder,
}

/// Runs one chunk, writing its K/V into `cache`, and returns the logits of `out_rows`
/// (`[out_rows.len()][n_vocab]`) as a backend tensor, or `None` when `out_rows` is empty. The
/// caller reads them (or their argmax) back: on the GPU that read is the chunk's one readback,
/// awaited, so recording stays synchronous. The caller has range-checked ids and capacity.
pub(crate) fn forward<B: Backend>(
    b: &B,
    spec: &ModelSpec,
    w: &Weights,
    cache: &mut B::Cache,
    chunk: &Chunk,
    tap: &mut Tap,
) -> Result<Option<B::Tensor>> {
    let Chunk {
        tokens,
        pos0,
        out_rows,
        order,
    } = *chunk;
    let n = tokens.len();
    let d = spec.n_embd;
    let eps = spec.eps;
    // Fused ops skip intermediates a tap would want to see.
    let fuse = tap.is_none();
    let mut emit = |name: &str, layer: Option<usize>, t: &B::Tensor| {
        if let Some(f) = tap.as_deref_mut() {
            let (rows, cols) = b.shape(t);
            // A failed read skips the tap; the error surfaces at the final read of the logits.
            let Ok(data) = b.read(t) else { return };
            let name = match layer {
                Some(l) => format!("{name}-{l}"),
                None => name.to_string(),
            };
            f(&TapEvent {
                name: &name,
                rows,
                cols,
                data: &data,
            });
        }
    };

    let mut x = b.embed(&w.token_embd, tokens)?;
    emit("inp_embd", None, &x);
    if let Some(s) = spec.embed_scale {
        b.scale(&mut x, s);
        emit("inp_scaled", None, &x);
    }
    let (q_scale, kq_scale) = match spec.arch.attn_scale {
        AttnScaleRule::InvSqrtHd => (None, spec.attn_scale),
        AttnScaleRule::ScaleQueryGemma3 => (Some(spec.attn_scale), 1.0),
    };
    let all_rows = out_rows.len() == n && out_rows.iter().enumerate().all(|(i, &r)| i == r);

    for (il, (lw, ls)) in w.layers.iter().zip(&spec.layers).enumerate() {
        let l = Some(il);
        let last = il + 1 == spec.n_layer;
        // The attention input: normalized here, or inside the q/k/v products when fused.
        let normed = (!fuse).then(|| b.rms_norm(&x, Some(&lw.attn_norm), d, eps));
        if let Some(cur) = &normed {
            emit("attn_norm", l, cur);
        }
        let attn_in = |ws: &[&Weight]| match &normed {
            Some(cur) => b.matmul(ws, cur),
            None => b.norm_matmul(ws, &x, (&lw.attn_norm, eps)),
        };
        let sc = lw.scales;
        let (mut q, mut k, mut v) = match &lw.qkv {
            Qkv::Separate { q, k, v } => {
                let mut o = attn_in(&[q, k, v])?.into_iter();
                match (o.next(), o.next(), o.next()) {
                    (Some(q), Some(k), Some(v)) => (q, k, v),
                    _ => unreachable!("matmul returns one output per weight"),
                }
            }
            Qkv::Fused(wqkv) => {
                let qkv = attn_in(&[wqkv])?.remove(0);
                let mut o = b
                    .split_cols(&qkv, &[spec.q_len(), spec.k_len(), spec.v_len()])
                    .into_iter();
                match (o.next(), o.next(), o.next()) {
                    (Some(q), Some(k), Some(v)) => (q, k, v),
                    _ => unreachable!("split_cols returns one output per width"),
                }
            }
        };
        for (t, bias, s) in [
            (&mut q, &lw.q_bias, sc.q),
            (&mut k, &lw.k_bias, sc.k),
            (&mut v, &lw.v_bias, sc.v),
        ] {
            if let Some(bias) = bias {
                b.add_bias(t, bias);
            }
            if s != 1.0 {
                b.scale(t, s);
            }
        }
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            q = b.rms_norm(&q, Some(qn), spec.head_dim, eps);
            emit("Qcur_normed", l, &q);
            k = b.rms_norm(&k, Some(kn), spec.head_dim, eps);
            emit("Kcur_normed", l, &k);
        }
        let rope = RopeParams {
            style: spec.rope.style,
            head_dim: spec.head_dim,
            n_rot: spec.rope.n_rot,
            freqs: &ls.rope,
            attn_factor: spec.rope.attn_factor,
        };
        let params = AttnParams {
            n_head: spec.n_head,
            n_head_kv: spec.n_head_kv,
            head_dim: spec.head_dim,
            head_dim_v: spec.head_dim_v,
            scale: kq_scale,
            window: ls.sliding_window,
            batched: order == BatchOrder::LlamaCpp && n > 1,
        };
        // Nothing reads the last layer's output when no logits are wanted: its K/V are all
        // that is needed.
        let kv_only = last && out_rows.is_empty();
        let mut a = if fuse && !kv_only {
            b.rope_kv_attention(cache, il, pos0, (q, k, &v), &rope, q_scale, &params)
        } else {
            if fuse {
                b.rope_store_kv(cache, il, pos0, &mut q, k, &v, &rope);
            } else {
                b.rope(&mut q, pos0, &rope);
                b.rope(&mut k, pos0, &rope);
                emit("Qcur", l, &q);
                emit("Kcur", l, &k);
                emit("Vcur", l, &v);
                b.store_kv(cache, il, pos0, &k, &v);
            }
            if kv_only {
                return Ok(None);
            }
            if let Some(s) = q_scale {
                b.scale(&mut q, s);
            }
            b.attention(&q, cache, il, pos0, &params)
        };
        emit("kqv_out", l, &a);
        let plain_o = lw.wo_bias.is_none()
            && sc.o == 1.0
            && lw.attn_post_norm.is_none()
            && (all_rows || !last);
        if fuse && plain_o {
            // x += wo·sub_norm(a)
            let sub = lw.attn_sub_norm.as_ref().map(|n| (n, eps));
            b.matmul_add(&lw.wo, &a, sub, &mut x)?;
        } else {
            if let Some(sn) = &lw.attn_sub_norm {
                a = b.rms_norm(&a, Some(sn), spec.n_head * spec.head_dim_v, eps);
                emit("attn_sub_norm", l, &a);
            }
            let mut o = b.matmul(&[&lw.wo], &a)?.remove(0);
            if let Some(bias) = &lw.wo_bias {
                b.add_bias(&mut o, bias);
            }
            if sc.o != 1.0 {
                b.scale(&mut o, sc.o);
            }
            emit("attn_out", l, &o);
            if let Some(pn) = &lw.attn_post_norm {
                o = b.rms_norm(&o, Some(pn), d, eps);
                emit("attn_post_norm", l, &o);
            }
            if last && !all_rows {
                o = b.select_rows(&o, out_rows);
                x = b.select_rows(&x, out_rows);
            }
            b.add(&mut x, &o);
        }
        emit("ffn_inp", l, &x);

        let plain_gu = lw.ffn_gate_bias.is_none()
            && lw.ffn_up_bias.is_none()
            && sc.gate == 1.0
            && sc.up == 1.0;
        let mut f = if fuse && plain_gu {
            let ffn_norm = (&lw.ffn_norm, eps);
            b.norm_glu(&lw.ffn_gate, &lw.ffn_up, &x, ffn_norm, spec.activation)?
        } else {
            let m = b.rms_norm(&x, Some(&lw.ffn_norm), d, eps);
            emit("ffn_norm", l, &m);
            let mut gu = b.matmul(&[&lw.ffn_gate, &lw.ffn_up], &m)?;
            let mut up = gu.pop().expect("two outputs");
            let mut gate = gu.pop().expect("two outputs");
            // llama.cpp build_ffn: bias, then the `.scale` multiplier, on each projection.
            for (t, bias, s) in [
                (&mut up, &lw.ffn_up_bias, sc.up),
                (&mut gate, &lw.ffn_gate_bias, sc.gate),
            ] {
                if let Some(bias) = bias {
                    b.add_bias(t, bias);
                }
                if s != 1.0 {
                    b.scale(t, s);
                }
            }
            b.glu(&gate, &up, spec.activation)
        };
        emit("ffn_act", l, &f);
        let plain_down = lw.ffn_down_bias.is_none() && sc.down == 1.0 && lw.ffn_post_norm.is_none();
        if fuse && plain_down {
            // x += down·sub_norm(f)
            let sub = lw.ffn_sub_norm.as_ref().map(|n| (n, eps));
            b.matmul_add(&lw.ffn_down, &f, sub, &mut x)?;
        } else {
            if let Some(sn) = &lw.ffn_sub_norm {
                f = b.rms_norm(&f, Some(sn), spec.n_ff, eps);
                emit("ffn_sub_norm", l, &f);
            }
            let mut y = b.matmul(&[&lw.ffn_down], &f)?.remove(0);
            if let Some(bias) = &lw.ffn_down_bias {
                b.add_bias(&mut y, bias);
            }
            if sc.down != 1.0 {
                b.scale(&mut y, sc.down);
            }
            emit("ffn_out", l, &y);
            if let Some(pn) = &lw.ffn_post_norm {
                y = b.rms_norm(&y, Some(pn), d, eps);
                emit("ffn_post_norm", l, &y);
            }
            b.add(&mut x, &y);
        }
        emit("l_out", l, &x);
    }
    if out_rows.is_empty() {
        return Ok(None);
    }
    // Tied heads bind token_embd again (spec OutputRule); `lm_head` never copies.
    debug_assert!(spec.arch.output != OutputRule::AlwaysTied || w.output.is_none());
    let mut logits = if fuse {
        b.norm_matmul(&[w.lm_head()], &x, (&w.output_norm, eps))?
    } else {
        let y = b.rms_norm(&x, Some(&w.output_norm), d, eps);
        emit("result_norm", None, &y);
        b.matmul(&[w.lm_head()], &y)?
    }
    .remove(0);
    if let Some(bias) = &w.output_bias {
        b.add_bias(&mut logits, bias);
    }
    if let Some(c) = spec.final_softcap {
        b.softcap(&mut logits, c);
    }
    emit("result_output", None, &logits);
    Ok(Some(logits))
}

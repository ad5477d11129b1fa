//! RoPE and attention on the GPU (`shaders/rope.wgsl`, `shaders/attention.wgsl`), paired with
//! `backend::cpu::ops::{rope, attend}` and tested by `tests/gpu_ops_attn.rs`.
//!
//! - RoPE: the cos/sin of every (position, pair) come from a table computed once per layer on
//!   the CPU with [`cpu::ops::rope_cos_sin`], so the GPU rotates by bit-identical angles (GPU
//!   `sin`/`cos` lose accuracy at large arguments) and the rotation matches the CPU's FMA form.
//! - Attention: K/V cache in f16 pairs or f32 (`shaders/kv.wgsl`, [`GpuContext::kv_f16`]), one
//!   workgroup per (token, query head) with an online softmax over key blocks (any context
//!   length), GQA by index, optional sliding window, split-K for decode.
//! - Prefill (`PREFILL_MIN_TOKENS` tokens or more) goes to the flash-style kernel of
//!   [`super::attn_prefill`], which shares K/V tile reads between query rows.
//!
//! Out of scope for now: subgroup reductions.

use super::context::{GpuContext, Kernel, Recorder};
use super::ops::params;
use crate::backend::cpu;
use crate::backend::{AttnParams, RopeFreqs};
use crate::error::{GpuError, Result};
use crate::model::arch::RopeStyle;

/// Threads per rope workgroup (rope.wgsl `WG`).
const ROPE_WG: u32 = 256;
/// The largest `head_dim` / `head_dim_v` attention.wgsl holds (its `MAX_D`).
pub const ATTN_MAX_HEAD_DIM: usize = 256;

/// The cos/sin table of one layer's RoPE for positions `[0, n_pos)`: `[n_pos][n_rot/2]` pairs
/// `(cos, sin)·attn_factor` as f32, computed on the CPU with [`cpu::ops::rope_cos_sin`] so the
/// GPU rotation uses bit-identical angles (GPU sin/cos are inaccurate for large arguments).
pub fn rope_table(
    ctx: &GpuContext,
    freqs: &RopeFreqs,
    attn_factor: f32,
    n_pos: usize,
) -> wgpu::Buffer {
    let mut table = Vec::with_capacity(n_pos * freqs.factors.len() * 2);
    let mut cs = Vec::with_capacity(freqs.factors.len());
    for pos in 0..n_pos {
        cpu::ops::rope_cos_sin(pos, freqs, attn_factor, &mut cs);
        table.extend(cs.iter().flat_map(|&(c, s)| [c, s]));
    }
    ctx.storage_init("rope_table", bytemuck::cast_slice(&table))
}

/// A [`rope_table`] of `n_rot` rotated dims must cover positions `< n_pos`.
fn check_table(table: &wgpu::Buffer, n_pos: usize, n_rot: usize) -> Result<()> {
    let need = (n_pos * n_rot * 4) as u64;
    if table.size() < need {
        return Err(GpuError::Validation(format!(
            "rope table of {} bytes does not cover positions < {n_pos} ({need} bytes)",
            table.size()
        ))
        .into());
    }
    Ok(())
}

/// Rotates in place rows `x[tokens][n_heads·head_dim]`; row `t` is at position `pos0 + t`; the
/// first `n_rot` dims of each head, adjacent pairs (`Norm`) or halves (`Neox`). `table` is a
/// [`rope_table`] covering positions up to `pos0 + tokens`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    ctx: &GpuContext,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    table: &wgpu::Buffer,
    tokens: usize,
    pos0: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    style: RopeStyle,
) -> Result<()> {
    debug_assert!(n_rot.is_multiple_of(2) && n_rot <= head_dim);
    let half = n_rot / 2;
    if tokens == 0 || half == 0 || n_heads == 0 {
        return Ok(());
    }
    check_table(table, pos0 + tokens, n_rot)?;
    let n = tokens * n_heads * half;
    let grid = ctx.grid((n as u32).div_ceil(ROPE_WG));
    let p = params(&[
        n as u32,
        n_heads as u32,
        head_dim as u32,
        half as u32,
        pos0 as u32,
        matches!(style, RopeStyle::Neox) as u32,
        grid[0],
    ]);
    let bufs = [x.as_entire_binding(), table.as_entire_binding()];
    let k = Kernel::new("rope", "rope").def("ROPE", 1);
    ctx.dispatch(enc, &k, &p, &bufs, grid)
}

/// Where [`rope_kv`] and [`store_kv`] write K and V rows: the layer's cache buffers (rows at
/// `pos0..`), stored as `shaders/kv.wgsl` says for this device ([`GpuContext::kv_f16`]: f16
/// pairs, rows padded to an even count; else f32): `[capacity][kv_row_words(cols)]` words.
pub struct KvDest<'a> {
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
}

/// u32 words per cache row of `cols` elements on this device (kv.wgsl `kv_words`).
pub fn kv_row_words(ctx: &GpuContext, cols: usize) -> usize {
    if ctx.kv_f16 {
        cols.div_ceil(2)
    } else {
        cols
    }
}

/// A kernel reading or writing the KV cache, with the device's KV storage defined (`KV_F16`
/// for `shaders/kv.wgsl`). Every kernel that touches the cache is made through here.
pub fn kv_kernel(ctx: &GpuContext, shader: &'static str, entry: &'static str) -> Kernel {
    let k = Kernel::new(shader, entry);
    if ctx.kv_f16 {
        k.def("KV_F16", 1)
    } else {
        k
    }
}

/// [`rope`] of `q` in place and of `k` (`[tokens][n_head_kv·head_dim]`) into the cache, `v`
/// (`[tokens][v_cols]`) copied into it, in one dispatch (rope.wgsl `rope_kv`).
#[allow(clippy::too_many_arguments)]
pub fn rope_kv(
    ctx: &GpuContext,
    enc: &mut Recorder,
    (q, k, v): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    table: &wgpu::Buffer,
    dest: KvDest,
    tokens: usize,
    pos0: usize,
    (n_head, k_cols, v_cols): (usize, usize, usize),
    head_dim: usize,
    n_rot: usize,
    style: RopeStyle,
) -> Result<()> {
    debug_assert!(n_rot.is_multiple_of(2) && n_rot <= head_dim);
    let half = n_rot / 2;
    if half > 0 {
        check_table(table, pos0 + tokens, n_rot)?;
    }
    let nq = tokens * n_head * half;
    let n = nq + tokens * (kv_row_words(ctx, k_cols) + kv_row_words(ctx, v_cols));
    if n == 0 {
        return Ok(());
    }
    let grid = ctx.grid((n as u32).div_ceil(ROPE_WG));
    let p = params(&[
        nq as u32,
        n_head as u32,
        head_dim as u32,
        half.max(1) as u32,
        pos0 as u32,
        matches!(style, RopeStyle::Neox) as u32,
        grid[0],
        k_cols as u32,
        v_cols as u32,
        tokens as u32,
        n_rot as u32,
    ]);
    let bufs = [
        q.as_entire_binding(),
        k.as_entire_binding(),
        v.as_entire_binding(),
        table.as_entire_binding(),
        dest.k.as_entire_binding(),
        dest.v.as_entire_binding(),
    ];
    let kernel = kv_kernel(ctx, "rope", "rope_kv")
        .def("ROPE_KV", 1)
        .def("ROTATE", 1);
    ctx.dispatch(enc, &kernel, &p, &bufs, grid)
}

/// `k` (`[tokens][k_cols]`, already rotated) and `v` (`[tokens][v_cols]`) into the cache rows
/// at `pos0..` in the cache's storage (rope.wgsl `rope_kv` without the rotation).
#[allow(clippy::too_many_arguments)]
pub fn store_kv(
    ctx: &GpuContext,
    enc: &mut Recorder,
    (k, v): (&wgpu::Buffer, &wgpu::Buffer),
    dest: KvDest,
    tokens: usize,
    pos0: usize,
    (k_cols, v_cols): (usize, usize),
) -> Result<()> {
    let n = tokens * (kv_row_words(ctx, k_cols) + kv_row_words(ctx, v_cols));
    if n == 0 {
        return Ok(());
    }
    let grid = ctx.grid((n as u32).div_ceil(ROPE_WG));
    let p = params(&[
        0,
        1,
        1,
        1,
        pos0 as u32,
        0,
        grid[0],
        k_cols as u32,
        v_cols as u32,
        tokens as u32,
        0,
    ]);
    let bufs = [
        k.as_entire_binding(),
        v.as_entire_binding(),
        dest.k.as_entire_binding(),
        dest.v.as_entire_binding(),
    ];
    let kernel = kv_kernel(ctx, "rope", "rope_kv")
        .def("ROPE_KV", 1)
        .def("ROTATE", 0);
    ctx.dispatch(enc, &kernel, &p, &bufs, grid)
}

/// Keys per attention workgroup block (attention.wgsl `WG`).
const ATTN_WG: usize = 64;
/// Most splits per (token, head), and the scratch they may take, in f32s.
const ATTN_MAX_SPLITS: usize = 64;
const ATTN_SCRATCH_BUDGET: usize = 8 << 20;

/// How attention of `tokens` query rows at `pos0..` cuts each (token, head)'s visible keys into
/// `n_splits` runs of `split_len` keys (split-K: enough workgroups when few heads decode over a
/// long cache), and the scratch it needs for the partials, in f32s (0 with one split).
pub fn attention_splits(tokens: usize, pos0: usize, p: &AttnParams) -> (usize, usize, usize) {
    let n_max = match p.window {
        Some(w) => w.min(pos0 + tokens),
        None => pos0 + tokens,
    }
    .max(1);
    let rows = tokens * p.n_head;
    let per_split = rows * (2 + p.head_dim_v);
    let cap = (ATTN_SCRATCH_BUDGET / per_split.max(1)).clamp(1, ATTN_MAX_SPLITS);
    // Enough workgroups already: no split.
    let want = if rows >= 512 {
        1
    } else {
        n_max.div_ceil(ATTN_WG)
    };
    let split_len = n_max.div_ceil(want.min(cap)).next_multiple_of(ATTN_WG);
    let n_splits = n_max.div_ceil(split_len);
    let scratch = if n_splits > 1 {
        n_splits * per_split
    } else {
        0
    };
    (n_splits, split_len, scratch)
}

/// Causal attention of `q` rows (`[tokens][n_head·head_dim]`, row `t` at position `pos0 + t`)
/// over the KV cache buffers `k` (`[capacity][n_head_kv·head_dim]`) and `v`
/// (`[capacity][n_head_kv·head_dim_v]`) in the device's KV storage ([`KvDest`]), rows
/// `0..pos0 + tokens` valid; GQA kv head
/// `h / (n_head/n_head_kv)`, `p.scale` on `q·k`, sliding window `p.window` (query `i` sees keys
/// `i − W < j ≤ i`); output `o`: `[tokens][n_head·head_dim_v]`. `scratch` holds at least the
/// f32s [`attention_splits`] asks for (any buffer when it asks for none).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &GpuContext,
    enc: &mut Recorder,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    o: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    tokens: usize,
    pos0: usize,
    p: &AttnParams,
) -> Result<()> {
    if p.head_dim > ATTN_MAX_HEAD_DIM
        || p.head_dim_v > ATTN_MAX_HEAD_DIM
        || p.n_head_kv == 0
        || !p.n_head.is_multiple_of(p.n_head_kv)
    {
        return Err(GpuError::Validation(format!(
            "attention: unsupported heads {}/{} of dims {}/{} (head dims ≤ {ATTN_MAX_HEAD_DIM})",
            p.n_head, p.n_head_kv, p.head_dim, p.head_dim_v
        ))
        .into());
    }
    debug_assert!(p.window != Some(0), "a zero window sees no keys");
    if tokens == 0 || p.n_head == 0 {
        return Ok(());
    }
    if tokens >= super::attn_prefill::PREFILL_MIN_TOKENS {
        return super::attn_prefill::attention_prefill(ctx, enc, q, k, v, o, tokens, pos0, p);
    }
    let (n_splits, split_len, need) = attention_splits(tokens, pos0, p);
    if (scratch.size() as usize) < need * 4 {
        return Err(GpuError::Validation("attention: scratch too small".into()).into());
    }
    let rows = (tokens * p.n_head) as u32;
    let window = p.window.map_or(0, |w| w.min(u32::MAX as usize) as u32);
    let params_for = |grid: [u32; 3]| {
        params(&[
            tokens as u32,
            pos0 as u32,
            p.n_head as u32,
            (p.n_head / p.n_head_kv) as u32,
            p.head_dim as u32,
            p.head_dim_v as u32,
            (p.n_head_kv * p.head_dim) as u32,
            (p.n_head_kv * p.head_dim_v) as u32,
            p.scale.to_bits(),
            window,
            grid[0],
            n_splits as u32,
            split_len as u32,
        ])
    };
    let grid = ctx.grid(rows * n_splits as u32);
    let bufs = [
        q.as_entire_binding(),
        k.as_entire_binding(),
        v.as_entire_binding(),
        o.as_entire_binding(),
        scratch.as_entire_binding(),
    ];
    let kernel = kv_kernel(ctx, "attention", "attention").def("ATTENTION", 1);
    ctx.dispatch(enc, &kernel, &params_for(grid), &bufs, grid)?;
    if n_splits > 1 {
        let grid = ctx.grid(rows);
        let bufs = [scratch.as_entire_binding(), o.as_entire_binding()];
        let kernel = Kernel::new("attention", "attention_combine").def("COMBINE", 1);
        ctx.dispatch(enc, &kernel, &params_for(grid), &bufs, grid)?;
    }
    Ok(())
}

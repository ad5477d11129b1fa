//! RoPE and attention on the GPU (`shaders/rope.wgsl`, `shaders/attention.wgsl`), paired with
//! `backend::cpu::ops::{rope, attend}` and tested by `tests/gpu_ops_attn.rs`.
//!
//! - RoPE: the cos/sin of every (position, pair) come from a table computed once per layer on
//!   the CPU with [`cpu::ops::rope_cos_sin`], so the GPU rotates by bit-identical angles (GPU
//!   `sin`/`cos` lose accuracy at large arguments) and the rotation matches the CPU's FMA form.
//! - Attention: K/V cache in f16 pairs or f32 (`shaders/kv.wgsl`, [`GpuContext::kv_f16`]), one
//!   workgroup per (token, KV head, split) serving the query heads of its GQA group (chunks of
//!   at most 8), so each K/V row is read once per group; an online softmax over key chunks (any
//!   context length), optional sliding window, split-K for decode; subgroup shuffles where the
//!   adapter has them, a workgroup-memory path otherwise (the browser).
//! - Decode with RoPE and the KV write folded in ([`attention_rope_kv`], attention.wgsl
//!   `ROPE_KV`): the attention dispatch rotates the queries and the chunk's keys itself, reads
//!   the chunk's K/V rows from the projection's outputs and writes them into the cache (one
//!   workgroup per KV head), so decode needs no [`rope_kv`] dispatch.
//! - Prefill (`PREFILL_MIN_TOKENS` tokens or more) goes to the flash-style kernel of
//!   [`super::attn_prefill`], which shares K/V tile reads between query rows.

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

/// Threads of an attention workgroup (attention.wgsl `WG`).
const ATTN_WG: usize = 256;
/// Lanes per key in the scores (attention.wgsl `C`) and keys per scores pass (`BK`).
const ATTN_C: usize = 8;
const ATTN_BK: usize = ATTN_WG / ATTN_C;
/// Most query heads one workgroup serves: its accumulators (GQ vec4s) stay in registers; a
/// larger GQA group is cut into chunks of at most this many.
const ATTN_MAX_GQ: usize = 8;
/// Visible keys up to which a decode step serves one query head per workgroup.
const ATTN_SHORT_CACHE: usize = 2048;
/// K elements of a head per split when splitting (keys × head_dim), and at least one scores
/// pass of keys: 32 keys of 128 dims, 64 of 64. A decode step's few (KV head) workgroups fill
/// the GPU only when cut this fine, and every split costs its merge. H200, decoding 1,024
/// tokens, 32- against 64-key splits: BitNet-2B (128 dims) 521 against 512 tok/s (and 570
/// against 544 over 128 tokens), Llama-1B (64 dims) 582 against 622 (676 against 672-674 over 128).
const ATTN_SPLIT_ELEMS: usize = 4096;
/// Visible keys up to which there is one split all the same where a second split needs a merge
/// dispatch (the browser): that costs more than it saves (H100, `tests/gpu_bench_attn.rs`:
/// BitNet-2B's 20/5 × 128 heads at 48 keys 13.6 → 11.4 µs; Llama-1B decoding positions 0-64:
/// 557 → 565-569 tok/s). Under [`MERGE_LAST`] splitting from the second scores pass is faster
/// (H200, trusted shaders, BitNet-2B TQ2_0 decoding 128 tokens, alternating in one call:
/// 775.2-779.3 → 784.0-786.3 tok/s; a limit of 128 keys: 708).
const ATTN_ONE_SPLIT_MAX: usize = if MERGE_LAST { ATTN_BK } else { 64 };
/// Workgroups enough to fill a GPU without split-K (132 SMs on an H100 hold a 256-thread
/// workgroup each, twice over).
const ATTN_ENOUGH_WG: usize = 256;
/// Workgroup memory the kernel may use: WebGPU's default limit, so the browser runs it too.
const ATTN_WG_MEMORY: usize = 16384;
/// Most splits per (token, head), and the scratch they may take, in f32s.
const ATTN_MAX_SPLITS: usize = 64;
const ATTN_SCRATCH_BUDGET: usize = 8 << 20;
/// Split decode attention merged by the last of a head's splits to finish (attention.wgsl
/// `MERGE_LAST`), not by a second dispatch: natively, where naga makes `storageBarrier` a
/// device-scope acquire/release barrier around the arrival counter (WGSL itself promises no
/// order between workgroups, so the browser keeps the merge dispatch), and for one query head
/// a workgroup (H100, BitNet-2B: 15.4 → 12.6 µs at 128 keys, 78 → 68 at 2048; with four heads a
/// workgroup the merger's serial work made 4096 keys slower, 90 → 146 µs).
pub(super) const MERGE_LAST: bool = cfg!(not(target_arch = "wasm32"));

/// How decode attention (attention.wgsl) runs a batch: `gq` query heads per workgroup,
/// `n_chunks` workgroups per (token, KV head, split), the keys of each (token, head) cut into
/// `n_splits` runs of `split_len`, `scratch` f32s of partials (0 with one split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnPlan {
    pub gq: usize,
    pub n_chunks: usize,
    pub n_splits: usize,
    pub split_len: usize,
    pub scratch: usize,
}

/// The [`AttnPlan`] of `tokens` query rows at `pos0..` (split-K: enough workgroups when few
/// KV heads decode over a long cache).
pub fn attention_plan(tokens: usize, pos0: usize, p: &AttnParams) -> AttnPlan {
    let group = (p.n_head / p.n_head_kv.max(1)).max(1);
    let n_max = match p.window {
        Some(w) => w.min(pos0 + tokens),
        None => pos0 + tokens,
    }
    .max(1);
    // Few workgroups over a short cache (decoding): one query head per workgroup, for the
    // parallelism; the group's heads then read the same K/V rows, which stay in cache at these
    // lengths (H100 decode, 128-2048 positions: BitNet-2B +8%, Llama-1B +5%).
    let max_gq = if tokens * p.n_head_kv < ATTN_ENOUGH_WG && n_max <= ATTN_SHORT_CACHE {
        1
    } else {
        ATTN_MAX_GQ
    };
    let n_chunks = group.div_ceil(max_gq);
    let gq = group.div_ceil(n_chunks);
    let wgs = tokens * p.n_head_kv * n_chunks;
    let per_split = tokens * p.n_head * (2 + p.head_dim_v);
    let cap = (ATTN_SCRATCH_BUDGET / per_split.max(1)).clamp(1, ATTN_MAX_SPLITS);
    let want = if wgs >= ATTN_ENOUGH_WG || n_max <= ATTN_ONE_SPLIT_MAX {
        1
    } else {
        n_max.div_ceil((ATTN_SPLIT_ELEMS / p.head_dim.max(1)).max(ATTN_BK))
    };
    let split_len = n_max.div_ceil(want.min(cap)).next_multiple_of(ATTN_BK);
    let n_splits = n_max.div_ceil(split_len);
    let scratch = if n_splits > 1 {
        n_splits * per_split
    } else {
        0
    };
    AttnPlan {
        gq,
        n_chunks,
        n_splits,
        split_len,
        scratch,
    }
}

/// How attention of `tokens` query rows at `pos0..` cuts each (token, head)'s visible keys into
/// `n_splits` runs of `split_len` keys, and the scratch it needs for the partials, in f32s (0
/// with one split): [`attention_plan`]'s numbers.
pub fn attention_splits(tokens: usize, pos0: usize, p: &AttnParams) -> (usize, usize, usize) {
    let plan = attention_plan(tokens, pos0, p);
    (plan.n_splits, plan.split_len, plan.scratch)
}

/// The attention.wgsl kernel for `gq` heads per workgroup on this device: head dims, the
/// P·V key lanes `KL`, the keys per chunk `CHUNK` (what fits in [`ATTN_WG_MEMORY`]), 4-element
/// K/V loads when the head dims allow, subgroup shuffles where the adapter's smallest
/// subgroup holds the lanes they combine; `rope_kv`: `ROPE_KV`, with the token's own K/V rows in
/// workgroup memory (`OWN`) where they fit beside a chunk.
fn attention_kernel(ctx: &GpuContext, p: &AttnParams, gq: usize, rope_kv: bool) -> Kernel {
    let (kch, vch) = (p.head_dim.div_ceil(4), p.head_dim_v.div_ceil(4));
    // Largest power of two with KL·VCH ≤ WG, at most BK (the l sums reuse [GQ][BK] floats).
    let kl = (1usize << (ATTN_WG / vch).ilog2()).min(ATTN_BK);
    // f32s: qs GQ·4·KCH, sc GQ·CHUNK, red 4·WG, mx GQ·BK, mg GQ, merge_row's 2·8 and
    // `merging`, and under ROPE_KV with `OWN` the token's own K/V head rows, 4·(KCH + VCH),
    // where a chunk of BK keys still fits beside.
    let free = ATTN_WG_MEMORY / 4 - 4 * ATTN_WG - 2 * 8 - 1;
    let chunk_in = |free: usize| (free / gq - 4 * kch - ATTN_BK - 1) / ATTN_BK * ATTN_BK;
    let own = rope_kv && chunk_in(free - 4 * (kch + vch)) >= ATTN_BK;
    let chunk = chunk_in(if own { free - 4 * (kch + vch) } else { free });
    debug_assert!(
        chunk >= ATTN_BK,
        "head dims ≤ {ATTN_MAX_HEAD_DIM}, gq ≤ {ATTN_MAX_GQ}"
    );
    let mut k = kv_kernel(ctx, "attention", "attention")
        .def("ATTENTION", 1)
        .def("GQ", format!("{gq}u"))
        .def("HEAD_DIM", format!("{}u", p.head_dim))
        .def("HEAD_DIM_V", format!("{}u", p.head_dim_v))
        .def("KL", format!("{kl}u"))
        .def("CHUNK", format!("{}u", chunk.min(512)));
    if p.head_dim.is_multiple_of(4) && p.head_dim_v.is_multiple_of(4) {
        k = k.def("KV_VEC", 1);
        // More than four K quads a lane in the first scores pass: those past four in an array.
        if kch > 4 * ATTN_C {
            k = k.def("KW_WIDE", 1);
        }
    }
    if rope_kv {
        k = k.def("ROPE_KV", 1);
    }
    if own {
        k = k.def("OWN", 1);
    }
    if MERGE_LAST && gq == 1 {
        k = k.def("MERGE_LAST", 1);
    }
    let sg = if ctx.subgroups {
        ctx.subgroup_min as usize
    } else {
        0
    };
    if sg >= ATTN_C {
        k = k.def("SG_K", 1);
    }
    if sg >= kl {
        k = k.def("SG_V", 1);
    }
    k
}

/// The head shapes both attention kernels take: head dims ≤ ATTN_MAX_HEAD_DIM, query heads a
/// multiple of the KV heads.
pub(super) fn check_heads(p: &AttnParams) -> Result<()> {
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
    Ok(())
}

/// What the decode kernel does besides attention under `ROPE_KV` ([`attention_rope_kv`]): the
/// chunk's `k` (`[tokens][n_head_kv·head_dim]`, before RoPE) and `v` rows, the layer's
/// [`rope_table`], the rotation and the query scale.
struct FusedKv<'a> {
    k: &'a wgpu::Buffer,
    v: &'a wgpu::Buffer,
    table: &'a wgpu::Buffer,
    n_rot: usize,
    style: RopeStyle,
    q_scale: f32,
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
    check_heads(p)?;
    if tokens == 0 || p.n_head == 0 {
        return Ok(());
    }
    if tokens >= super::attn_prefill::PREFILL_MIN_TOKENS {
        return super::attn_prefill::attention_prefill(ctx, enc, q, k, v, o, tokens, pos0, p);
    }
    attention_decode(
        ctx,
        enc,
        q,
        KvDest { k, v },
        o,
        scratch,
        tokens,
        pos0,
        p,
        None,
    )
}

/// [`rope_kv`] then [`attention`], for a few query rows (fewer than
/// `attn_prefill::PREFILL_MIN_TOKENS`; the decoder uses it for one), in the one decode
/// attention dispatch (attention.wgsl `ROPE_KV`), plus its merge when split: `q`
/// (`[tokens][n_head·head_dim]`) and `k` (`[tokens][n_head_kv·head_dim]`) rotated by `table`
/// ([`rope_table`], `n_rot` dims of each head, `style`), the queries then times `q_scale`; `k`
/// and `v` (`[tokens][n_head_kv·head_dim_v]`) written into the cache rows `pos0..` of `dest`
/// (rows `< pos0` valid before), and the attention of the rotated queries over rows `0..=pos`
/// into `o`. `q`, `k` and `v` are left as they are; `scratch` as for [`attention`].
#[allow(clippy::too_many_arguments)]
pub fn attention_rope_kv(
    ctx: &GpuContext,
    enc: &mut Recorder,
    (q, k, v): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    table: &wgpu::Buffer,
    (n_rot, style, q_scale): (usize, RopeStyle, f32),
    dest: KvDest,
    o: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    tokens: usize,
    pos0: usize,
    p: &AttnParams,
) -> Result<()> {
    check_heads(p)?;
    if tokens >= super::attn_prefill::PREFILL_MIN_TOKENS || n_rot > p.head_dim || n_rot % 2 != 0 {
        return Err(GpuError::Validation(format!(
            "attention_rope_kv: {tokens} tokens, {n_rot} of {} dims rotated (fewer than {} \
             tokens, an even n_rot ≤ head_dim)",
            p.head_dim,
            super::attn_prefill::PREFILL_MIN_TOKENS
        ))
        .into());
    }
    if tokens == 0 || p.n_head == 0 {
        return Ok(());
    }
    if n_rot > 0 {
        check_table(table, pos0 + tokens, n_rot)?;
    }
    let fused = FusedKv {
        k,
        v,
        table,
        n_rot,
        style,
        q_scale,
    };
    attention_decode(ctx, enc, q, dest, o, scratch, tokens, pos0, p, Some(fused))
}

/// attention.wgsl: the attention dispatch (with `ROPE_KV` when `fused`) and the merge of its
/// splits.
#[allow(clippy::too_many_arguments)]
fn attention_decode(
    ctx: &GpuContext,
    enc: &mut Recorder,
    q: &wgpu::Buffer,
    kv: KvDest,
    o: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    tokens: usize,
    pos0: usize,
    p: &AttnParams,
    fused: Option<FusedKv>,
) -> Result<()> {
    let plan = attention_plan(tokens, pos0, p);
    let n_splits = plan.n_splits;
    if (scratch.size() as usize) < plan.scratch * 4 {
        return Err(GpuError::Validation("attention: scratch too small".into()).into());
    }
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
            plan.split_len as u32,
            plan.n_chunks as u32,
            fused.as_ref().map_or(0, |f| f.n_rot as u32),
            fused
                .as_ref()
                .is_some_and(|f| matches!(f.style, RopeStyle::Neox)) as u32,
            fused.as_ref().map_or(1.0, |f| f.q_scale).to_bits(),
        ])
    };
    let wgs = tokens * p.n_head_kv * plan.n_chunks * n_splits;
    let grid = ctx.grid(wgs as u32);
    let mut bufs = vec![
        q.as_entire_binding(),
        kv.k.as_entire_binding(),
        kv.v.as_entire_binding(),
        o.as_entire_binding(),
        scratch.as_entire_binding(),
    ];
    let key = [p.head_dim, p.head_dim_v, plan.gq, fused.is_some() as usize].map(|v| v as u32);
    let kernel = ctx.kernel("attention", key, || {
        attention_kernel(ctx, p, plan.gq, fused.is_some())
    });
    let merge_last = kernel.defines.get("MERGE_LAST").is_some();
    if let Some(f) = &fused {
        // With nothing rotated the table is never read: any buffer binds.
        let table = if f.n_rot > 0 { f.table } else { f.k };
        bufs.extend([
            f.k.as_entire_binding(),
            f.v.as_entire_binding(),
            table.as_entire_binding(),
        ]);
    }
    let arrivals = merge_last.then(|| ctx.arrivals(wgs / n_splits));
    bufs.extend(arrivals.iter().map(|a| a.as_entire_binding()));
    ctx.dispatch(enc, &kernel, &params_for(grid), &bufs, grid)?;
    if n_splits > 1 && !merge_last {
        let grid = ctx.grid((tokens * p.n_head) as u32);
        let bufs = [scratch.as_entire_binding(), o.as_entire_binding()];
        let kernel = Kernel::new("attention", "attention_combine").def("COMBINE", 1);
        ctx.dispatch(enc, &kernel, &params_for(grid), &bufs, grid)?;
    }
    Ok(())
}

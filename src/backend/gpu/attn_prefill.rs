//! Flash-style prefill attention (`shaders/attention_prefill.wgsl`): causal, GQA, sliding
//! window, over the KV cache in the device's storage (`shaders/kv.wgsl`: f16 pairs or f32).
//! A workgroup takes 32 query rows of one KV head's group (the group's heads share each K/V
//! tile) and walks their visible keys in blocks of 32 with an online softmax, so K and V are
//! read once per 32 query rows instead of once per row. `attn::attention` sends
//! [`PREFILL_MIN_TOKENS`] tokens or more here; the CPU reference is
//! `backend::cpu::ops::attend`, tested by `tests/gpu_ops_attn_prefill.rs`.
//!
//! Out of scope: an attention logit softcap (no architecture of ours has one in attention).

use super::context::{GpuContext, Kernel, Recorder};
use super::ops::params;
use crate::backend::AttnParams;
use crate::error::Result;

/// From this many tokens on, `attn::attention` runs this kernel; below it a tile of 32 rows
/// is mostly empty and the split-K kernel fills the GPU better.
pub const PREFILL_MIN_TOKENS: usize = 16;

/// Query rows per workgroup (attention_prefill.wgsl `BR`).
const BR: usize = 32;

/// `attn::attention` through attention_prefill.wgsl, for any token count (same arguments
/// and results; no scratch).
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    ctx: &GpuContext,
    enc: &mut Recorder,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    o: &wgpu::Buffer,
    tokens: usize,
    pos0: usize,
    p: &AttnParams,
) -> Result<()> {
    super::attn::check_heads(p)?;
    if tokens == 0 || p.n_head == 0 {
        return Ok(());
    }
    let group = p.n_head / p.n_head_kv;
    let tiles = (tokens * group).div_ceil(BR);
    let grid = ctx.grid((tiles * p.n_head_kv) as u32);
    let window = p.window.map_or(0, |w| w.min(u32::MAX as usize) as u32);
    let params = params(&[
        tokens as u32,
        pos0 as u32,
        p.n_head as u32,
        group as u32,
        p.head_dim as u32,
        p.head_dim_v as u32,
        (p.n_head_kv * p.head_dim) as u32,
        (p.n_head_kv * p.head_dim_v) as u32,
        p.scale.to_bits(),
        window,
        grid[0],
        tiles as u32,
    ]);
    let bufs = [
        q.as_entire_binding(),
        k.as_entire_binding(),
        v.as_entire_binding(),
        o.as_entire_binding(),
    ];
    // head_dim_v sizes the per-thread accumulators (registers, not local memory).
    let mut kernel = Kernel::new("attention_prefill", "attention_prefill")
        .def("HEAD_DIM_V", format!("{}u", p.head_dim_v));
    if ctx.kv_f16 {
        kernel = kernel.def("KV_F16", 1);
    }
    ctx.dispatch(enc, &kernel, &params, &bufs, grid)
}

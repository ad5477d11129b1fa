//! The prefill GEMM (`shaders/gemm.wgsl`): `W·x` for many tokens with a register-tiled kernel
//! (128 weight rows × 64 tokens per workgroup, the W tile dequantized into workgroup memory once
//! per 16-column step), every weight type and every fusion of [`ops::matmul`] (NORM, GLU,
//! RESIDUAL, row ranges, split weights). [`ops::matmul`] sends multi-token work here from
//! [`GEMM_MIN_TOKENS`] tokens on, and [`ops::matmul_split`] its q/k/v split ([`gemm_split`]);
//! the CPU reference is `backend::cpu`'s matmul, tested by `tests/gpu_ops_gemm.rs`.

use super::context::{GpuContext, Kernel, Recorder};
use super::layout::GpuWeight;
use super::ops::{self, Fuse};
use crate::error::{GpuError, Result};

/// From this many tokens on, [`ops::matmul`] runs the GEMM: below it most of a 64-token tile
/// would be padding, and matmul.wgsl's one-row workgroups fill the GPU better.
pub const GEMM_MIN_TOKENS: usize = 16;

/// Weight rows and tokens of one gemm.wgsl workgroup (`BM`, `BN`).
const GEMM_BM: usize = 128;
const GEMM_BN: usize = 64;

/// [`ops::matmul`] through gemm.wgsl, for any token count (same arguments and results).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ctx: &GpuContext,
    enc: &mut Recorder,
    w: &GpuWeight,
    x: &wgpu::Buffer,
    tokens: usize,
    y: &wgpu::Buffer,
    y_cols: usize,
    col0: usize,
    fuse: Fuse,
) -> Result<()> {
    let mut k = Kernel::new("gemm", "gemm").def(&w.define(), 1);
    let mut eps = 0u32;
    let mut act = 0u32;
    if let Some((_, e)) = fuse.norm {
        k = k.def("NORM", 1);
        eps = e.to_bits();
    }
    let glu = fuse.glu.is_some();
    if let Some(a) = fuse.glu {
        k = k.def("GLU", 1);
        act = ops::act_kind(a);
    }
    if glu || fuse.rows.is_some() {
        let (first, count) = fuse
            .rows
            .unwrap_or((0, if glu { w.rows / 2 } else { w.rows }));
        let need = if glu { 2 * count } else { count };
        if w.parts.len() != 1 || first + need > w.rows || glu && !w.rows.is_multiple_of(2) {
            return Err(GpuError::Validation(format!("bad row range of '{}'", w.name)).into());
        }
    }
    if fuse.residual {
        k = k.def("RESIDUAL", 1);
    }
    if tokens == 0 {
        return Ok(());
    }
    // Output rows per workgroup: under GLU half the tile is up rows.
    let tile_rows = if glu { GEMM_BM / 2 } else { GEMM_BM };
    for part in &w.parts {
        let (w_row0, rows) = match (fuse.rows, fuse.glu) {
            (Some(r), _) => r,
            (None, Some(_)) => (0, part.rows / 2),
            (None, None) => (0, part.rows),
        };
        let mut grid = ctx.grid(rows.div_ceil(tile_rows) as u32);
        grid[2] = tokens.div_ceil(GEMM_BN) as u32;
        let extra = [eps, act, w_row0 as u32, 0, 0];
        let p = ops::weight_params(
            w,
            part,
            rows,
            tokens,
            grid[0],
            col0 + part.row0,
            y_cols,
            extra,
        );
        let mut bufs = vec![
            part.buf.as_entire_binding(),
            x.as_entire_binding(),
            y.as_entire_binding(),
        ];
        if let Some((nw, _)) = fuse.norm {
            bufs.push(nw.as_entire_binding());
        }
        ctx.dispatch(enc, &k, &p, &bufs, grid)?;
    }
    Ok(())
}

/// [`ops::matmul_split`] through gemm.wgsl's SPLIT, for any token count: rows
/// `[first, first + Σ outs[i].1)` of a one-part weight times each token of `x` (RMS-normalized
/// first under `norm`) in one dispatch, output row `r` of the range going to `outs[0]` below
/// `outs[0].1`, then to `outs[1]`, then to `outs[2]`, each a `[tokens, outs[i].1]` matrix.
/// One dispatch instead of three GEMMs over the q, k and v row ranges: the narrow k and v
/// ranges alone make few workgroups.
#[allow(clippy::too_many_arguments)]
pub fn gemm_split(
    ctx: &GpuContext,
    enc: &mut Recorder,
    w: &GpuWeight,
    x: &wgpu::Buffer,
    tokens: usize,
    first: usize,
    outs: [(&wgpu::Buffer, usize); 3],
    norm: Option<(&wgpu::Buffer, f32)>,
) -> Result<()> {
    let rows = ops::split_rows(w, first, &outs)?;
    let mut k = Kernel::new("gemm", "gemm")
        .def(&w.define(), 1)
        .def("SPLIT", 1);
    if norm.is_some() {
        k = k.def("NORM", 1);
    }
    if tokens == 0 || rows == 0 {
        return Ok(());
    }
    let mut grid = ctx.grid(rows.div_ceil(GEMM_BM) as u32);
    grid[2] = tokens.div_ceil(GEMM_BN) as u32;
    let part = &w.parts[0];
    let eps = norm.map_or(0, |n| n.1.to_bits());
    let split = [outs[0].1, outs[0].1 + outs[1].1].map(|r| r as u32);
    let extra = [eps, 0, first as u32, split[0], split[1]];
    let p = ops::weight_params(w, part, rows, tokens, grid[0], 0, 0, extra);
    let mut bufs = vec![part.buf.as_entire_binding(), x.as_entire_binding()];
    bufs.extend(outs.iter().map(|o| o.0.as_entire_binding()));
    if let Some((nw, _)) = norm {
        bufs.push(nw.as_entire_binding());
    }
    ctx.dispatch(enc, &k, &p, &bufs, grid)
}

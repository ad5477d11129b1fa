//! The prefill GEMM (`shaders/gemm.wgsl`): `W·x` for many tokens with a register-tiled kernel
//! (128 weight rows × 64 tokens per workgroup, the W tile dequantized into workgroup memory once
//! per 16-column step), every weight type and every fusion of [`ops::matmul`] (NORM, GLU,
//! RESIDUAL, row ranges, split weights); split along K when the tiles are few (`split_k`).
//! [`ops::matmul`] sends multi-token work here from [`GEMM_MIN_TOKENS`] tokens on, and
//! [`ops::matmul_split`] its q/k/v split ([`gemm_split`]); the CPU reference is
//! `backend::cpu`'s matmul, tested by `tests/gpu_ops_gemm.rs`.

use super::context::{GpuContext, Kernel, Recorder};
use super::layout::{GpuWeight, WeightPart};
use super::ops::{self, Fuse};
use crate::error::{GpuError, Result};

/// From this many tokens on, [`ops::matmul`] runs the GEMM: below it most of a 64-token tile
/// would be padding, and matmul.wgsl's one-row workgroups fill the GPU better.
pub const GEMM_MIN_TOKENS: usize = 16;

/// Weight rows and tokens of one gemm.wgsl workgroup (`BM`, `BN`), columns per step (`KT`).
const GEMM_BM: usize = 128;
const GEMM_BN: usize = 64;
const GEMM_KT: usize = 16;

/// Split-K: a GEMM of fewer row × token tiles than this is cut along K into pieces (gemm.wgsl
/// `KSPLIT`, summed by gemm_reduce.wgsl) until it has about this many workgroups, each piece at
/// least [`GEMM_SPLIT_MIN_COLS`] wide. A 2048-row projection of 512 tokens is 128 workgroups,
/// one per H100 multiprocessor: its K loop's latency went unhidden.
const GEMM_SPLIT_TARGET: usize = 512;
const GEMM_SPLIT_MIN_COLS: usize = 512;

/// `(splits, columns per split)` for a GEMM of `tiles` workgroups over `cols` columns, or none.
fn split_k(cols: usize, tiles: usize) -> Option<(usize, usize)> {
    let want = GEMM_SPLIT_TARGET
        .div_ceil(tiles.max(1))
        .min(cols / GEMM_SPLIT_MIN_COLS);
    if want < 2 {
        return None;
    }
    let kc = cols.div_ceil(want).next_multiple_of(GEMM_KT);
    Some((cols.div_ceil(kc), kc))
}

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
    let mut k = w.layout_defs(Kernel::new("gemm", "gemm"));
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
        if !glu {
            let tiles = rows.div_ceil(tile_rows) * tokens.div_ceil(GEMM_BN);
            let out = [(col0 + part.row0) as u32, y_cols as u32, 0, 0];
            let reduce = |k: Kernel| match fuse.residual {
                true => k.def("RESIDUAL", 1),
                false => k,
            };
            let done = gemm_k_split(
                ctx,
                enc,
                (w, part, w_row0, rows),
                x,
                tokens,
                fuse.norm,
                tiles,
                reduce,
                out,
                &[y],
            )?;
            if done {
                continue;
            }
        }
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
    let mut k = w.layout_defs(Kernel::new("gemm", "gemm")).def("SPLIT", 1);
    if norm.is_some() {
        k = k.def("NORM", 1);
    }
    if tokens == 0 || rows == 0 {
        return Ok(());
    }
    let part = &w.parts[0];
    let split = [outs[0].1, outs[0].1 + outs[1].1].map(|r| r as u32);
    let tiles = rows.div_ceil(GEMM_BM) * tokens.div_ceil(GEMM_BN);
    let ys = outs.map(|o| o.0);
    let out = [0, 0, split[0], split[1]];
    let reduce = |k: Kernel| k.def("SPLIT", 1);
    let weight = (w, part, first, rows);
    if gemm_k_split(ctx, enc, weight, x, tokens, norm, tiles, reduce, out, &ys)? {
        return Ok(());
    }
    let mut grid = ctx.grid(rows.div_ceil(GEMM_BM) as u32);
    grid[2] = tokens.div_ceil(GEMM_BN) as u32;
    let eps = norm.map_or(0, |n| n.1.to_bits());
    let extra = [eps, 0, first as u32, split[0], split[1]];
    let p = ops::weight_params(w, part, rows, tokens, grid[0], 0, 0, extra);
    let mut bufs = vec![part.buf.as_entire_binding(), x.as_entire_binding()];
    bufs.extend(ys.iter().map(|y| y.as_entire_binding()));
    if let Some((nw, _)) = norm {
        bufs.push(nw.as_entire_binding());
    }
    ctx.dispatch(enc, &k, &p, &bufs, grid)
}

/// Split-K ([`split_k`]) of rows `[w_row0, w_row0 + rows)` of a weight part times each token
/// (RMS-normalized first under `norm`): gemm.wgsl KSPLIT writes each piece's sums (and Σx² per
/// piece and token under NORM) to the scratch buffer, then gemm_reduce.wgsl (`reduce` adds
/// its output defines: RESIDUAL or SPLIT) scales and writes `outs`; `out` is its
/// `[row0, y_cols, split1, split2]`. False (nothing recorded) when the GEMM has enough tiles.
#[allow(clippy::too_many_arguments)]
fn gemm_k_split(
    ctx: &GpuContext,
    enc: &mut Recorder,
    (w, part, w_row0, rows): (&GpuWeight, &WeightPart, usize, usize),
    x: &wgpu::Buffer,
    tokens: usize,
    norm: Option<(&wgpu::Buffer, f32)>,
    tiles: usize,
    reduce: impl Fn(Kernel) -> Kernel,
    out: [u32; 4],
    outs: &[&wgpu::Buffer],
) -> Result<bool> {
    let scratch_bytes = |splits: usize| (splits * tokens * (rows + 1) * 4) as u64;
    let Some((splits, kc)) =
        split_k(w.cols, tiles).filter(|&(n, _)| scratch_bytes(n) <= ctx.max_binding)
    else {
        return Ok(false);
    };
    let scratch = ctx.scratch(scratch_bytes(splits));
    let mut ks = w.layout_defs(Kernel::new("gemm", "gemm")).def("KSPLIT", 1);
    let mut kr = reduce(Kernel::new("gemm_reduce", "gemm_reduce"));
    if norm.is_some() {
        ks = ks.def("NORM", 1);
        kr = kr.def("NORM", 1);
    }
    let eps = norm.map_or(0, |n| n.1.to_bits());
    let mut grid = ctx.grid(rows.div_ceil(GEMM_BM) as u32);
    grid[2] = (tokens.div_ceil(GEMM_BN) * splits) as u32;
    let extra = [eps, 0, w_row0 as u32, kc as u32, 0];
    let p = ops::weight_params(w, part, rows, tokens, grid[0], 0, 0, extra);
    let mut bufs = vec![
        part.buf.as_entire_binding(),
        x.as_entire_binding(),
        scratch.as_entire_binding(),
    ];
    if let Some((nw, _)) = norm {
        bufs.push(nw.as_entire_binding());
    }
    ctx.dispatch(enc, &ks, &p, &bufs, grid)?;
    let grid = ctx.grid((rows * tokens).div_ceil(256) as u32);
    let p = ops::params(&[
        rows as u32,
        w.cols as u32,
        tokens as u32,
        splits as u32,
        grid[0],
        out[0],
        out[1],
        w.mult.to_bits(),
        eps,
        out[2],
        out[3],
    ]);
    let mut bufs = vec![scratch.as_entire_binding()];
    bufs.extend(outs.iter().map(|b| b.as_entire_binding()));
    ctx.dispatch(enc, &kr, &p, &bufs, grid)?;
    Ok(true)
}

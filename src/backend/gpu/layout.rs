//! Weight layouts on the GPU (spec/formats.md §5) and their upload, split by rows to fit one
//! storage binding (platform.md §1.3).
//!
//! WGSL reads storage as `u32`, so every row starts on a word:
//! - F32, F16, BF16: the row's values, zero-padded to a multiple of 4 elements (the kernels'
//!   group of 4).
//! - Block types: the row's blocks in file order, each zero-padded to a multiple of 4 bytes
//!   (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K need no padding; Q4_0 18→20, Q5_0 22→24, Q8_0 34→36,
//!   Q3_K 110→112, Q6_K 210→212 bytes). Decided over the spec's structure-of-arrays repack
//!   because one layout rule and one weight binding serve every type; the cost is ≤ 11% more
//!   bytes for the padded types (ARCHITECTURE.md).
//! - Ternary (TQ1_0, TQ2_0, I2_S): canonical T2R (formats.md §5.2): all rows' codes, then all
//!   rows' f16 scales (two per word) starting at word `aux`; the I2_S tensor scale is the
//!   kernel's `mult`.
//!
//! A part holds whole rows; parts start at multiples of 128 rows when the tensor is split, so
//! T2R offsets stay 256-byte aligned.

use super::context::{GpuContext, Kernel};
use crate::error::{GpuError, Result};
use crate::quant::{GgmlType, T2r, TensorView};
use std::sync::{Arc, Mutex};

/// One buffer of consecutive rows.
pub struct WeightPart {
    pub buf: wgpu::Buffer,
    /// First row of the tensor in this part.
    pub row0: usize,
    pub rows: usize,
    /// Word offset of the second region (T2R scales), 0 otherwise.
    pub aux: u32,
}

/// A matrix `{cols, rows}` resident on the GPU.
pub struct GpuWeight {
    pub name: String,
    pub ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
    /// u32 words per stored row (codes only for T2R).
    pub row_words: usize,
    /// Multiplies every value (the I2_S tensor scale; 1 otherwise).
    pub mult: f32,
    /// T2R whose blocks have one scale in each of at most [`MAX_SCALE_RUNS`] runs of rows, as
    /// (first row, scale): BitNet's one scale a tensor (a run per tensor of a joined q/k/v or
    /// gate/up weight), I2_S's unit block scales. The one-token product takes a row's scale
    /// from its parameters and applies it once to the row's sums (gemv.wgsl `T2R_ROW_SCALE`).
    /// Empty otherwise.
    pub scale_runs: Vec<(usize, f32)>,
    /// Q6_K rows of an LM head (more than [`HEAD_ROWS`]) stored block by block in tiles of
    /// [`TILE`] rows (dequant.wgsl `TILE128`): block j of a tile's rows, one after another, then
    /// block j + 1, so that a workgroup of a tile's rows reads one run at each step of K. Each
    /// part holds whole tiles (its last one padded with zero rows).
    pub tiled: bool,
    pub parts: Vec<WeightPart>,
    /// `ops::matmul`'s kernels for this weight, by their fusions, built once.
    pub(super) kernels: Mutex<Vec<(u8, MatmulKernel)>>,
}

/// A matmul kernel with its workgroups' row groups (one-token products; 0 otherwise) and its
/// slices of K (gemv.wgsl `SPLITK`; 1: none), shared by the dispatches that use it.
pub(super) type MatmulKernel = Arc<(Kernel, u32, u32)>;

impl GpuWeight {
    /// The WGSL define selecting this weight's dequant section (`TYPE_Q4_K`, …).
    pub fn define(&self) -> &'static str {
        type_define(self.ty)
    }

    /// `k` with the defines of this weight's layout: its type's, and `TILE128` where tiled.
    pub fn layout_defs(&self, k: Kernel) -> Kernel {
        let k = k.def(self.define(), 1);
        if self.tiled {
            k.def("TILE128", 1)
        } else {
            k
        }
    }

    /// The kernel of fusions `key`, built by `build` the first time.
    pub(super) fn kernel(
        &self,
        key: u8,
        build: impl FnOnce() -> (Kernel, u32, u32),
    ) -> MatmulKernel {
        let mut ks = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, k)) = ks.iter().find(|(k, _)| *k == key) {
            return k.clone();
        }
        let k = Arc::new(build());
        ks.push((key, k.clone()));
        k
    }

    /// Bytes stored on the GPU.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buf.size()).sum()
    }
}

/// The define of a type's dequant section (dequant.wgsl; ternary types share `TYPE_T2R`), empty
/// for a type without one.
pub fn type_define(ty: GgmlType) -> &'static str {
    match ty {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S => "TYPE_T2R",
        GgmlType::F32 => "TYPE_F32",
        GgmlType::F16 => "TYPE_F16",
        GgmlType::BF16 => "TYPE_BF16",
        GgmlType::Q4_0 => "TYPE_Q4_0",
        GgmlType::Q4_1 => "TYPE_Q4_1",
        GgmlType::Q5_0 => "TYPE_Q5_0",
        GgmlType::Q5_1 => "TYPE_Q5_1",
        GgmlType::Q8_0 => "TYPE_Q8_0",
        GgmlType::Q2_K => "TYPE_Q2_K",
        GgmlType::Q3_K => "TYPE_Q3_K",
        GgmlType::Q4_K => "TYPE_Q4_K",
        GgmlType::Q5_K => "TYPE_Q5_K",
        GgmlType::Q6_K => "TYPE_Q6_K",
        _ => "",
    }
}

/// Words per stored row of a non-ternary type.
fn row_words(ty: GgmlType, cols: usize) -> usize {
    match ty {
        GgmlType::F32 => cols.next_multiple_of(4),
        GgmlType::F16 | GgmlType::BF16 => cols.next_multiple_of(4) / 2,
        _ => {
            let nb = cols / ty.block_size() as usize;
            nb * (ty.type_size() as usize).next_multiple_of(4) / 4
        }
    }
}

/// Rows `rows` of a non-ternary tensor in the GPU layout: one after another, or `tiled`
/// ([`GpuWeight::tiled`]: `rows` starts a tile; whole tiles, the last one padded with zero rows).
fn pack_rows(v: &TensorView, rows: std::ops::Range<usize>, rw: usize, tiled: bool) -> Vec<u32> {
    let ty = v.ty();
    let stored = if tiled {
        rows.len().next_multiple_of(TILE)
    } else {
        rows.len()
    };
    let mut out = vec![0u32; stored * rw];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
    for (i, r) in rows.enumerate() {
        let src = v.row_bytes(r);
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                bytes[i * rw * 4..][..src.len()].copy_from_slice(src)
            }
            _ => {
                let (bs, ps) = (
                    ty.type_size() as usize,
                    (ty.type_size() as usize).next_multiple_of(4),
                );
                // Byte offset of block b of row i: in its row, or in its tile's run of block b.
                let at = |b: usize| {
                    if tiled {
                        i / TILE * TILE * rw * 4 + (b * TILE + i % TILE) * ps
                    } else {
                        i * rw * 4 + b * ps
                    }
                };
                for (b, blk) in src.chunks_exact(bs).enumerate() {
                    bytes[at(b)..][..bs].copy_from_slice(blk);
                }
            }
        }
    }
    out
}

/// Most runs of rows of one scale in [`GpuWeight::scale_runs`] (a joined q/k/v weight's three).
pub const MAX_SCALE_RUNS: usize = 3;

/// [`GpuWeight::scale_runs`] of a T2R tensor.
fn scale_runs(t: &T2r) -> Vec<(usize, f32)> {
    let mut runs: Vec<(usize, u16)> = Vec::new();
    for r in 0..t.rows {
        let s = t.scale_bits(r, 0);
        if (1..t.blocks_per_row()).any(|b| t.scale_bits(r, b) != s) {
            return Vec::new();
        }
        if runs.last().is_none_or(|l| l.1 != s) {
            if runs.len() == MAX_SCALE_RUNS {
                return Vec::new();
            }
            runs.push((r, s));
        }
    }
    runs.into_iter()
        .map(|(r, s)| (r, half::f16::from_bits(s).to_f32()))
        .collect()
}

/// Matrices of more rows than this are LM heads (a decode layer's have fewer).
pub const HEAD_ROWS: usize = 16384;

/// Rows of a tile of a [`GpuWeight::tiled`] weight.
pub const TILE: usize = 128;

/// Bytes of packed rows written at a time by [`upload`].
const UPLOAD_BATCH: usize = 8 << 20;

/// Uploads a tensor, split into parts of at most `ctx.max_binding` bytes.
pub fn upload(ctx: &GpuContext, v: &TensorView) -> Result<GpuWeight> {
    let ty = v.ty();
    if type_define(ty).is_empty() {
        return Err(GpuError::UnsupportedType(ty.name().into()).into());
    }
    let (cols, rows) = (v.ncols(), v.nrows());
    let t2r = matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S)
        .then(|| T2r::from_tensor(v))
        .transpose()?;
    let (rw, scale_words_per_row, mult) = match &t2r {
        Some(t) => (t.row_words(), t.blocks_per_row(), t.tensor_mult),
        None => (row_words(ty, cols), 0, 1.0),
    };
    let scale_runs = t2r.as_ref().map(scale_runs).unwrap_or_default();
    // Bytes per row in a part: codes plus (T2R) scales, counted as whole f16s.
    let row_bytes = (rw * 4 + scale_words_per_row * 2) as u64;
    let max_rows = (ctx.max_binding / row_bytes.max(1)) as usize;
    if max_rows == 0 {
        return Err(GpuError::TooLarge {
            name: v.name().into(),
            needed: row_bytes,
            limit: ctx.max_binding,
        }
        .into());
    }
    let tiled = ty == GgmlType::Q6_K && rows > HEAD_ROWS && max_rows >= TILE;
    let per_part = if max_rows >= rows.next_multiple_of(if tiled { TILE } else { 1 }) {
        rows
    } else if max_rows >= 128 {
        max_rows / 128 * 128
    } else {
        max_rows
    };
    let mut parts = Vec::new();
    let mut row0 = 0;
    while row0 < rows {
        let n = per_part.min(rows - row0);
        let (buf, aux) = match &t2r {
            Some(t) => {
                let codes = &t.codes[row0 * rw..(row0 + n) * rw];
                let bpr = t.blocks_per_row();
                let scales: Vec<u32> = (row0..row0 + n)
                    .flat_map(|r| (0..bpr).map(move |b| t.scale_bits(r, b)))
                    .collect::<Vec<u16>>()
                    .chunks(2)
                    .map(|c| c[0] as u32 | (c.get(1).copied().unwrap_or(0) as u32) << 16)
                    .collect();
                let buf = ctx.storage(v.name(), ((codes.len() + scales.len()) * 4) as u64);
                ctx.write(&buf, 0, bytemuck::cast_slice(codes));
                ctx.write(&buf, codes.len() as u64 * 4, bytemuck::cast_slice(&scales));
                (buf, codes.len() as u32)
            }
            None => {
                // packed and written a batch of rows at a time (UPLOAD_BATCH bytes, or half a
                // binding, so that tests with a small binding limit write parts in pieces): no
                // copy of the whole part
                let stored = if tiled { n.next_multiple_of(TILE) } else { n };
                let buf = ctx.storage(v.name(), (stored * rw * 4) as u64);
                let batch_bytes = UPLOAD_BATCH.min(ctx.max_binding as usize / 2);
                let mut batch = (batch_bytes / (rw * 4)).max(1);
                if tiled {
                    batch = batch.next_multiple_of(TILE);
                }
                for r in (row0..row0 + n).step_by(batch) {
                    let words = pack_rows(v, r..(r + batch).min(row0 + n), rw, tiled);
                    ctx.write(
                        &buf,
                        ((r - row0) * rw * 4) as u64,
                        bytemuck::cast_slice(&words),
                    );
                }
                (buf, 0)
            }
        };
        parts.push(WeightPart {
            buf,
            row0,
            rows: n,
            aux,
        });
        row0 += n;
    }
    Ok(GpuWeight {
        name: v.name().into(),
        ty,
        cols,
        rows,
        row_words: rw,
        mult,
        scale_runs,
        tiled,
        parts,
        kernels: Default::default(),
    })
}

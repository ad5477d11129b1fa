//! Op launchers: each records one or more dispatches of a kernel in `shaders/` (named like the
//! op) into a command encoder. Shapes are the caller's to check; every kernel guards its own
//! bounds. The CPU reference of each op is in `backend::cpu` and the pairing is tested by the
//! backend-check harness (`tests/gpu_ops.rs`).

use super::context::{GpuContext, Kernel, Recorder};
use super::layout::{GpuWeight, WeightPart, HEAD_ROWS};
use crate::error::{GpuError, Result};
use crate::model::arch::Activation;

/// A uniform block from 32-bit fields, padded to 16 bytes.
pub fn params(fields: &[u32]) -> Vec<u8> {
    let mut v = fields.to_vec();
    v.resize(fields.len().next_multiple_of(4), 0);
    bytemuck::cast_slice(&v).to_vec()
}

/// Threads per workgroup of elementwise.wgsl.
const EW_WG: u32 = 256;

/// Records an elementwise kernel over `n` elements.
fn elementwise(
    ctx: &GpuContext,
    enc: &mut Recorder,
    k: Kernel,
    n: usize,
    extra: [u32; 5],
    bufs: &[wgpu::BindingResource],
) -> Result<()> {
    let grid = ctx.grid((n as u32).div_ceil(EW_WG));
    let [cols, s, src_cols, src_col0, kind] = extra;
    let p = params(&[n as u32, cols, grid[0], s, src_cols, src_col0, kind, 0]);
    ctx.dispatch(enc, &k, &p, bufs, grid)
}

/// `x += y` over `n` elements.
pub fn add(
    ctx: &GpuContext,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
) -> Result<()> {
    let k = Kernel::new("elementwise", "add").def("ADD", 1);
    let b = [x.as_entire_binding(), y.as_entire_binding()];
    elementwise(ctx, enc, k, n, [0; 5], &b)
}

/// `x[r] += b` for `n` elements of rows `cols` wide.
pub fn add_bias(
    ctx: &GpuContext,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    b: &wgpu::Buffer,
    n: usize,
    cols: usize,
) -> Result<()> {
    let k = Kernel::new("elementwise", "add_bias").def("ADD_BIAS", 1);
    let bufs = [x.as_entire_binding(), b.as_entire_binding()];
    elementwise(ctx, enc, k, n, [cols as u32, 0, 0, 0, 0], &bufs)
}

/// `x *= s` (`entry = "scale"`) or `x = s·tanh(x/s)` (`entry = "softcap"`).
pub fn unary(
    ctx: &GpuContext,
    enc: &mut Recorder,
    entry: &'static str,
    x: &wgpu::Buffer,
    n: usize,
    s: f32,
) -> Result<()> {
    let k = Kernel::new("elementwise", entry).def("UNARY", 1);
    let bufs = [x.as_entire_binding()];
    elementwise(ctx, enc, k, n, [0, s.to_bits(), 0, 0, 0], &bufs)
}

/// `o = act(gate) ⊙ up`.
pub fn glu(
    ctx: &GpuContext,
    enc: &mut Recorder,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    o: &wgpu::Buffer,
    n: usize,
    act: Activation,
) -> Result<()> {
    let kind = act_kind(act);
    let k = Kernel::new("elementwise", "glu").def("GLU", 1);
    let bufs = [
        gate.as_entire_binding(),
        up.as_entire_binding(),
        o.as_entire_binding(),
    ];
    elementwise(ctx, enc, k, n, [0, 0, 0, 0, kind], &bufs)
}

/// common.wgsl's `activation` kind.
pub(super) fn act_kind(act: Activation) -> u32 {
    match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
        Activation::Relu2 => 2,
    }
}

/// `dst[r][c] = src[r][col0 + c]` for `rows × cols`.
#[allow(clippy::too_many_arguments)]
pub fn copy_cols(
    ctx: &GpuContext,
    enc: &mut Recorder,
    src: &wgpu::Buffer,
    src_cols: usize,
    col0: usize,
    dst: &wgpu::Buffer,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let k = Kernel::new("elementwise", "copy_cols").def("COPY_COLS", 1);
    let bufs = [src.as_entire_binding(), dst.as_entire_binding()];
    let extra = [cols as u32, 0, src_cols as u32, col0 as u32, 0];
    elementwise(ctx, enc, k, rows * cols, extra, &bufs)
}

/// RMSNorm of each `group`-long slice of `x` (`n` elements) into `y`, times `w` if given.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    ctx: &GpuContext,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    w: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    n: usize,
    group: usize,
    eps: f32,
) -> Result<()> {
    let n_groups = (n / group) as u32;
    let grid = ctx.grid(n_groups);
    let p = params(&[
        n_groups,
        group as u32,
        grid[0],
        eps.to_bits(),
        w.is_some() as u32,
    ]);
    // Without a weight, `x` is bound in its place (never read).
    let bufs = [
        x.as_entire_binding(),
        w.unwrap_or(x).as_entire_binding(),
        y.as_entire_binding(),
    ];
    ctx.dispatch(enc, &Kernel::new("rms_norm", "rms_norm"), &p, &bufs, grid)
}

/// matmul.wgsl's `Params` for one weight part (`row0`: matmul's output column of the part's
/// first row, embed's first id of the part); `extra` fills the five spare words (eps, act,
/// w_row0, and gemv's split points); the last five are the part's [`run_scales`].
#[allow(clippy::too_many_arguments)]
pub(super) fn weight_params(
    w: &GpuWeight,
    part: &WeightPart,
    rows: usize,
    tokens: usize,
    groups_x: u32,
    row0: usize,
    y_cols: usize,
    extra: [u32; 5],
) -> Vec<u8> {
    params(
        &[
            rows as u32,
            w.cols as u32,
            tokens as u32,
            w.row_words as u32,
            groups_x,
            row0 as u32,
            y_cols as u32,
            part.aux,
            w.mult.to_bits(),
            extra[0],
            extra[1],
            extra[2],
            extra[3],
            extra[4],
        ]
        .into_iter()
        .chain(run_scales(w, part))
        .collect::<Vec<_>>(),
    )
}

/// gemv.wgsl's `T2R_ROW_SCALE` parameters of `part` ([`GpuWeight::scale_runs`]): the part's rows
/// where its second and third runs start (`u32::MAX`: none), then the runs' scales.
fn run_scales(w: &GpuWeight, part: &WeightPart) -> [u32; 5] {
    let mut out = [u32::MAX, u32::MAX, 0, 0, 0];
    let (start, end) = (part.row0, part.row0 + part.rows);
    let ends = w.scale_runs.iter().skip(1).map(|r| r.0).chain([usize::MAX]);
    let live = w
        .scale_runs
        .iter()
        .zip(ends)
        .filter(|&(r, e)| e > start && r.0 < end);
    for (k, ((first, s), _)) in live.enumerate() {
        if k > 0 {
            out[k - 1] = (first - start) as u32;
        }
        out[2 + k] = s.to_bits();
    }
    out
}

/// Tokens per matmul workgroup (matmul.wgsl `TT`).
const MATMUL_TT: u32 = 4;

/// Threads per matmul.wgsl workgroup (its `WG`).
const MATMUL_WG: usize = 64;

/// Elements of `w` dequant.wgsl's `dq` returns at a time (its `G`).
fn dequant_group(w: &GpuWeight) -> usize {
    use crate::quant::GgmlType as T;
    match w.ty {
        T::F32 | T::F16 | T::BF16 => 4,
        _ => 16,
    }
}

/// What a matmul does besides `W·x` (matmul.wgsl's NORM, GLU and RESIDUAL).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fuse<'a> {
    /// Each token of `x` is first RMS-normalized (this eps) and multiplied by this weight.
    pub norm: Option<(&'a wgpu::Buffer, f32)>,
    /// The weight holds gate rows then as many up rows, in one part: the output is
    /// `act(gate·x) ⊙ up·x`, `w.rows / 2` wide.
    pub glu: Option<Activation>,
    /// Adds the product to `y` instead of storing it.
    pub residual: bool,
    /// Only rows `[first, first + count)` of a one-part weight (a half of a gate+up weight).
    pub rows: Option<(usize, usize)>,
}

/// `y[t][col0 + r] = W·x[t]` for `tokens` rows of `x` (`[tokens, w.cols]`) into `y`
/// (`[tokens, y_cols]`), one dispatch per weight part, with the fusions of `fuse`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
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
    if tokens >= super::gemm::GEMM_MIN_TOKENS {
        return super::gemm::gemm(ctx, enc, w, x, tokens, y, y_cols, col0, fuse);
    }
    let extra = [
        fuse.norm.map_or(0, |n| n.1.to_bits()),
        fuse.glu.map_or(0, act_kind),
    ];
    let glu = fuse.glu.is_some();
    if glu || fuse.rows.is_some() {
        let (first, count) = fuse
            .rows
            .unwrap_or((0, if glu { w.rows / 2 } else { w.rows }));
        let need = if glu { 2 * count } else { count };
        if w.parts.len() != 1 || first + need > w.rows || glu && !w.rows.is_multiple_of(2) {
            return Err(GpuError::Validation(format!("bad row range of '{}'", w.name)).into());
        }
    }
    // Built once per weight and fusions: a dispatch only looks its kernel up.
    let one = tokens == 1;
    let (norm, residual) = (fuse.norm.is_some(), fuse.residual);
    let key = u8::from(one) | u8::from(norm) << 1 | u8::from(glu) << 2 | u8::from(residual) << 3;
    let kernel = w.kernel(key, || {
        let mut k = w.layout_defs(Kernel::new("matmul", "matmul").def("MATMUL", 1));
        for (on, name) in [(norm, "NORM"), (glu, "GLU"), (residual, "RESIDUAL")] {
            if on {
                k = k.def(name, 1);
            }
        }
        if one {
            gemv_kernel(ctx, w, k.defines)
        } else {
            (k, 0, 1)
        }
    });
    let (k, ng, splits) = (&kernel.0, kernel.1, kernel.2);
    for part in &w.parts {
        let (w_row0, rows) = match (fuse.rows, fuse.glu) {
            (Some(r), _) => r,
            (None, Some(_)) => (0, part.rows / 2),
            (None, None) => (0, part.rows),
        };
        let n_blk = (rows as u32).div_ceil(if glu { 2 } else { 4 } * ng.max(1));
        let mut grid = if one {
            // Row groups of 4 weight rows (GLU: 2 outputs), NG groups per workgroup.
            ctx.grid(n_blk * splits)
        } else {
            ctx.grid(rows as u32)
        };
        grid[2] = (tokens as u32).div_ceil(MATMUL_TT);
        let extra = [extra[0], extra[1], w_row0 as u32, 0, 0];
        let p = weight_params(
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
        let ks = split_k_buffers(ctx, splits, n_blk, ng);
        bufs.extend(ks.iter().flatten().map(|b| b.as_entire_binding()));
        ctx.dispatch(enc, k, &p, &bufs, grid)?;
    }
    Ok(())
}

/// The partial sums' scratch (`n_blk` row blocks of `ng` groups, per slice) and the arrival
/// counters of a SPLITK dispatch, its last two bindings; `None` with one slice.
fn split_k_buffers(
    ctx: &GpuContext,
    splits: u32,
    n_blk: u32,
    ng: u32,
) -> Option<[wgpu::Buffer; 2]> {
    (splits > 1).then(|| {
        let bytes = 16 * (n_blk * splits * (ng + 1)) as u64;
        [ctx.scratch(bytes), ctx.arrivals(n_blk as usize)]
    })
}

/// The rows a q/k/v split of `w` from row `first` covers, checked against the weight (one part).
pub(super) fn split_rows(
    w: &GpuWeight,
    first: usize,
    outs: &[(&wgpu::Buffer, usize); 3],
) -> Result<usize> {
    let rows: usize = outs.iter().map(|o| o.1).sum();
    if w.parts.len() != 1 || first + rows > w.rows {
        return Err(GpuError::Validation(format!("bad split of '{}'", w.name)).into());
    }
    Ok(rows)
}

/// `tokens` rows of x through three consecutive row ranges of a one-part weight:
/// `outs[i].0` (`[tokens, outs[i].1]`) = the next `outs[i].1` rows from row `first` times x (x
/// RMS-normalized first under `norm`). For the q, k and v rows of a layer's joined weight. One
/// dispatch for one token (gemv.wgsl's SPLIT) and from GEMM_MIN_TOKENS on (gemm.wgsl's SPLIT);
/// in between, three [`matmul`]s over the row ranges.
#[allow(clippy::too_many_arguments)]
pub fn matmul_split(
    ctx: &GpuContext,
    enc: &mut Recorder,
    w: &GpuWeight,
    x: &wgpu::Buffer,
    tokens: usize,
    first: usize,
    outs: [(&wgpu::Buffer, usize); 3],
    norm: Option<(&wgpu::Buffer, f32)>,
) -> Result<()> {
    let rows = split_rows(w, first, &outs)?;
    if tokens >= super::gemm::GEMM_MIN_TOKENS {
        return super::gemm::gemm_split(ctx, enc, w, x, tokens, first, outs, norm);
    }
    if tokens != 1 {
        let mut at = first;
        for (y, n) in outs {
            let fuse = Fuse {
                norm,
                rows: Some((at, n)),
                ..Fuse::default()
            };
            matmul(ctx, enc, w, x, tokens, y, n, 0, fuse)?;
            at += n;
        }
        return Ok(());
    }
    // matmul's cache: its keys have bit 4 clear.
    let kernel = w.kernel(1 << 4 | u8::from(norm.is_some()) << 1, || {
        let mut k = w.layout_defs(Kernel::new("gemv", "gemv"));
        if norm.is_some() {
            k = k.def("NORM", 1);
        }
        gemv_kernel(ctx, w, k.def("SPLIT", 1).defines)
    });
    let (k, ng, splits) = (&kernel.0, kernel.1, kernel.2);
    let n_blk = (rows as u32).div_ceil(4 * ng);
    let grid = ctx.grid(n_blk * splits);
    let eps = norm.map_or(0, |n| n.1.to_bits());
    let (split1, split2) = (outs[0].1 as u32, (outs[0].1 + outs[1].1) as u32);
    let extra = [eps, 0, first as u32, split1, split2];
    let p = weight_params(w, &w.parts[0], rows, 1, grid[0], 0, 0, extra);
    let mut bufs = vec![w.parts[0].buf.as_entire_binding(), x.as_entire_binding()];
    bufs.extend(outs.iter().map(|o| o.0.as_entire_binding()));
    if let Some((nw, _)) = norm {
        bufs.push(nw.as_entire_binding());
    }
    let ks = split_k_buffers(ctx, splits, n_blk, ng);
    bufs.extend(ks.iter().flatten().map(|b| b.as_entire_binding()));
    ctx.dispatch(enc, k, &p, &bufs, grid)
}

/// Threads per workgroup of gemv.wgsl for matrices of up to 16k rows (the LM head: 64).
const GEMV_WG: u32 = 128;

/// Threads per workgroup of gemv.wgsl under `Q8X` (each workgroup quantizes all of x first).
const Q8X_WG: u32 = 256;

/// … when a subgroup quantizes a block (`XQ_SG`): fewer workgroups quantizing the same x (H100,
/// `tests/gpu_bench_gemv.rs`, BitNet-2B: down 13.0 → 11.6 µs, q/k/v, out and gate·up 0.7-0.9 µs
/// faster each than 256 threads with the workgroup-memory maxima).
const Q8X_SG_WG: u32 = 512;

/// The longest rows gemv.wgsl quantizes x for (its packed copy lives in workgroup memory).
const Q8X_MAX_COLS: usize = 8192;

/// `Q8X` LM heads: workgroup size and threads per row group (H200, tests/gpu_bench_gemv.rs,
/// Q6_K heads of BitNet-2B / Llama-1B: 137 / 102 µs with f32 x in 64-thread workgroups, 98 / 78
/// µs with x as int8 in 256-thread workgroups of 8-thread row groups; 16- and 32-thread groups
/// and 512- or 1024-thread workgroups were between).
const Q8X_HEAD_WG: u32 = 256;
const Q8X_HEAD_TPR: u32 = 8;

/// Whether a one-token product with `w` quantizes x to int8 (gemv.wgsl's `Q8X`), per 256 values
/// as ggml's Q8_K, and dots it with packed int8 dot products instead of converting every weight
/// to f32: ternary and Q4_K rows, and Q6_K LM heads, of whole 256-value blocks up to
/// `Q8X_MAX_COLS`, unless the context has [`super::GpuOptions::f32_activations`]. It is the
/// scheme llama.cpp's CPU backend and the CPU engine use for all three (`vec_dot_tq*_q8_K`,
/// `vec_dot_q4_K_q8_K`, `vec_dot_q6_K_q8_K`; backend::cpu::q8). A head streams hundreds of MB,
/// and int8 x took a third off its time (H200); Llama-1B's Q4_K layers took it from 745 to 808
/// tok/s; a layer's Q6_K matrices were slower this way (Llama-1B's down and v: 806 -> 789).
pub fn gemv_quantizes_x(ctx: &GpuContext, w: &GpuWeight) -> bool {
    let ty = w.define();
    ctx.q8_activations
        && (ty == "TYPE_T2R" || ty == "TYPE_Q4_K" || (ty == "TYPE_Q6_K" && w.rows > HEAD_ROWS))
        && w.cols.is_multiple_of(256)
        && w.cols <= Q8X_MAX_COLS
}

/// The subgroup size by which a `Q8X` product quantizes x on this device (gemv.wgsl `XQ_SG`: a
/// subgroup per 256-value block, no barriers): where the adapter has one subgroup size, of 8 to
/// 64 lanes. `None`: blocks take a workgroup-memory tree (no subgroups, as in the browser).
pub fn gemv_subgroup_quantize(ctx: &GpuContext) -> Option<u32> {
    let sg = ctx.subgroup_min;
    (ctx.subgroups && sg == ctx.subgroup_max && (8..=64).contains(&sg) && sg.is_power_of_two())
        .then_some(sg)
}

/// How many slices of K a one-token ternary product (`Q8X`) is cut into (gemv.wgsl `SPLITK`):
/// where a thread of a `tpr`-thread row group would take more than five of the row's `units`
/// code words, one after another, the fewest whole-block slices that leave it at most three, all
/// loaded before x is quantized; natively only, where the last workgroup of a row block merges
/// them (attn::MERGE_LAST). H200, BitNet-2B TQ2_0 decode (its down: 6,912 columns, 3 slices,
/// 240 workgroups instead of 80), old and new alternating in one call: 787.1 / 785.8 / 784.6 /
/// 785.3 → 790.1 / 792.0 / 785.3 / 792.7 tok/s. Also cutting q/k/v and out (three units a
/// thread, 2 slices) or gate·up (five, 2 slices, 432 workgroups) was slower: ~752 and ~743.
fn gemv_splits(w: &GpuWeight, units: u32, tpr: u32) -> u32 {
    let blocks = (w.cols / 256) as u32;
    if !super::attn::MERGE_LAST || w.define() != "TYPE_T2R" || units.div_ceil(tpr) <= 5 {
        return 1;
    }
    (1..=blocks)
        .find(|&s| blocks.is_multiple_of(s) && (units / s).div_ceil(tpr) <= 3)
        .unwrap_or(1)
}

/// gemv.wgsl for `w` with `defines` (the type and fusions of matmul), its row groups per
/// workgroup and its slices of K (`SPLITK`): the type's unit (elements per thread step, the shader's `UE`) and section, the
/// workgroup size (`WGS`) and threads per row group (`TPR`), and `Q8X` where
/// [`gemv_quantizes_x`].
fn gemv_kernel(
    ctx: &GpuContext,
    w: &GpuWeight,
    defines: crate::backend::gpu::wgsl::Defines,
) -> (Kernel, u32, u32) {
    use crate::quant::GgmlType as T;
    let (unit, section) = match w.ty {
        T::F32 | T::F16 | T::BF16 => (4, Some("GENERIC4")),
        T::Q4_0 | T::Q4_1 => (32, Some("LEGACY4")),
        T::Q8_0 | T::Q4_K => (32, None),
        T::Q6_K | T::TQ1_0 | T::TQ2_0 | T::I2_S => (16, None),
        _ => (16, Some("GENERIC16")),
    };
    let units = w.cols.div_ceil(unit) as u32;
    // Measured on an H100 (tests/gpu_bench_gemv.rs sweeps): a decode matrix of up to ~16k rows
    // runs fastest spread thin — a whole 64-thread group per row group (32 under GLU), even
    // where that leaves threads idle — so that more workgroups keep more loads in flight; an
    // LM head has rows enough to fill the GPU with about half a row's units per group, and
    // under Q8X (int8 x, quantized once per workgroup) with Q8X_HEAD_TPR threads per group.
    let glu = defines.get("GLU").is_some();
    let q8x = gemv_quantizes_x(ctx, w);
    // Q8X by subgroups (XQ_SG) in workgroups of Q8X_SG_WG threads where the limits allow
    // (workgroup memory: the group sums' vec4s, x as int8, its scales).
    let xq_sg = q8x.then(|| gemv_subgroup_quantize(ctx)).flatten();
    let sg_wg_fits = ctx.limits.max_compute_invocations_per_workgroup >= Q8X_SG_WG
        && ctx.limits.max_compute_workgroup_storage_size as usize
            >= 16 * Q8X_SG_WG as usize + w.cols + w.cols / 64;
    let head = w.rows > HEAD_ROWS;
    let (wg, tpr) = if q8x && head {
        (Q8X_HEAD_WG, Q8X_HEAD_TPR)
    } else if q8x || !head {
        let wg = match (q8x, xq_sg.is_some() && sg_wg_fits) {
            (true, true) => Q8X_SG_WG,
            (true, false) => Q8X_WG,
            _ => GEMV_WG,
        };
        (wg, if glu { 32 } else { 64 })
    } else {
        (64, (units / 2).next_power_of_two().clamp(8, 64))
    };
    let mut k = Kernel {
        shader: "gemv",
        entry: "gemv",
        defines,
    }
    .def("TPR", format!("{tpr}u"))
    .def("WGS", format!("{wg}u"));
    k.defines.remove("MATMUL");
    if let Some(s) = section {
        k = k.def(s, 1);
    }
    if unit == 4 {
        k = k.def("XSCALAR", 1);
    }
    let splits = if q8x && !head {
        gemv_splits(w, units, tpr)
    } else {
        1
    };
    if q8x {
        k = k
            .def("Q8X", 1)
            .def("XQ_N", format!("{}u", w.cols / 4 / splits as usize));
        if splits > 1 {
            k = k.def("SPLITK", format!("{splits}u"));
        }
        // A third unit loaded ahead where that completes the row (H200 decode A/B, BitNet-2B:
        // q/k/v and out, 580.6/580.4 -> 583.3/583.8 tok/s; also for gate·up's 5 and down's 7
        // units a thread, or all of them ahead: no gain).
        if (units / splits).div_ceil(tpr) == 3 {
            k = k.def("PRE3", 1);
        }
        if let Some(sg) = xq_sg {
            k = k.def("XQ_SG", format!("{sg}u"));
        }
        // A row's scale from the parameters, applied once (H200 decode A/B, BitNet-2B TQ2_0:
        // 623.0/628.0 -> 684.9/681.0 tok/s).
        if !w.scale_runs.is_empty() {
            k = k.def("T2R_ROW_SCALE", 1);
        }
    }
    (k, wg / tpr, splits)
}

/// `y[t] = W[ids[t]]` (`ids` a buffer of `tokens` u32, each < `w.rows`).
pub fn embed(
    ctx: &GpuContext,
    enc: &mut Recorder,
    w: &GpuWeight,
    ids: &wgpu::Buffer,
    tokens: usize,
    y: &wgpu::Buffer,
) -> Result<()> {
    let k = w.layout_defs(Kernel::new("matmul", "embed").def("EMBED", 1));
    // Workgroups a token (matmul.wgsl: WG threads, a dequant group each), in the w_row0 field.
    let per_token = w.cols.div_ceil(dequant_group(w) * MATMUL_WG);
    let grid = ctx.grid((tokens * per_token) as u32);
    for part in &w.parts {
        let p = weight_params(
            w,
            part,
            part.rows,
            tokens,
            grid[0],
            part.row0,
            w.cols,
            [0, 0, per_token as u32, 0, 0],
        );
        let bufs = [
            part.buf.as_entire_binding(),
            ids.as_entire_binding(),
            y.as_entire_binding(),
        ];
        ctx.dispatch(enc, &k, &p, &bufs, grid)?;
    }
    Ok(())
}

/// Values of a row per workgroup of argmax.wgsl's first pass (`CHUNK`).
const ARGMAX_CHUNK: usize = 256 * 16;

/// The u32 words of scratch [`argmax`] needs for `rows × cols`.
pub fn argmax_scratch(rows: usize, cols: usize) -> usize {
    2 * rows * cols.div_ceil(ARGMAX_CHUNK)
}

/// `ids[r]` = the index of row `r`'s largest value of `x` (`[rows, cols]`): ties to the lowest
/// index, NaN never chosen (all NaN: 0), as `backend::cpu::ops::argmax`. The winners of chunks
/// of each row into `scratch` ([`argmax_scratch`] words), then the winner of those: natively
/// by the last chunk of a row to finish (argmax.wgsl `MERGE_LAST`, as attention merges splits),
/// in the browser by a second dispatch.
#[allow(clippy::too_many_arguments)]
pub fn argmax(
    ctx: &GpuContext,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    rows: usize,
    cols: usize,
    scratch: &wgpu::Buffer,
    ids: &wgpu::Buffer,
) -> Result<()> {
    if cols == 0 || (scratch.size() as usize) < 4 * argmax_scratch(rows, cols) {
        return Err(GpuError::Validation("argmax: no columns or scratch too small".into()).into());
    }
    let chunks = cols.div_ceil(ARGMAX_CHUNK) as u32;
    let grid = ctx.grid(rows as u32 * chunks);
    let p = params(&[rows as u32, cols as u32, grid[0], chunks]);
    let k = Kernel::new("argmax", "argmax_part").def("PART", 1);
    let mut bufs = vec![x.as_entire_binding(), scratch.as_entire_binding()];
    if super::attn::MERGE_LAST {
        let arrivals = ctx.arrivals(rows);
        bufs.extend([ids.as_entire_binding(), arrivals.as_entire_binding()]);
        return ctx.dispatch(enc, &k.def("MERGE_LAST", 1), &p, &bufs, grid);
    }
    ctx.dispatch(enc, &k, &p, &bufs, grid)?;
    let grid = ctx.grid(rows as u32);
    let p = params(&[rows as u32, cols as u32, grid[0], chunks]);
    let bufs = [scratch.as_entire_binding(), ids.as_entire_binding()];
    ctx.dispatch(enc, &Kernel::new("argmax", "argmax_final"), &p, &bufs, grid)
}

/// Values of a row per workgroup of topk.wgsl's first pass (`CHUNK`).
const TOPK_CHUNK: usize = 4096;

/// The largest `k` [`top_k`] takes: one sort slot per thread of a workgroup (topk.wgsl `WG`).
/// runtime.md §5.4 asks for top-k ≤ 256 on the GPU (llama.cpp's default top_k is 40); the
/// sampler needs k plus the tokens its penalties touch (a 64-token window: ≤ 104 by default).
pub const TOPK_MAX: usize = 256;

/// The u32 words of scratch [`top_k`] needs for `rows × cols` and `k`.
pub fn top_k_scratch(rows: usize, cols: usize, k: usize) -> usize {
    2 * rows * cols.div_ceil(TOPK_CHUNK) * k
}

/// Row `r`'s `k` largest values of `x` (`[rows, cols]`) with their indices, best first, into
/// `out` (`[rows, k, 2]` u32: the value's f32 bits, the column): ties to the lower index, NaN
/// never chosen, −0 equal to +0 (as `backend::cpu::ops::top_k`); fewer than `k` non-NaN values
/// leave the remaining slots `(NaN, u32::MAX)`. `k` may exceed `cols`. Two dispatches: each
/// chunk's `k` best into `scratch` ([`top_k_scratch`] words), then each row's from those.
#[allow(clippy::too_many_arguments)]
pub fn top_k(
    ctx: &GpuContext,
    enc: &mut Recorder,
    x: &wgpu::Buffer,
    rows: usize,
    cols: usize,
    k: usize,
    scratch: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    if cols == 0 || !(1..=TOPK_MAX).contains(&k) {
        return Err(
            GpuError::Validation(format!("top_k: {cols} columns, k {k} (1..={TOPK_MAX})")).into(),
        );
    }
    if (scratch.size() as usize) < 4 * top_k_scratch(rows, cols, k) {
        return Err(GpuError::Validation("top_k: scratch too small".into()).into());
    }
    let chunks = cols.div_ceil(TOPK_CHUNK) as u32;
    let p2 = k.next_power_of_two() as u32;
    let grid = ctx.grid(rows as u32 * chunks);
    let p = params(&[rows as u32, cols as u32, grid[0], chunks, k as u32, p2]);
    let kp = Kernel::new("topk", "topk_part").def("PART", 1);
    let bufs = [x.as_entire_binding(), scratch.as_entire_binding()];
    ctx.dispatch(enc, &kp, &p, &bufs, grid)?;
    let grid = ctx.grid(rows as u32);
    let p = params(&[rows as u32, cols as u32, grid[0], chunks, k as u32, p2]);
    let bufs = [scratch.as_entire_binding(), out.as_entire_binding()];
    ctx.dispatch(enc, &Kernel::new("topk", "topk_final"), &p, &bufs, grid)
}

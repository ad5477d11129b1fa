//! `y[t] = W·x[t]` for a batch of tokens, over any supported weight type, parallel over output
//! rows (each task owns a contiguous row range of one weight).
//!
//! Two kernels:
//! - [`Kernel::Reference`]: each weight row is dequantized to f32 with the `quant` module's
//!   reference decoder, then dotted with every token's f32 activations. Exact up to f32 sums;
//!   the oracle for everything else. F32/F16/BF16 weights always use it.
//! - [`Kernel::Fast`] (default): the int8 path of [`super::q8`] for every quantized type.
//!
//! Either way a weight row is decoded once per batch and reused for every token of it.

use super::ops::dot_f32;
use super::pool::Pool;
use super::q8::{self, Q8Acts, Scheme, Unpacked};
use crate::error::Result;
use crate::model::Weight;
use std::sync::Mutex;

/// Which matmul kernel to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// f32 dequantize-and-dot (the oracle).
    Reference,
    /// int8 activations and integer dot products for quantized weights.
    #[default]
    Fast,
}

/// Output rows per task: enough work to amortise the scheduling, at least a few tasks per
/// thread for balance.
fn rows_per_task(rows: usize, cols: usize, n_tok: usize, n_threads: usize) -> usize {
    // Aim at ≥ 64K multiply-adds per task and ≥ 4 tasks per thread.
    let min_rows = (65536 / (cols * n_tok).max(1)).max(4);
    let balanced = rows.div_ceil(4 * n_threads).max(1);
    balanced.max(min_rows).min(rows.max(1))
}

struct Task<'a> {
    w: usize,
    r0: usize,
    r1: usize,
    view: &'a crate::quant::TensorView<'a>,
}

/// Computes `outs[i] = W_i · x` for `x` `[n_tok][k]`; `outs[i]` is `[n_tok][rows_i]`.
pub fn matmul(
    pool: &Pool,
    kernel: Kernel,
    files: &[&[u8]],
    ws: &[&Weight],
    x: &[f32],
    n_tok: usize,
) -> Result<Vec<Vec<f32>>> {
    let views = ws
        .iter()
        .map(|w| w.view(files.get(w.part).copied().unwrap_or(&[])))
        .collect::<Result<Vec<_>>>()?;
    let k = views.first().map_or(0, |v| v.ncols());
    debug_assert!(views.iter().all(|v| v.ncols() == k));
    debug_assert_eq!(x.len(), n_tok * k);

    // The activation scheme of each weight on the fast path (None: f32 reference).
    let scheme = |v: &crate::quant::TensorView| {
        let l = q8::layout(v.ty())?;
        let block = if l.scheme == Scheme::Q8K { 256 } else { q8::QB };
        (kernel == Kernel::Fast && k % block == 0).then_some(l.scheme)
    };
    let quantized = |s: Scheme| {
        views
            .iter()
            .any(|v| scheme(v) == Some(s))
            .then(|| Q8Acts::quantize(x, k, s))
    };
    let (acts_q8_0, acts_q8k) = (quantized(Scheme::Q8_0), quantized(Scheme::Q8K));

    let mut tasks = Vec::new();
    for (wi, v) in views.iter().enumerate() {
        let rows = v.nrows();
        let step = rows_per_task(rows, k, n_tok, pool.n_threads());
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + step).min(rows);
            tasks.push(Task {
                w: wi,
                r0,
                r1,
                view: v,
            });
            r0 = r1;
        }
    }
    let results: Vec<Mutex<Vec<f32>>> = tasks.iter().map(|_| Mutex::new(Vec::new())).collect();
    let errors: Mutex<Option<crate::Error>> = Mutex::new(None);

    pool.run(tasks.len(), &|i| {
        let t = &tasks[i];
        let nr = t.r1 - t.r0;
        let mut local = vec![0f32; n_tok * nr];
        let acts = match scheme(t.view) {
            Some(Scheme::Q8_0) => acts_q8_0.as_ref(),
            Some(Scheme::Q8K) => acts_q8k.as_ref(),
            None => None,
        };
        let r = match acts {
            Some(a) => {
                fast_rows(t.view, t.r0, t.r1, a, n_tok, &mut local);
                Ok(())
            }
            None => reference_rows(t.view, t.r0, t.r1, x, k, n_tok, &mut local),
        };
        match r {
            Ok(()) => *results[i].lock().unwrap_or_else(|e| e.into_inner()) = local,
            Err(e) => {
                errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
    });
    if let Some(e) = errors.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut outs: Vec<Vec<f32>> = views
        .iter()
        .map(|v| vec![0f32; n_tok * v.nrows()])
        .collect();
    for (t, res) in tasks.iter().zip(results) {
        let local = res.into_inner().unwrap_or_else(|e| e.into_inner());
        let (rows, nr) = (t.view.nrows(), t.r1 - t.r0);
        let out = &mut outs[t.w];
        for tok in 0..n_tok {
            out[tok * rows + t.r0..tok * rows + t.r1]
                .copy_from_slice(&local[tok * nr..(tok + 1) * nr]);
        }
    }
    Ok(outs)
}

/// Reference rows `[r0, r1)`: dequantize each row once, dot with every token.
fn reference_rows(
    v: &crate::quant::TensorView,
    r0: usize,
    r1: usize,
    x: &[f32],
    k: usize,
    n_tok: usize,
    out: &mut [f32],
) -> Result<()> {
    let nr = r1 - r0;
    let mut row = vec![0f32; k];
    for r in r0..r1 {
        v.dequantize_row(r, &mut row)?;
        for t in 0..n_tok {
            out[t * nr + (r - r0)] = dot_f32(&row, &x[t * k..(t + 1) * k]);
        }
    }
    Ok(())
}

/// Fast rows `[r0, r1)`: unpack each row once, integer dot with every token. Compiled twice on
/// x86-64: for the baseline (SSE2) and for AVX2+FMA, chosen at run time.
fn fast_rows(
    v: &crate::quant::TensorView,
    r0: usize,
    r1: usize,
    a: &Q8Acts,
    n_tok: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::has_avx2() {
        // SAFETY: the CPU supports the features the function is compiled for.
        unsafe { fast_rows_avx2(v, r0, r1, a, n_tok, out) };
        return;
    }
    fast_rows_body(v, r0, r1, a, n_tok, out, q8::dot)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fast_rows_avx2(
    v: &crate::quant::TensorView,
    r0: usize,
    r1: usize,
    a: &Q8Acts,
    n_tok: usize,
    out: &mut [f32],
) {
    // Small batches: dot straight from the packed bytes where a fused kernel exists.
    let nr = r1 - r0;
    if n_tok <= FUSED_MAX_TOKENS {
        // SAFETY: AVX2/FMA detected by the caller; rows are whole rows of `v`'s type.
        if unsafe { q8::avx2::dot_packed(v.ty(), v.row_bytes(r0), a.row(0)) }.is_some() {
            for r in r0..r1 {
                for t in 0..n_tok {
                    // SAFETY: as above.
                    out[t * nr + (r - r0)] =
                        unsafe { q8::avx2::dot_packed(v.ty(), v.row_bytes(r), a.row(t)) }
                            .unwrap_or(0.0);
                }
            }
            return;
        }
    }
    // Prefill: unpack each row once, then 4 tokens per pass over it.
    let l = q8::layout(v.ty()).expect("checked by the caller");
    let mult = v.i2s_scale().unwrap_or(1.0);
    let mut u = Unpacked::default();
    for r in r0..r1 {
        q8::unpack_row(v.ty(), v.row_bytes(r), v.ncols(), mult, &mut u);
        let mut t = 0;
        while t + 4 <= n_tok {
            // SAFETY: AVX2/FMA detected by the caller; lengths as `q8::dot` needs.
            let d = unsafe {
                q8::avx2::dot_n::<4>(&u, l, [a.row(t), a.row(t + 1), a.row(t + 2), a.row(t + 3)])
            };
            for (j, dj) in d.into_iter().enumerate() {
                out[(t + j) * nr + (r - r0)] = dj;
            }
            t += 4;
        }
        for t in t..n_tok {
            // SAFETY: as above.
            out[t * nr + (r - r0)] = unsafe { q8::avx2::dot(&u, l, a.row(t)) };
        }
    }
}

/// Up to this many tokens, formats with a fused kernel skip the unpack (decode); above it a row
/// is unpacked once and reused for every token (prefill).
#[cfg(target_arch = "x86_64")]
const FUSED_MAX_TOKENS: usize = 2;

#[inline(always)]
fn fast_rows_body(
    v: &crate::quant::TensorView,
    r0: usize,
    r1: usize,
    a: &Q8Acts,
    n_tok: usize,
    out: &mut [f32],
    dot: impl Fn(&Unpacked, q8::Layout, q8::ActRow) -> f32,
) {
    let nr = r1 - r0;
    let l = q8::layout(v.ty()).expect("checked by the caller");
    let mult = v.i2s_scale().unwrap_or(1.0);
    let mut u = Unpacked::default();
    for r in r0..r1 {
        q8::unpack_row(v.ty(), v.row_bytes(r), v.ncols(), mult, &mut u);
        for t in 0..n_tok {
            out[t * nr + (r - r0)] = dot(&u, l, a.row(t));
        }
    }
}

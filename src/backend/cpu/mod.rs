//! The CPU backend: the reference implementation of every op and the oracle for the GPU.
//!
//! Activations are plain `Vec<f32>` matrices ([`Act`]); the KV cache is the f32
//! [`KvCache`]. Matmuls run on a persistent [`Pool`] (native) or on the caller (wasm32), see
//! [`matmul`] for the kernels. Attention runs one task per (token, head) group.

pub mod matmul;
pub mod ops;
pub mod pool;
pub mod q8;

pub use matmul::Kernel;
pub use pool::Pool;

use super::{AttnParams, Backend, RopeParams};
use crate::error::Result;
use crate::model::arch::Activation;
use crate::model::{KvCache, Vector, Weight};
use std::sync::Mutex;

/// Whether the AVX2 kernels may run: AVX2, FMA and F16C (x86-64 only; every AVX2 CPU we know of
/// has the other two). Cached by std after the first call.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// A row-major `[rows × cols]` f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Act {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Act {
        debug_assert_eq!(data.len(), rows * cols);
        Act { rows, cols, data }
    }
}

/// Query rows from which prefill attention transposes K first (see `attention`).
const TRANSPOSE_MIN_ROWS: usize = 16;

/// The CPU backend over a model's file bytes.
pub struct CpuBackend<'a> {
    files: Vec<&'a [u8]>,
    pool: &'a Pool,
    kernel: Kernel,
}

impl<'a> CpuBackend<'a> {
    /// `files[i]` holds the bytes of file `i` of the model (`Weight::part`).
    pub fn new(files: Vec<&'a [u8]>, pool: &'a Pool, kernel: Kernel) -> Self {
        CpuBackend {
            files,
            pool,
            kernel,
        }
    }
}

impl Backend for CpuBackend<'_> {
    type Tensor = Act;
    type Cache = KvCache;

    fn shape(&self, x: &Act) -> (usize, usize) {
        (x.rows, x.cols)
    }

    fn embed(&self, w: &Weight, ids: &[u32]) -> Result<Act> {
        let v = w.view(self.files.get(w.part).copied().unwrap_or(&[]))?;
        let cols = v.ncols();
        let mut data = vec![0f32; ids.len() * cols];
        for (o, &id) in data.chunks_exact_mut(cols.max(1)).zip(ids) {
            v.dequantize_row(id as usize, o)?;
        }
        Ok(Act::new(ids.len(), cols, data))
    }

    fn matmul(&self, ws: &[&Weight], x: &Act) -> Result<Vec<Act>> {
        let outs = matmul::matmul(self.pool, self.kernel, &self.files, ws, &x.data, x.rows)?;
        Ok(outs
            .into_iter()
            .zip(ws)
            .map(|(d, w)| Act::new(x.rows, w.rows, d))
            .collect())
    }

    fn add_bias(&self, x: &mut Act, b: &Vector) {
        for row in x.data.chunks_exact_mut(x.cols) {
            for (v, &bv) in row.iter_mut().zip(&b.data) {
                *v += bv;
            }
        }
    }

    fn scale(&self, x: &mut Act, s: f32) {
        x.data.iter_mut().for_each(|v| *v *= s);
    }

    fn add(&self, x: &mut Act, y: &Act) {
        debug_assert_eq!((x.rows, x.cols), (y.rows, y.cols));
        for (a, &b) in x.data.iter_mut().zip(&y.data) {
            *a += b;
        }
    }

    fn rms_norm(&self, x: &Act, w: Option<&Vector>, group: usize, eps: f32) -> Act {
        let mut out = vec![0f32; x.data.len()];
        ops::rms_norm(&x.data, w.map(|w| &w.data[..]), group, eps, &mut out);
        Act::new(x.rows, x.cols, out)
    }

    fn rope(&self, x: &mut Act, pos0: usize, p: &RopeParams) {
        ops::rope(&mut x.data, x.cols, pos0, p);
    }

    fn store_kv(&self, cache: &mut KvCache, layer: usize, pos0: usize, k: &Act, v: &Act) {
        cache.write(layer, pos0, &k.data, &v.data);
    }

    fn attention(
        &self,
        q: &Act,
        cache: &KvCache,
        layer: usize,
        pos0: usize,
        p: &AttnParams,
    ) -> Act {
        let n_tok = q.rows;
        let n_kv = pos0 + n_tok;
        let (k, v) = (cache.k_rows(layer, n_kv), cache.v_rows(layer, n_kv));
        let (hd, hdv) = (p.head_dim, p.head_dim_v);
        let out_cols = p.n_head * hdv;
        let group = p.n_head / p.n_head_kv;
        // Prefill: each KV head's keys transposed once, so every query computes its scores as
        // vector AXPYs over keys (the transposition costs one pass over K; not worth it for a
        // few query rows).
        let kt: Vec<Vec<f32>> = if n_tok >= TRANSPOSE_MIN_ROWS {
            (0..p.n_head_kv)
                .map(|g| {
                    let mut kt = Vec::new();
                    ops::transpose_keys(k, n_kv, g, p, &mut kt);
                    kt
                })
                .collect()
        } else {
            Vec::new()
        };
        // One task per (token, query head); query head h reads KV head h / group.
        let n_tasks = n_tok * p.n_head;
        let results: Vec<Mutex<Vec<f32>>> = (0..n_tasks).map(|_| Mutex::new(Vec::new())).collect();
        let work = |i: usize| {
            let (t, h) = (i / p.n_head, i % p.n_head);
            let g = h / group;
            let qh = &q.data[t * q.cols + h * hd..t * q.cols + (h + 1) * hd];
            let keys = match kt.get(g) {
                Some(kt) => ops::Keys::Transposed { kt, n_kv },
                None => ops::Keys::Rows(k),
            };
            let mut scores = Vec::with_capacity(n_kv);
            let mut o = vec![0f32; hdv];
            ops::attend(qh, keys, v, g, pos0 + t, p, &mut scores, &mut o);
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = o;
        };
        // Small problems (decode with a short cache) are not worth a parallel region.
        if n_tok * n_kv * p.n_head * hd < 1 << 15 {
            (0..n_tasks).for_each(work);
        } else {
            self.pool.run(n_tasks, &work);
        }
        let mut out = vec![0f32; n_tok * out_cols];
        for (o, r) in out.chunks_exact_mut(hdv).zip(results) {
            o.copy_from_slice(&r.into_inner().unwrap_or_else(|e| e.into_inner()));
        }
        Act::new(n_tok, out_cols, out)
    }

    fn glu(&self, gate: &Act, up: &Act, act: Activation) -> Act {
        let mut out = vec![0f32; gate.data.len()];
        ops::glu_rows(&gate.data, &up.data, gate.cols, act, &mut out);
        Act::new(gate.rows, gate.cols, out)
    }

    fn split_cols(&self, x: &Act, widths: &[usize]) -> Vec<Act> {
        let mut at = 0;
        widths
            .iter()
            .map(|&w| {
                let mut data = Vec::with_capacity(x.rows * w);
                for row in x.data.chunks_exact(x.cols) {
                    data.extend_from_slice(&row[at..at + w]);
                }
                at += w;
                Act::new(x.rows, w, data)
            })
            .collect()
    }

    fn select_rows(&self, x: &Act, rows: &[usize]) -> Act {
        let mut data = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            data.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        Act::new(rows.len(), x.cols, data)
    }

    fn softcap(&self, x: &mut Act, cap: f32) {
        // ggml: scale(1/c), tanh, scale(c).
        let inv = 1.0 / cap;
        x.data.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
    }

    fn read(&self, x: &Act) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }
}

//! The CPU KV cache: f32, token-major per layer (spec/runtime.md §2).
//!
//! Layer `l` holds K as `[len][Hkv·hd]` and V as `[len][Hkv·hd_v]`, each KV head of a row
//! contiguous, so the used prefix is one contiguous slice. `capacity` is the logical context size
//! chosen at creation; memory grows with use (a 4096-token SmolLM2 cache is 190 MB in f32, and
//! the wasm heap should not pay for it up front). Rows at `[len, ..)` may hold stale data from a
//! failed or truncated forward; reads are bounded by `len`.
//!
//! On the GPU backend the cache also has a GPU copy ([`GpuKv`], allocated at full capacity on
//! first use). The host rows stay authoritative: the GPU forward writes its new rows to both
//! (the host copy is read back with the logits), so snapshots and saved states never touch the
//! GPU. The GPU copy is valid for its first `gpu.len` rows; whatever changes the host rows
//! (a CPU forward, a restore) lowers that, and the next GPU forward uploads the difference.

use crate::error::{ModelError, Result, SessionError};

/// f32 K/V rows of every layer for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    capacity: usize,
    len: usize,
    k_row: Vec<usize>,
    v_row: Vec<usize>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pub(crate) gpu: GpuMirror,
}

/// Per-layer K and V buffers on the GPU, `[capacity][row]` f32.
pub struct GpuKv {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
}

/// The GPU copy of a cache, valid for rows `[0, len)`. A clone starts without one (it must not
/// share GPU memory with the original); equality ignores it.
#[derive(Default)]
pub(crate) struct GpuMirror {
    pub kv: Option<GpuKv>,
    pub len: usize,
}

impl Clone for GpuMirror {
    fn clone(&self) -> Self {
        GpuMirror::default()
    }
}

impl PartialEq for GpuMirror {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for GpuMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuMirror({} rows)", self.len)
    }
}

impl KvCache {
    /// An empty cache for `n_layer` layers of `k_row`/`v_row` floats per token.
    pub fn new(capacity: usize, k_row: Vec<usize>, v_row: Vec<usize>) -> KvCache {
        debug_assert_eq!(k_row.len(), v_row.len());
        let n = k_row.len();
        KvCache {
            capacity,
            len: 0,
            k_row,
            v_row,
            k: vec![Vec::new(); n],
            v: vec![Vec::new(); n],
            gpu: GpuMirror::default(),
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most tokens this cache accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn n_layer(&self) -> usize {
        self.k_row.len()
    }

    /// (k, v) floats per token of `layer`.
    pub fn row_len(&self, layer: usize) -> (usize, usize) {
        (self.k_row[layer], self.v_row[layer])
    }

    /// Forget every token from `n` on (`n ≥ len` is a no-op). O(1): rows are not zeroed.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
        self.gpu.len = self.gpu.len.min(n);
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The first `len` K rows of `layer`, `[len][k_row]`.
    pub fn layer_k(&self, layer: usize) -> &[f32] {
        &self.k[layer][..self.len * self.k_row[layer]]
    }

    /// The first `len` V rows of `layer`, `[len][v_row]`.
    pub fn layer_v(&self, layer: usize) -> &[f32] {
        &self.v[layer][..self.len * self.v_row[layer]]
    }

    /// Replace the content with `len` tokens of K and V per layer (e.g. a saved state). Every
    /// length is checked before anything changes; on error the cache is untouched.
    pub fn restore(&mut self, len: usize, k: Vec<Vec<f32>>, v: Vec<Vec<f32>>) -> Result<()> {
        let n = self.n_layer();
        if k.len() != n || v.len() != n {
            return Err(SessionError::BadState(format!(
                "state has {}/{} K/V layers, the model has {n}",
                k.len(),
                v.len()
            ))
            .into());
        }
        if len > self.capacity {
            return Err(SessionError::BadState(format!(
                "state of {len} tokens exceeds the cache capacity {}",
                self.capacity
            ))
            .into());
        }
        for l in 0..n {
            let (kw, vw) = (len * self.k_row[l], len * self.v_row[l]);
            if k[l].len() != kw || v[l].len() != vw {
                return Err(SessionError::BadState(format!(
                    "layer {l}: K/V have {}/{} floats, {len} tokens need {kw}/{vw}",
                    k[l].len(),
                    v[l].len()
                ))
                .into());
            }
        }
        self.k = k;
        self.v = v;
        self.len = len;
        self.gpu.len = 0;
        Ok(())
    }

    /// Checks that this cache was made for a model with these row sizes.
    pub(crate) fn check_shape(&self, k_row: &[usize], v_row: &[usize]) -> Result<()> {
        if self.k_row != k_row || self.v_row != v_row {
            return Err(ModelError::Mismatch(format!(
                "the KV cache has rows {:?}/{:?}, the model needs {k_row:?}/{v_row:?}",
                self.k_row, self.v_row
            ))
            .into());
        }
        Ok(())
    }

    /// Write `n` rows of K and V of `layer` at positions `[pos0, pos0 + n)` (beyond `len`; made
    /// visible by [`KvCache::commit`]).
    pub(crate) fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        self.gpu.len = self.gpu.len.min(pos0);
        self.write_host(layer, pos0, k, v);
    }

    /// [`KvCache::write`] of rows the GPU copy already has.
    pub(crate) fn write_host(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let (kr, vr) = (self.k_row[layer], self.v_row[layer]);
        let n = k.len() / kr;
        debug_assert_eq!(v.len(), n * vr);
        debug_assert!(pos0 + n <= self.capacity);
        for (buf, row, src) in [(&mut self.k[layer], kr, k), (&mut self.v[layer], vr, v)] {
            let (start, end) = (pos0 * row, (pos0 + n) * row);
            if buf.len() < end {
                buf.resize(end, 0.0);
            }
            buf[start..end].copy_from_slice(src);
        }
    }

    /// K rows `[0, n)` of `layer`, including rows written but not yet committed.
    pub(crate) fn k_rows(&self, layer: usize, n: usize) -> &[f32] {
        &self.k[layer][..n * self.k_row[layer]]
    }

    pub(crate) fn v_rows(&self, layer: usize, n: usize) -> &[f32] {
        &self.v[layer][..n * self.v_row[layer]]
    }

    /// Make rows up to `len` visible.
    pub(crate) fn commit(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }

    /// Fails with [`SessionError::ContextOverflow`] unless `n` more tokens fit.
    pub(crate) fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(SessionError::ContextOverflow {
                n_prompt: self.len + n,
                n_ctx: self.capacity,
                reserve: 0,
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_commit_truncate_restore() {
        let mut c = KvCache::new(4, vec![2, 2], vec![3, 3]);
        assert_eq!((c.len(), c.capacity(), c.n_layer()), (0, 4, 2));
        c.write(0, 0, &[1.0, 2.0, 3.0, 4.0], &[1.0; 6]);
        c.write(1, 0, &[5.0; 4], &[2.0; 6]);
        assert!(c.layer_k(0).is_empty());
        c.commit(2);
        assert_eq!(c.layer_k(0), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(c.layer_v(1), &[2.0; 6]);
        c.truncate(1);
        assert_eq!(c.layer_k(0), &[1.0, 2.0]);
        c.truncate(9);
        assert_eq!(c.len(), 1);
        assert!(c.check_room(3).is_ok());
        assert_eq!(c.check_room(4).unwrap_err().code(), "context_overflow");

        let before = c.clone();
        let bad = c.restore(1, vec![vec![0.0; 2]], vec![vec![0.0; 3]]);
        assert_eq!(bad.unwrap_err().code(), "session_state");
        let bad = c.restore(5, vec![vec![0.0; 10]; 2], vec![vec![0.0; 15]; 2]);
        assert!(bad.is_err());
        let bad = c.restore(1, vec![vec![0.0; 2]; 2], vec![vec![0.0; 2]; 2]);
        assert!(bad.is_err());
        assert_eq!(c, before);
        c.restore(2, vec![vec![7.0; 4]; 2], vec![vec![8.0; 6]; 2])
            .unwrap();
        assert_eq!(c.layer_k(1), &[7.0; 4]);
        assert_eq!(c.len(), 2);
        assert!(c.check_shape(&[2, 2], &[3, 3]).is_ok());
        assert!(c.check_shape(&[2], &[3]).is_err());
    }
}

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

//! The KV cache: f32 rows on the host, token-major per layer (spec/runtime.md §2), and on the GPU
//! backend a GPU copy that a GPU forward makes authoritative.
//!
//! Layer `l` holds K as `[len][Hkv·hd]` and V as `[len][Hkv·hd_v]`, each KV head of a row
//! contiguous, so the used prefix is one contiguous slice. `capacity` is the logical context size
//! chosen at creation; host memory grows with use (a 4096-token SmolLM2 cache is 190 MB in f32,
//! and the wasm heap should not pay for it up front). Rows at `[len, ..)` may hold stale data
//! from a failed or truncated forward; reads are bounded by `len`.
//!
//! Two copies, one owner of their sync (this file). The host rows are valid for `[0, host_len)`,
//! the GPU copy ([`GpuKv`], allocated at full capacity on the first GPU forward, f16 pairs or f32
//! as `shaders/kv.wgsl` says) for `[0, gpu.len)`; one of them always covers `[0, len)`:
//! - a GPU forward writes its rows on the GPU only (nothing is read back but the logits or the
//!   argmax id); before it, `KvCache::prepare_gpu` uploads the host rows the GPU lacks;
//! - a CPU forward first reads back the rows the host lacks ([`KvCache::sync_host`]), then
//!   writes host rows only;
//! - truncate, clear and prefix reuse only move the lengths; a restore or loaded state replaces
//!   the host rows and the next GPU forward uploads them;
//! - reading the rows ([`KvCache::layer_k`]: snapshots, saved states) needs the host copy
//!   current: [`KvCache::sync_host`] reads back only the missing rows, once.
//!
//! With f16 storage the GPU rounds every row it holds (as llama.cpp's default f16 cache does);
//! rows read back are those rounded values, widened exactly to f32.

use crate::backend::gpu::{attn, block_on, GpuContext};
use crate::error::{GpuError, ModelError, Result, SessionError};
use std::sync::Arc;

/// f32 K/V rows of every layer for one sequence (see the module doc for the GPU copy).
pub struct KvCache {
    capacity: usize,
    len: usize,
    k_row: Vec<usize>,
    v_row: Vec<usize>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Host rows `[0, host_len)` are current.
    host_len: usize,
    pub(crate) gpu: GpuMirror,
}

/// Per-layer K and V buffers on one device, `[capacity][words per row]` in the device's KV
/// storage (`attn::kv_row_words`: f16 pairs or f32).
pub struct GpuKv {
    ctx: Arc<GpuContext>,
    /// Rows are f16 pairs (else f32), as `ctx.kv_f16` was when they were made.
    f16: bool,
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
}

/// The GPU copy of a cache, valid for rows `[0, len)`.
#[derive(Default)]
pub(crate) struct GpuMirror {
    pub kv: Option<GpuKv>,
    pub len: usize,
}

impl Clone for KvCache {
    /// A cache with the same rows. Where the host lacks rows, the GPU copy is cloned on the GPU
    /// (recorded and submitted, never read back; a device error surfaces at the next check);
    /// otherwise the clone has no GPU copy (it must not share GPU memory with the original).
    fn clone(&self) -> Self {
        let gpu = match &self.gpu.kv {
            Some(kv) if self.host_len < self.len => GpuMirror {
                kv: Some(kv.duplicate(self.gpu.len, &self.k_row, &self.v_row)),
                len: self.gpu.len,
            },
            _ => GpuMirror::default(),
        };
        KvCache {
            capacity: self.capacity,
            len: self.len,
            k_row: self.k_row.clone(),
            v_row: self.v_row.clone(),
            k: self.k.clone(),
            v: self.v.clone(),
            host_len: self.host_len,
            gpu,
        }
    }
}

impl PartialEq for KvCache {
    /// Same shape, length and host rows. A cache whose rows are on the GPU only equals no
    /// cache: [`KvCache::sync_host`] first.
    fn eq(&self, o: &Self) -> bool {
        let current = |c: &KvCache| c.host_len == c.len;
        current(self)
            && current(o)
            && (self.capacity, self.len) == (o.capacity, o.len)
            && (&self.k_row, &self.v_row) == (&o.k_row, &o.v_row)
            && (0..self.n_layer()).all(|l| {
                self.k_rows(l, self.len) == o.k_rows(l, o.len)
                    && self.v_rows(l, self.len) == o.v_rows(l, o.len)
            })
    }
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .field("host_len", &self.host_len)
            .field("gpu_len", &self.gpu.len)
            .finish_non_exhaustive()
    }
}

impl GpuKv {
    /// Buffers for `capacity` rows of `k_row`/`v_row` elements per layer on `ctx`.
    fn new(
        ctx: &Arc<GpuContext>,
        capacity: usize,
        k_row: &[usize],
        v_row: &[usize],
    ) -> Result<GpuKv> {
        let f16 = ctx.kv_f16;
        let buffer = |what: &str, l: usize, row: usize| -> Result<wgpu::Buffer> {
            let bytes = (capacity * attn::kv_row_words(ctx, row) * 4) as u64;
            if bytes > ctx.max_binding {
                return Err(GpuError::TooLarge {
                    name: format!("KV cache {what} of layer {l} ({capacity} tokens)"),
                    needed: bytes,
                    limit: ctx.max_binding,
                }
                .into());
            }
            Ok(ctx.storage(what, bytes))
        };
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for (l, (&kr, &vr)) in k_row.iter().zip(v_row).enumerate() {
            k.push(buffer("kv_k", l, kr)?);
            v.push(buffer("kv_v", l, vr)?);
        }
        Ok(GpuKv {
            ctx: ctx.clone(),
            f16,
            k,
            v,
        })
    }

    /// Bytes of one row of `n` elements.
    fn row_bytes(&self, n: usize) -> u64 {
        row_bytes(n, self.f16) as u64
    }

    /// New buffers holding the first `rows` rows of these (copied on the GPU).
    fn duplicate(&self, rows: usize, k_row: &[usize], v_row: &[usize]) -> GpuKv {
        let ctx = &self.ctx;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let mut copy = |src: &wgpu::Buffer, row: usize| {
            let dst = ctx.storage("kv", src.size());
            let bytes = self.row_bytes(row) * rows as u64;
            if bytes > 0 {
                enc.copy_buffer_to_buffer(src, 0, &dst, 0, bytes);
            }
            dst
        };
        let k: Vec<_> = self.k.iter().zip(k_row).map(|(b, &r)| copy(b, r)).collect();
        let v: Vec<_> = self.v.iter().zip(v_row).map(|(b, &r)| copy(b, r)).collect();
        ctx.queue.submit([enc.finish()]);
        GpuKv {
            ctx: ctx.clone(),
            f16: self.f16,
            k,
            v,
        }
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
            host_len: 0,
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

    /// Rows whose host copy is current (`len` unless a GPU forward wrote the rest).
    pub fn host_rows(&self) -> usize {
        self.host_len.min(self.len)
    }

    /// Rows whose GPU copy is current (0 without one).
    pub fn gpu_rows(&self) -> usize {
        if self.gpu.kv.is_some() {
            self.gpu.len.min(self.len)
        } else {
            0
        }
    }

    /// Forget every token from `n` on (`n ≥ len` is a no-op). O(1): rows are not zeroed, and
    /// neither copy is touched.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
        self.host_len = self.host_len.min(n);
        self.gpu.len = self.gpu.len.min(n);
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The first `len` K rows of `layer`, `[len][k_row]`. The host copy must be current
    /// ([`KvCache::sync_host`] after a GPU forward), else [`SessionError::BadState`].
    pub fn layer_k(&self, layer: usize) -> Result<&[f32]> {
        self.check_host()?;
        Ok(self.k_rows(layer, self.len))
    }

    /// The first `len` V rows of `layer`, `[len][v_row]` (see [`KvCache::layer_k`]).
    pub fn layer_v(&self, layer: usize) -> Result<&[f32]> {
        self.check_host()?;
        Ok(self.v_rows(layer, self.len))
    }

    fn check_host(&self) -> Result<()> {
        if self.host_len < self.len {
            return Err(SessionError::BadState(format!(
                "K/V rows {}..{} are on the GPU only: KvCache::sync_host first",
                self.host_len, self.len
            ))
            .into());
        }
        Ok(())
    }

    /// Makes the host copy current: reads back the rows only the GPU has, once (one copy of
    /// every layer's missing rows into one staging buffer, one mapping). Blocks natively; in
    /// the browser use [`KvCache::sync_host_async`].
    pub fn sync_host(&mut self) -> Result<()> {
        block_on(self.sync_host_async())
    }

    /// [`KvCache::sync_host`], awaited.
    pub async fn sync_host_async(&mut self) -> Result<()> {
        let (from, to) = (self.host_len, self.len);
        if from >= to {
            return Ok(());
        }
        let kv = match &self.gpu.kv {
            Some(kv) if self.gpu.len >= to => kv,
            _ => {
                return Err(GpuError::Readback(format!(
                    "K/V rows {from}..{to} are on neither the host nor the GPU"
                ))
                .into())
            }
        };
        let ctx = kv.ctx.clone();
        let n = to - from;
        // Every layer's K rows then V rows, back to back in one staging buffer.
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let bufs: Vec<(&wgpu::Buffer, usize)> = (0..self.n_layer())
            .flat_map(|l| [(&kv.k[l], self.k_row[l]), (&kv.v[l], self.v_row[l])])
            .collect();
        let total: u64 = bufs
            .iter()
            .map(|&(_, row)| kv.row_bytes(row) * n as u64)
            .sum();
        let staging = ctx.staging(total);
        let mut at = 0;
        for &(buf, row) in &bufs {
            let bytes = kv.row_bytes(row) * n as u64;
            if bytes > 0 {
                enc.copy_buffer_to_buffer(
                    buf,
                    kv.row_bytes(row) * from as u64,
                    &staging,
                    at,
                    bytes,
                );
            }
            at += bytes;
        }
        ctx.queue.submit([enc.finish()]);
        let f16 = kv.f16;
        let host = ctx.map_staging(staging, total).await?;
        let mut rest = host.as_slice();
        for l in 0..self.n_layer() {
            for (buf, row) in [
                (&mut self.k[l], self.k_row[l]),
                (&mut self.v[l], self.v_row[l]),
            ] {
                let (bytes, tail) = rest.split_at(n * row_bytes(row, f16));
                rest = tail;
                put_rows(buf, row, from, &decode_rows(bytes, row, f16));
            }
        }
        self.host_len = to;
        Ok(())
    }

    /// Makes the GPU copy on `ctx` current before a GPU forward: allocates it (once, at full
    /// capacity; a copy on another device or in another storage is first synced to the host
    /// and dropped) and uploads the host rows it lacks.
    pub(crate) async fn prepare_gpu(&mut self, ctx: &Arc<GpuContext>) -> Result<()> {
        let foreign = self
            .gpu
            .kv
            .as_ref()
            .is_some_and(|kv| !Arc::ptr_eq(&kv.ctx, ctx) || kv.f16 != ctx.kv_f16);
        if foreign {
            self.sync_host_async().await?;
            self.gpu = GpuMirror::default();
        }
        if self.gpu.kv.is_none() {
            self.gpu.kv = Some(GpuKv::new(ctx, self.capacity, &self.k_row, &self.v_row)?);
            self.gpu.len = 0;
        }
        let (from, to) = (self.gpu.len, self.len);
        if from < to {
            debug_assert!(self.host_len >= to, "one copy always covers [0, len)");
            let kv = self.gpu.kv.as_ref().expect("allocated above");
            for l in 0..self.n_layer() {
                for (buf, host, row) in [
                    (&kv.k[l], &self.k[l], self.k_row[l]),
                    (&kv.v[l], &self.v[l], self.v_row[l]),
                ] {
                    let rows = &host[from * row..to * row];
                    let bytes = encode_rows(rows, row, kv.f16);
                    ctx.write(buf, kv.row_bytes(row) * from as u64, &bytes);
                }
            }
        }
        self.gpu.len = to;
        ctx.check()
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
        self.host_len = len;
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

    /// Write host rows of K and V of `layer` at positions `[pos0, pos0 + n)` (beyond `len`; made
    /// visible by [`KvCache::commit_host`]). The host rows before `pos0` must be current (a CPU
    /// forward syncs first); the GPU copy no longer covers `pos0..`.
    pub(crate) fn write(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        debug_assert!(
            self.host_len >= pos0,
            "host rows synced before a CPU forward"
        );
        debug_assert!(pos0 + k.len() / self.k_row[layer].max(1) <= self.capacity);
        self.gpu.len = self.gpu.len.min(pos0);
        put_rows(&mut self.k[layer], self.k_row[layer], pos0, k);
        put_rows(&mut self.v[layer], self.v_row[layer], pos0, v);
    }

    /// K rows `[0, n)` of `layer`, including rows written but not yet committed.
    pub(crate) fn k_rows(&self, layer: usize, n: usize) -> &[f32] {
        &self.k[layer][..n * self.k_row[layer]]
    }

    pub(crate) fn v_rows(&self, layer: usize, n: usize) -> &[f32] {
        &self.v[layer][..n * self.v_row[layer]]
    }

    /// Make rows up to `len` visible after a CPU forward wrote them on the host.
    pub(crate) fn commit_host(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
        self.host_len = len;
    }

    /// Make rows up to `len` visible after a GPU forward wrote them on the GPU (the host copy
    /// stays behind until [`KvCache::sync_host`]).
    pub(crate) fn commit_gpu(&mut self, len: usize) {
        debug_assert!(len <= self.capacity && self.gpu.kv.is_some());
        self.len = len;
        self.gpu.len = len;
        self.host_len = self.host_len.min(len);
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

/// Bytes of one GPU row of `n` elements (f16 pairs padded to a word, or f32).
fn row_bytes(n: usize, f16: bool) -> usize {
    if f16 {
        n.div_ceil(2) * 4
    } else {
        n * 4
    }
}

/// Writes `rows` (whole rows of `row` floats) into `buf` from row `pos0`, growing it.
fn put_rows(buf: &mut Vec<f32>, row: usize, pos0: usize, rows: &[f32]) {
    let (start, end) = (pos0 * row, pos0 * row + rows.len());
    if buf.len() < end {
        buf.resize(end, 0.0);
    }
    buf[start..end].copy_from_slice(rows);
}

/// Host rows of `row` floats in the GPU's storage: f16 pairs (round to nearest even, as
/// ggml_fp32_to_fp16; a row of odd length padded with 0), or f32 as is. Little-endian bytes.
fn encode_rows(rows: &[f32], row: usize, f16: bool) -> Vec<u8> {
    if !f16 {
        return bytemuck::cast_slice(rows).to_vec();
    }
    let mut out = Vec::with_capacity(rows.len() / row.max(1) * row_bytes(row, true));
    for r in rows.chunks_exact(row.max(1)) {
        for pair in r.chunks(2) {
            for &x in pair {
                out.extend_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes());
            }
            if pair.len() == 1 {
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    out
}

/// The inverse of [`encode_rows`]: GPU rows back to f32 (f16 widened exactly).
fn decode_rows(bytes: &[u8], row: usize, f16: bool) -> Vec<f32> {
    if !f16 {
        return bytemuck::pod_collect_to_vec(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() / row_bytes(row, true).max(1) * row);
    for r in bytes.chunks_exact(row_bytes(row, true).max(1)) {
        out.extend(
            r.chunks_exact(2)
                .take(row)
                .map(|h| crate::quant::f16_to_f32([h[0], h[1]])),
        );
    }
    out
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
        assert!(c.layer_k(0).unwrap().is_empty());
        c.commit_host(2);
        assert_eq!(c.layer_k(0).unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(c.layer_v(1).unwrap(), &[2.0; 6]);
        c.truncate(1);
        assert_eq!(c.layer_k(0).unwrap(), &[1.0, 2.0]);
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
        assert_eq!(c.layer_k(1).unwrap(), &[7.0; 4]);
        assert_eq!(c.len(), 2);
        assert!(c.check_shape(&[2, 2], &[3, 3]).is_ok());
        assert!(c.check_shape(&[2], &[3]).is_err());
        assert_eq!((c.host_rows(), c.gpu_rows()), (2, 0));
    }

    #[test]
    fn gpu_row_codec() {
        // Odd rows are padded to whole words; f16 rounds to nearest even.
        let rows = [1.0, -2.5, 1.0 + 2f32.powi(-11), 65504.0, 3.0, 1e-8];
        let b = encode_rows(&rows, 3, true);
        assert_eq!(b.len(), 2 * row_bytes(3, true));
        assert_eq!(
            &b[4..8],
            &[0, 0x3c, 0, 0],
            "1 + 2^-11 ties to even 1.0, then the pad"
        );
        let back = decode_rows(&b, 3, true);
        let want: Vec<f32> = rows
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect();
        assert_eq!(back, want);
        assert_eq!(decode_rows(&encode_rows(&rows, 3, false), 3, false), rows);
    }
}

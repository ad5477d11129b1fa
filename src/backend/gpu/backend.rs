//! The GPU implementation of [`Backend`]: the generic decoder's ops recorded into one command
//! encoder per forward chunk (STYLE.md practice 9), submitted when the logits are read.
//!
//! [`GpuModel`] holds the device and every weight uploaded once ([`super::layout`]); a
//! [`GpuBackend`] lives for one chunk. Ops that cannot fail in the trait record their first
//! error and [`Backend::read`] / [`GpuBackend::finish`] report it. The KV cache's GPU copy is
//! brought up to date before the chunk (`KvCache::prepare_gpu`) and the chunk writes its K/V
//! rows there only: nothing but the logits or the argmax ids is read back (model/kv.rs owns the
//! sync with the host rows).

use super::attn;
use super::context::{block_on, GpuContext, Recorder};
use super::layout::{upload, GpuWeight};
use super::ops::{self, Fuse};
use crate::backend::{AttnParams, Backend, RopeFreqs, RopeParams};
use crate::error::{GpuError, ModelError, Result};
use crate::model::arch::Activation;
use crate::model::kv::GpuKv;
use crate::model::{KvCache, Qkv, Vector, Weight, Weights};
use crate::quant::{GgmlType, TensorView};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One layer kind's RoPE cos/sin table.
struct RopeTable {
    freqs: RopeFreqs,
    attn_factor: f32,
    n_pos: usize,
    buf: wgpu::Buffer,
}

/// Free activation buffers by size: a forward's tensors come from here and go back when
/// dropped, so every token of a decode records on the same buffers (and finds its bind groups
/// cached). Last in, first out, so the order is the same each token.
type ActPool = Arc<Mutex<HashMap<u64, Vec<wgpu::Buffer>>>>;

/// A model's weights on one device.
pub struct GpuModel {
    /// Shared with the KV caches whose GPU copy lives on this device (model/kv.rs).
    pub ctx: Arc<GpuContext>,
    weights: HashMap<String, GpuWeight>,
    /// Names of matrices uploaded inside a joined weight (a layer's gate+up, or q+k+v) →
    /// (the joined weight, first row, rows).
    halves: HashMap<String, (String, usize, usize)>,
    vectors: HashMap<String, wgpu::Buffer>,
    rope: Mutex<Vec<RopeTable>>,
    acts: ActPool,
    /// The token ids of a chunk (grown when a chunk needs more).
    ids: Mutex<Option<wgpu::Buffer>>,
}

/// Matrices on the GPU by name, and the names of those uploaded inside a joined weight (a layer's
/// gate+up, or q+k+v) → (the joined weight, first row, rows).
#[derive(Default)]
pub struct Uploads {
    weights: HashMap<String, GpuWeight>,
    halves: HashMap<String, (String, usize, usize)>,
}

impl Uploads {
    /// Uploads one group of matrices (see [`matrix_groups`]): as one weight where they join —
    /// the same type (not I2_S, which carries a tensor scale each), the same columns, one
    /// binding — else each alone. The one-token `norm_matmul` (q/k/v) and `norm_glu` then run
    /// one dispatch.
    pub fn add_group(&mut self, ctx: &GpuContext, views: &[TensorView]) -> Result<()> {
        let Some(v0) = views.first() else {
            return Ok(());
        };
        let ty = v0.ty();
        let joinable = views.len() > 1
            && ty != GgmlType::I2_S
            && views
                .iter()
                .all(|v| v.ty() == ty && v.ncols() == v0.ncols() && v.ne().len() == 2);
        let joined = if joinable {
            let bytes = views.iter().map(|v| v.data()).collect::<Vec<_>>().concat();
            let rows: usize = views.iter().map(|v| v.nrows()).sum();
            let ne = [v0.ncols() as u64, rows as u64];
            let name = format!("{}+{}", v0.name(), views.len());
            Some(upload(ctx, &TensorView::new(&name, ty, &ne, &bytes)?)?)
                .filter(|w| w.parts.len() == 1)
        } else {
            None
        };
        match joined {
            Some(jw) => {
                let mut first = 0;
                for v in views {
                    let rows = v.nrows();
                    self.halves
                        .insert(v.name().into(), (jw.name.clone(), first, rows));
                    first += rows;
                }
                self.weights.insert(jw.name.clone(), jw);
            }
            None => {
                for v in views {
                    self.weights.insert(v.name().into(), upload(ctx, v)?);
                }
            }
        }
        Ok(())
    }

    /// Whether matrix `name` is on the GPU.
    pub fn has(&self, name: &str) -> bool {
        self.weights.contains_key(name) || self.halves.contains_key(name)
    }
}

/// The matrices of `w` as they are uploaded: alone, or a layer's gate and up (and q, k and v
/// when separate) as a group that [`Uploads::add_group`] joins where it can.
pub fn matrix_groups(w: &Weights) -> Vec<Vec<&Weight>> {
    let mut g: Vec<Vec<&Weight>> = vec![vec![&w.token_embd]];
    g.extend(w.output.iter().map(|o| vec![o]));
    for l in &w.layers {
        match &l.qkv {
            Qkv::Fused(m) => g.push(vec![m]),
            Qkv::Separate { q, k, v } => g.push(vec![q, k, v]),
        }
        g.extend([vec![&l.wo], vec![&l.ffn_down], vec![&l.ffn_gate, &l.ffn_up]]);
    }
    g
}

impl GpuModel {
    /// Uploads every matrix and vector of `w` (`files[i]` = bytes of file `i`).
    pub fn new(ctx: GpuContext, w: &Weights, files: &[&[u8]]) -> Result<GpuModel> {
        let file = |m: &Weight| files.get(m.part).copied().unwrap_or(&[]);
        let mut up = Uploads::default();
        for ms in matrix_groups(w) {
            let views = ms
                .iter()
                .map(|m| m.view(file(m)))
                .collect::<Result<Vec<_>>>()?;
            up.add_group(&ctx, &views)?;
        }
        GpuModel::from_uploads(ctx, w, up)
    }

    /// The model on `ctx` from its matrices already uploaded (every one of `w`'s must be in
    /// `up`: else [`ModelError::MissingTensor`]); uploads the vectors.
    // wgpu's browser types are neither Send nor Sync; the browser runs this on one thread.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn from_uploads(ctx: GpuContext, w: &Weights, up: Uploads) -> Result<GpuModel> {
        if let Some(m) = matrix_groups(w)
            .into_iter()
            .flatten()
            .find(|m| !up.has(&m.name))
        {
            return Err(ModelError::MissingTensor(m.name.clone()).into());
        }
        let mut vecs: Vec<&Vector> = vec![&w.output_norm];
        vecs.extend(&w.output_bias);
        for l in &w.layers {
            vecs.extend([&l.attn_norm, &l.ffn_norm]);
            for v in [
                &l.q_bias,
                &l.k_bias,
                &l.v_bias,
                &l.q_norm,
                &l.k_norm,
                &l.wo_bias,
                &l.attn_sub_norm,
                &l.attn_post_norm,
                &l.ffn_gate_bias,
                &l.ffn_up_bias,
                &l.ffn_down_bias,
                &l.ffn_sub_norm,
                &l.ffn_post_norm,
            ] {
                vecs.extend(v);
            }
        }
        let vectors = vecs
            .into_iter()
            .map(|v| {
                let buf = ctx.storage_init(&v.name, bytemuck::cast_slice(&v.data));
                (v.name.clone(), buf)
            })
            .collect();
        ctx.check()?;
        Ok(GpuModel {
            ctx: Arc::new(ctx),
            weights: up.weights,
            halves: up.halves,
            vectors,
            rope: Mutex::new(Vec::new()),
            acts: ActPool::default(),
            ids: Mutex::new(None),
        })
    }

    /// GPU weights: a layer's joined gate+up or q+k+v counts once.
    pub fn weight_count(&self) -> usize {
        self.weights.len()
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.values().map(GpuWeight::bytes).sum()
    }

    fn weight(&self, w: &Weight) -> Result<&GpuWeight> {
        self.weights
            .get(&w.name)
            .ok_or_else(|| GpuError::Validation(format!("weight '{}' not uploaded", w.name)).into())
    }

    /// The GPU weight holding `w`'s rows, and which rows (`None`: all): a gate or up matrix
    /// may live in its layer's gate+up weight.
    fn rows_of(&self, w: &Weight) -> Result<(&GpuWeight, Option<(usize, usize)>)> {
        if let Some(gw) = self.weights.get(&w.name) {
            return Ok((gw, None));
        }
        let (joined, first, rows) = self
            .halves
            .get(&w.name)
            .ok_or_else(|| GpuError::Validation(format!("weight '{}' not uploaded", w.name)))?;
        Ok((&self.weights[joined], Some((*first, *rows))))
    }

    fn vector(&self, v: &Vector) -> Result<&wgpu::Buffer> {
        self.vectors
            .get(&v.name)
            .ok_or_else(|| GpuError::Validation(format!("vector '{}' not uploaded", v.name)).into())
    }

    /// The cos/sin table for `p` covering positions `[0, n_pos)`, made on first use.
    fn rope_table(&self, p: &RopeParams, n_pos: usize) -> wgpu::Buffer {
        let mut tables = self.rope.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables
            .iter()
            .find(|t| t.freqs == *p.freqs && t.attn_factor == p.attn_factor && t.n_pos >= n_pos)
        {
            return t.buf.clone();
        }
        let buf = attn::rope_table(&self.ctx, p.freqs, p.attn_factor, n_pos);
        tables.retain(|t| !(t.freqs == *p.freqs && t.attn_factor == p.attn_factor));
        tables.push(RopeTable {
            freqs: p.freqs.clone(),
            attn_factor: p.attn_factor,
            n_pos,
            buf: buf.clone(),
        });
        buf
    }
}

/// The GPU copy of a cache (`KvCache::prepare_gpu` makes it before every GPU forward).
fn gpu_kv(cache: &KvCache) -> Result<&GpuKv> {
    cache
        .gpu
        .kv
        .as_ref()
        .ok_or_else(|| GpuError::Validation("KV cache not on the GPU".into()).into())
}

/// A `[rows × cols]` f32 matrix on the GPU (its buffer goes back to the model's pool on drop).
pub struct GpuTensor {
    pub buf: wgpu::Buffer,
    pub rows: usize,
    pub cols: usize,
    pool: ActPool,
}

impl Drop for GpuTensor {
    fn drop(&mut self) {
        let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        p.entry(self.buf.size()).or_default().push(self.buf.clone());
    }
}

/// The ops of one forward chunk, recorded into one encoder.
pub struct GpuBackend<'a> {
    m: &'a GpuModel,
    enc: RefCell<Recorder>,
    err: RefCell<Option<crate::Error>>,
    /// Positions the RoPE tables must cover (the cache capacity).
    n_pos: usize,
    /// The chunk's token ids already on the GPU (a previous step's argmax): the embedding
    /// reads them there instead of the ids it is given.
    gpu_ids: Option<wgpu::Buffer>,
}

impl<'a> GpuBackend<'a> {
    pub fn new(m: &'a GpuModel, n_pos: usize) -> GpuBackend<'a> {
        GpuBackend {
            m,
            enc: RefCell::new(m.ctx.recorder()),
            err: RefCell::new(None),
            n_pos,
            gpu_ids: None,
        }
    }

    /// A backend whose chunk's token ids are read from `ids` on the GPU.
    pub fn with_gpu_ids(m: &'a GpuModel, n_pos: usize, ids: wgpu::Buffer) -> GpuBackend<'a> {
        GpuBackend {
            gpu_ids: Some(ids),
            ..GpuBackend::new(m, n_pos)
        }
    }

    /// Ends the chunk without waiting: the argmax of each row of `x` into `ids` (on the GPU,
    /// for the next step's [`GpuBackend::with_gpu_ids`]) and into a staging buffer, submitted.
    /// Returns the staging buffer and the submission, for [`GpuContext::map_staging_at`].
    pub fn submit_argmax(
        self,
        x: &GpuTensor,
        ids: &wgpu::Buffer,
    ) -> Result<(wgpu::Buffer, wgpu::SubmissionIndex)> {
        let scratch = self.tensor(1, ops::argmax_scratch(x.rows, x.cols));
        self.rec(|c, e| ops::argmax(c, e, &x.buf, x.rows, x.cols, &scratch.buf, ids));
        self.take_error()?;
        let mut enc = self.take_encoder();
        let bytes = (x.rows * 4) as u64;
        let staging = self.ctx().staging(bytes);
        enc.copy(ids, 0, &staging, 0, bytes);
        let at = self.ctx().submit(enc);
        self.ctx().check()?;
        Ok((staging, at))
    }

    fn ctx(&self) -> &GpuContext {
        &self.m.ctx
    }

    /// Records with the encoder, keeping the first error.
    fn rec(&self, f: impl FnOnce(&GpuContext, &mut Recorder) -> Result<()>) {
        if self.err.borrow().is_some() {
            return;
        }
        if let Err(e) = f(self.ctx(), &mut self.enc.borrow_mut()) {
            self.err.borrow_mut().get_or_insert(e);
        }
    }

    fn tensor(&self, rows: usize, cols: usize) -> GpuTensor {
        let size = ((rows * cols * 4) as u64).max(4).next_multiple_of(256);
        let pooled = {
            let mut p = self.m.acts.lock().unwrap_or_else(|p| p.into_inner());
            p.get_mut(&size).and_then(Vec::pop)
        };
        GpuTensor {
            buf: pooled.unwrap_or_else(|| self.ctx().storage("act", size)),
            rows,
            cols,
            pool: self.m.acts.clone(),
        }
    }

    /// `W·x` for each weight, `x` normalized first when `norm` is given.
    fn matmuls(
        &self,
        ws: &[&Weight],
        x: &GpuTensor,
        norm: Option<(&wgpu::Buffer, f32)>,
    ) -> Result<Vec<GpuTensor>> {
        // q, k and v of one joined weight: one dispatch (gemv for one token, gemm for a
        // prefill chunk; ops::matmul_split).
        if let [q, k, v] = ws {
            let (gw, r) = self.m.rows_of(q)?;
            let next = |w: &Weight, at: usize| -> Result<bool> {
                let (g, r) = self.m.rows_of(w)?;
                Ok(std::ptr::eq(g, gw) && r.is_some_and(|r| r.0 == at))
            };
            if let Some((first, nq)) = r {
                if next(k, first + nq)? && next(v, first + nq + k.rows)? {
                    let out = [q.rows, k.rows, v.rows].map(|n| self.tensor(x.rows, n));
                    let outs = [0, 1, 2].map(|i| (&out[i].buf, out[i].cols));
                    let t = x.rows;
                    self.rec(|c, e| ops::matmul_split(c, e, gw, &x.buf, t, first, outs, norm));
                    return Ok(out.into());
                }
            }
        }
        let mut out = Vec::with_capacity(ws.len());
        for w in ws {
            let (gw, rows) = self.m.rows_of(w)?;
            let n = rows.map_or(gw.rows, |r| r.1);
            let y = self.tensor(x.rows, n);
            let fuse = Fuse {
                norm,
                rows,
                ..Fuse::default()
            };
            self.rec(|c, e| ops::matmul(c, e, gw, &x.buf, x.rows, &y.buf, n, 0, fuse));
            out.push(y);
        }
        Ok(out)
    }

    /// Submits what is recorded and reads back `bytes` of `buf` in one copy to one staging
    /// buffer and one mapping, awaited (in the browser the event loop resolves it; natively the
    /// mapping's device poll blocks). The K/V rows stay on the GPU.
    async fn read_back(&self, (buf, bytes): (&wgpu::Buffer, u64)) -> Result<Vec<u8>> {
        self.take_error()?;
        let mut enc = self.take_encoder();
        let staging = self.ctx().staging(bytes);
        enc.copy(buf, 0, &staging, 0, bytes.next_multiple_of(4));
        self.ctx().submit(enc);
        self.ctx().map_staging(staging, bytes).await
    }

    /// [`Backend::read`], awaited: submits the chunk and copies `x` back (with the K/V rows).
    pub async fn read_async(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        let b = self
            .read_back((&x.buf, (x.rows * x.cols * 4) as u64))
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }

    /// [`Backend::read_argmax`], awaited: the argmax runs on the GPU and only the ids (with the
    /// K/V rows) come back.
    pub async fn read_argmax_async(&self, x: &GpuTensor) -> Result<Vec<u32>> {
        let ids = self.tensor(1, x.rows);
        let scratch = self.tensor(1, ops::argmax_scratch(x.rows, x.cols));
        self.rec(|c, e| ops::argmax(c, e, &x.buf, x.rows, x.cols, &scratch.buf, &ids.buf));
        let b = self.read_back((&ids.buf, (x.rows * 4) as u64)).await?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }

    /// The `k` best `(id, value)` of each row of `x`, best first ([`ops::top_k`]; NaN never,
    /// so a row may hold fewer), awaited: the selection runs on the GPU and only `8·k` bytes a
    /// row (with the K/V rows) come back.
    pub async fn read_top_k_async(&self, x: &GpuTensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let out = self.tensor(x.rows, 2 * k);
        let scratch = self.tensor(1, ops::top_k_scratch(x.rows, x.cols, k));
        let (rows, cols) = (x.rows, x.cols);
        self.rec(|c, e| ops::top_k(c, e, &x.buf, rows, cols, k, &scratch.buf, &out.buf));
        let b = self.read_back((&out.buf, (rows * k * 8) as u64)).await?;
        let w: Vec<u32> = bytemuck::pod_collect_to_vec(&b);
        Ok(w.chunks(2 * k)
            .map(|r| {
                r.chunks(2)
                    .filter(|p| p[1] != u32::MAX)
                    .map(|p| (p[1], f32::from_bits(p[0])))
                    .collect()
            })
            .collect())
    }

    fn take_encoder(&self) -> Recorder {
        let fresh = self.ctx().recorder();
        std::mem::replace(&mut *self.enc.borrow_mut(), fresh)
    }

    fn take_error(&self) -> Result<()> {
        match self.err.borrow_mut().take() {
            Some(e) => Err(e),
            None => self.ctx().check(),
        }
    }

    /// Submits what is still recorded (a chunk without logits has its K/V rows as its only
    /// result, on the GPU) and reports any error of the chunk. Never waits for the GPU.
    pub fn finish(self) -> Result<()> {
        self.take_error()?;
        self.ctx().submit(self.take_encoder());
        self.ctx().check()
    }
}

impl Backend for GpuBackend<'_> {
    type Tensor = GpuTensor;
    type Cache = KvCache;

    fn shape(&self, x: &GpuTensor) -> (usize, usize) {
        (x.rows, x.cols)
    }

    fn embed(&self, w: &Weight, ids: &[u32]) -> Result<GpuTensor> {
        let gw = self.m.weight(w)?;
        let y = self.tensor(ids.len(), gw.cols);
        // Written by the queue before the chunk runs: only the embedding reads it.
        let idb = match &self.gpu_ids {
            Some(b) => b.clone(),
            None => {
                let bytes = (ids.len() as u64 * 4).next_multiple_of(1024);
                let b = self.ctx().slot_buffer(&self.m.ids, "ids", bytes);
                self.ctx().write(&b, 0, bytemuck::cast_slice(ids));
                b
            }
        };
        self.rec(|c, e| ops::embed(c, e, gw, &idb, ids.len(), &y.buf));
        Ok(y)
    }

    fn matmul(&self, ws: &[&Weight], x: &GpuTensor) -> Result<Vec<GpuTensor>> {
        self.matmuls(ws, x, None)
    }

    fn add_bias(&self, x: &mut GpuTensor, b: &Vector) {
        self.rec(|c, e| {
            let bb = self.m.vector(b)?;
            ops::add_bias(c, e, &x.buf, bb, x.rows * x.cols, x.cols)
        });
    }

    fn scale(&self, x: &mut GpuTensor, s: f32) {
        self.rec(|c, e| ops::unary(c, e, "scale", &x.buf, x.rows * x.cols, s));
    }

    fn add(&self, x: &mut GpuTensor, y: &GpuTensor) {
        self.rec(|c, e| ops::add(c, e, &x.buf, &y.buf, x.rows * x.cols));
    }

    fn rms_norm(&self, x: &GpuTensor, w: Option<&Vector>, group: usize, eps: f32) -> GpuTensor {
        let y = self.tensor(x.rows, x.cols);
        self.rec(|c, e| {
            let wb = w.map(|w| self.m.vector(w)).transpose()?;
            ops::rms_norm(c, e, &x.buf, wb, &y.buf, x.rows * x.cols, group, eps)
        });
        y
    }

    fn rope(&self, x: &mut GpuTensor, pos0: usize, p: &RopeParams) {
        let table = self.m.rope_table(p, self.n_pos);
        let heads = x.cols / p.head_dim;
        self.rec(|c, e| {
            attn::rope(
                c, e, &x.buf, &table, x.rows, pos0, heads, p.head_dim, p.n_rot, p.style,
            )
        });
    }

    fn store_kv(
        &self,
        cache: &mut KvCache,
        layer: usize,
        pos0: usize,
        k: &GpuTensor,
        v: &GpuTensor,
    ) {
        self.rec(|c, e| {
            let kv = gpu_kv(cache)?;
            let dest = attn::KvDest {
                k: &kv.k[layer],
                v: &kv.v[layer],
            };
            let (bufs, cols) = ((&k.buf, &v.buf), (k.cols, v.cols));
            attn::store_kv(c, e, bufs, dest, k.rows, pos0, cols)
        });
    }

    fn rope_store_kv(
        &self,
        cache: &mut KvCache,
        layer: usize,
        pos0: usize,
        q: &mut GpuTensor,
        k: GpuTensor,
        v: &GpuTensor,
        p: &RopeParams,
    ) {
        let table = self.m.rope_table(p, self.n_pos);
        self.rec(|c, e| {
            let kv = gpu_kv(cache)?;
            let dest = attn::KvDest {
                k: &kv.k[layer],
                v: &kv.v[layer],
            };
            let heads = (q.cols / p.head_dim, k.cols, v.cols);
            let qkv = (&q.buf, &k.buf, &v.buf);
            attn::rope_kv(
                c, e, qkv, &table, dest, q.rows, pos0, heads, p.head_dim, p.n_rot, p.style,
            )
        });
    }

    /// One token (decode): the RoPE + KV write inside the attention dispatch
    /// (`attn::attention_rope_kv`); a prefill chunk records the default sequence.
    fn rope_kv_attention(
        &self,
        cache: &mut KvCache,
        layer: usize,
        pos0: usize,
        (mut q, k, v): (GpuTensor, GpuTensor, &GpuTensor),
        rope: &RopeParams,
        q_scale: Option<f32>,
        p: &AttnParams,
    ) -> GpuTensor {
        if q.rows != 1 {
            self.rope_store_kv(cache, layer, pos0, &mut q, k, v, rope);
            if let Some(s) = q_scale {
                self.scale(&mut q, s);
            }
            return self.attention(&q, cache, layer, pos0, p);
        }
        let table = self.m.rope_table(rope, self.n_pos);
        let o = self.tensor(q.rows, p.n_head * p.head_dim_v);
        let scratch = self.tensor(1, attn::attention_splits(q.rows, pos0, p).2.max(1));
        self.rec(|c, e| {
            let kv = gpu_kv(cache)?;
            let dest = attn::KvDest {
                k: &kv.k[layer],
                v: &kv.v[layer],
            };
            let qkv = (&q.buf, &k.buf, &v.buf);
            let rot = (rope.n_rot, rope.style, q_scale.unwrap_or(1.0));
            let (scr, rows) = (&scratch.buf, q.rows);
            attn::attention_rope_kv(c, e, qkv, &table, rot, dest, &o.buf, scr, rows, pos0, p)
        });
        o
    }

    fn attention(
        &self,
        q: &GpuTensor,
        cache: &KvCache,
        layer: usize,
        pos0: usize,
        p: &AttnParams,
    ) -> GpuTensor {
        let o = self.tensor(q.rows, p.n_head * p.head_dim_v);
        let scratch = self.tensor(1, attn::attention_splits(q.rows, pos0, p).2.max(1));
        self.rec(|c, e| {
            let kv = gpu_kv(cache)?;
            attn::attention(
                c,
                e,
                &q.buf,
                &kv.k[layer],
                &kv.v[layer],
                &o.buf,
                &scratch.buf,
                q.rows,
                pos0,
                p,
            )
        });
        o
    }

    fn glu(&self, gate: &GpuTensor, up: &GpuTensor, act: Activation) -> GpuTensor {
        let o = self.tensor(gate.rows, gate.cols);
        let n = gate.rows * gate.cols;
        self.rec(|c, e| ops::glu(c, e, &gate.buf, &up.buf, &o.buf, n, act));
        o
    }

    fn split_cols(&self, x: &GpuTensor, widths: &[usize]) -> Vec<GpuTensor> {
        let mut col0 = 0;
        widths
            .iter()
            .map(|&w| {
                let y = self.tensor(x.rows, w);
                self.rec(|c, e| ops::copy_cols(c, e, &x.buf, x.cols, col0, &y.buf, x.rows, w));
                col0 += w;
                y
            })
            .collect()
    }

    fn select_rows(&self, x: &GpuTensor, rows: &[usize]) -> GpuTensor {
        let y = self.tensor(rows.len(), x.cols);
        let rb = (x.cols * 4) as u64;
        let mut enc = self.enc.borrow_mut();
        for (i, &r) in rows.iter().enumerate() {
            enc.copy(&x.buf, r as u64 * rb, &y.buf, i as u64 * rb, rb);
        }
        y
    }

    fn softcap(&self, x: &mut GpuTensor, cap: f32) {
        self.rec(|c, e| ops::unary(c, e, "softcap", &x.buf, x.rows * x.cols, cap));
    }

    fn norm_matmul(
        &self,
        ws: &[&Weight],
        x: &GpuTensor,
        norm: (&Vector, f32),
    ) -> Result<Vec<GpuTensor>> {
        self.matmuls(ws, x, Some((self.m.vector(norm.0)?, norm.1)))
    }

    fn matmul_add(
        &self,
        w: &Weight,
        a: &GpuTensor,
        norm: Option<(&Vector, f32)>,
        acc: &mut GpuTensor,
    ) -> Result<()> {
        let (gw, rows) = self.m.rows_of(w)?;
        let fuse = Fuse {
            norm: norm
                .map(|(v, eps)| self.m.vector(v).map(|b| (b, eps)))
                .transpose()?,
            residual: true,
            rows,
            ..Fuse::default()
        };
        self.rec(|c, e| ops::matmul(c, e, gw, &a.buf, a.rows, &acc.buf, acc.cols, 0, fuse));
        Ok(())
    }

    fn norm_glu(
        &self,
        gate: &Weight,
        up: &Weight,
        x: &GpuTensor,
        norm: (&Vector, f32),
        act: Activation,
    ) -> Result<GpuTensor> {
        let joined = match (self.m.halves.get(&gate.name), self.m.halves.get(&up.name)) {
            (Some((j, 0, _)), Some((k, _, _))) if j == k => self.m.weights.get(j),
            _ => None,
        };
        let Some(gw) = joined.filter(|gw| gate.rows == up.rows && gw.rows == 2 * gate.rows) else {
            // Gate and up were uploaded apart.
            let mut gu = self.norm_matmul(&[gate, up], x, norm)?;
            let u = gu.pop().expect("two outputs");
            let g = gu.pop().expect("two outputs");
            return Ok(self.glu(&g, &u, act));
        };
        let fuse = Fuse {
            norm: Some((self.m.vector(norm.0)?, norm.1)),
            glu: Some(act),
            ..Fuse::default()
        };
        let n_ff = gw.rows / 2;
        let y = self.tensor(x.rows, n_ff);
        self.rec(|c, e| ops::matmul(c, e, gw, &x.buf, x.rows, &y.buf, n_ff, 0, fuse));
        Ok(y)
    }

    fn read_argmax(&self, x: &GpuTensor) -> Result<Vec<u32>> {
        block_on(self.read_argmax_async(x))
    }

    /// Blocks natively; in the browser only [`GpuBackend::read_async`] can read (a debug tap
    /// then sees nothing).
    fn read(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        block_on(self.read_async(x))
    }
}

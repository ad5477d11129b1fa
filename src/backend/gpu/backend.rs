//! The GPU implementation of [`Backend`]: the generic decoder's ops recorded into one command
//! encoder per forward chunk (STYLE.md practice 9), submitted when the logits are read.
//!
//! [`GpuModel`] holds the device and every weight uploaded once ([`super::layout`]); a
//! [`GpuBackend`] lives for one chunk. Ops that cannot fail in the trait record their first
//! error and [`Backend::read`] / [`GpuBackend::finish`] report it. The KV cache's GPU copy is
//! brought up to date before the chunk ([`prepare_cache`]) and the chunk's new K/V rows are
//! copied back to the host rows with the logits ([`GpuBackend::finish`]), so session state
//! (snapshots, saved states) stays host-side (model/kv.rs).

use super::context::GpuContext;
use super::layout::{upload, GpuWeight};
use super::{attn, ops};
use crate::backend::{AttnParams, Backend, RopeFreqs, RopeParams};
use crate::error::{GpuError, Result};
use crate::model::arch::Activation;
use crate::model::kv::GpuKv;
use crate::model::{KvCache, Qkv, Vector, Weight, Weights};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

/// One layer kind's RoPE cos/sin table.
struct RopeTable {
    freqs: RopeFreqs,
    attn_factor: f32,
    n_pos: usize,
    buf: wgpu::Buffer,
}

/// A model's weights on one device.
pub struct GpuModel {
    pub ctx: GpuContext,
    weights: HashMap<String, GpuWeight>,
    vectors: HashMap<String, wgpu::Buffer>,
    rope: Mutex<Vec<RopeTable>>,
}

impl GpuModel {
    /// Uploads every matrix and vector of `w` (`files[i]` = bytes of file `i`).
    pub fn new(ctx: GpuContext, w: &Weights, files: &[&[u8]]) -> Result<GpuModel> {
        let mut mats: Vec<&Weight> = vec![&w.token_embd];
        mats.extend(&w.output);
        let mut vecs: Vec<&Vector> = vec![&w.output_norm];
        vecs.extend(&w.output_bias);
        for l in &w.layers {
            match &l.qkv {
                Qkv::Separate { q, k, v } => mats.extend([q, k, v]),
                Qkv::Fused(m) => mats.push(m),
            }
            mats.extend([&l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down]);
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
        let mut weights = HashMap::new();
        for m in mats {
            let file = files.get(m.part).copied().unwrap_or(&[]);
            weights.insert(m.name.clone(), upload(&ctx, &m.view(file)?)?);
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
            ctx,
            weights,
            vectors,
            rope: Mutex::new(Vec::new()),
        })
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

/// Allocates the cache's GPU copy (once, at full capacity) and uploads the host rows it lacks.
pub fn prepare_cache(ctx: &GpuContext, cache: &mut KvCache) -> Result<()> {
    let n = cache.n_layer();
    if cache.gpu.kv.is_none() {
        let cap = cache.capacity() as u64;
        let (mut k, mut v) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for l in 0..n {
            let (kr, vr) = cache.row_len(l);
            k.push(ctx.storage("kv_k", cap * kr as u64 * 4));
            v.push(ctx.storage("kv_v", cap * vr as u64 * 4));
        }
        cache.gpu.kv = Some(GpuKv { k, v });
        cache.gpu.len = 0;
    }
    let (from, to) = (cache.gpu.len, cache.len());
    if from < to {
        let kv = cache.gpu.kv.as_ref().expect("allocated above");
        for l in 0..n {
            let (kr, vr) = cache.row_len(l);
            let (k, v) = (cache.layer_k(l), cache.layer_v(l));
            ctx.write(
                &kv.k[l],
                (from * kr * 4) as u64,
                bytemuck::cast_slice(&k[from * kr..]),
            );
            ctx.write(
                &kv.v[l],
                (from * vr * 4) as u64,
                bytemuck::cast_slice(&v[from * vr..]),
            );
        }
    }
    cache.gpu.len = to;
    ctx.check()
}

/// A `[rows × cols]` f32 matrix on the GPU.
pub struct GpuTensor {
    pub buf: wgpu::Buffer,
    pub rows: usize,
    pub cols: usize,
}

/// K/V rows of one layer being copied back to the host.
struct KvReadback {
    layer: usize,
    pos0: usize,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    k_len: usize,
    v_len: usize,
}

/// The ops of one forward chunk, recorded into one encoder.
pub struct GpuBackend<'a> {
    m: &'a GpuModel,
    enc: RefCell<wgpu::CommandEncoder>,
    err: RefCell<Option<crate::Error>>,
    kv_back: RefCell<Vec<KvReadback>>,
    /// Positions the RoPE tables must cover (the cache capacity).
    n_pos: usize,
}

impl<'a> GpuBackend<'a> {
    pub fn new(m: &'a GpuModel, n_pos: usize) -> GpuBackend<'a> {
        GpuBackend {
            m,
            enc: RefCell::new(m.ctx.device.create_command_encoder(&Default::default())),
            err: RefCell::new(None),
            kv_back: RefCell::new(Vec::new()),
            n_pos,
        }
    }

    fn ctx(&self) -> &GpuContext {
        &self.m.ctx
    }

    /// Records with the encoder, keeping the first error.
    fn rec(&self, f: impl FnOnce(&GpuContext, &mut wgpu::CommandEncoder) -> Result<()>) {
        if self.err.borrow().is_some() {
            return;
        }
        if let Err(e) = f(self.ctx(), &mut self.enc.borrow_mut()) {
            self.err.borrow_mut().get_or_insert(e);
        }
    }

    fn tensor(&self, rows: usize, cols: usize) -> GpuTensor {
        GpuTensor {
            buf: self.ctx().storage("act", (rows * cols * 4) as u64),
            rows,
            cols,
        }
    }

    fn take_encoder(&self) -> wgpu::CommandEncoder {
        let fresh = self
            .ctx()
            .device
            .create_command_encoder(&Default::default());
        std::mem::replace(&mut *self.enc.borrow_mut(), fresh)
    }

    fn take_error(&self) -> Result<()> {
        match self.err.borrow_mut().take() {
            Some(e) => Err(e),
            None => self.ctx().check(),
        }
    }

    /// Submits what is still recorded, copies the chunk's K/V rows to the host rows of
    /// `cache` and reports any error of the chunk.
    pub fn finish(self, cache: &mut KvCache) -> Result<()> {
        self.take_error()?;
        let ctx = self.ctx();
        ctx.queue.submit([self.take_encoder().finish()]);
        for r in self.kv_back.take() {
            let k = read_mapped(ctx, &r.k, r.k_len)?;
            let v = read_mapped(ctx, &r.v, r.v_len)?;
            cache.write_host(r.layer, r.pos0, &k, &v);
        }
        ctx.check()
    }
}

/// The first `n` f32 of a staging buffer whose copy was submitted.
#[cfg(not(target_arch = "wasm32"))]
fn read_mapped(ctx: &GpuContext, buf: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
    let b = pollster::block_on(ctx.map_staging(buf, n as u64 * 4))?;
    Ok(bytemuck::pod_collect_to_vec(&b))
}

/// The browser cannot wait for a mapping inside a synchronous call.
#[cfg(target_arch = "wasm32")]
fn read_mapped(_: &GpuContext, _: &wgpu::Buffer, _: usize) -> Result<Vec<f32>> {
    Err(GpuError::Readback("synchronous readback is native-only".into()).into())
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
        let idb = self.ctx().storage_init("ids", bytemuck::cast_slice(ids));
        self.rec(|c, e| ops::embed(c, e, gw, &idb, ids.len(), &y.buf));
        Ok(y)
    }

    fn matmul(&self, ws: &[&Weight], x: &GpuTensor) -> Result<Vec<GpuTensor>> {
        let mut out = Vec::with_capacity(ws.len());
        for w in ws {
            let gw = self.m.weight(w)?;
            let y = self.tensor(x.rows, gw.rows);
            self.rec(|c, e| ops::matmul(c, e, gw, &x.buf, x.rows, &y.buf, gw.rows, 0));
            out.push(y);
        }
        Ok(out)
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
        let Some(kv) = cache.gpu.kv.as_ref() else {
            self.err
                .borrow_mut()
                .get_or_insert(GpuError::Validation("KV cache not on the GPU".into()).into());
            return;
        };
        let (kb, vb) = ((k.rows * k.cols * 4) as u64, (v.rows * v.cols * 4) as u64);
        let size = kb.max(vb);
        let (ks, vs) = (
            self.ctx().staging("kv_back_k", size),
            self.ctx().staging("kv_back_v", size),
        );
        {
            let mut enc = self.enc.borrow_mut();
            enc.copy_buffer_to_buffer(&k.buf, 0, &kv.k[layer], (pos0 * k.cols * 4) as u64, kb);
            enc.copy_buffer_to_buffer(&v.buf, 0, &kv.v[layer], (pos0 * v.cols * 4) as u64, vb);
            enc.copy_buffer_to_buffer(&k.buf, 0, &ks, 0, kb);
            enc.copy_buffer_to_buffer(&v.buf, 0, &vs, 0, vb);
        }
        self.kv_back.borrow_mut().push(KvReadback {
            layer,
            pos0,
            k: ks,
            v: vs,
            k_len: k.rows * k.cols,
            v_len: v.rows * v.cols,
        });
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
        self.rec(|c, e| {
            let kv = cache
                .gpu
                .kv
                .as_ref()
                .ok_or_else(|| GpuError::Validation("KV cache not on the GPU".into()))?;
            attn::attention(
                c,
                e,
                &q.buf,
                &kv.k[layer],
                &kv.v[layer],
                &o.buf,
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
            enc.copy_buffer_to_buffer(&x.buf, r as u64 * rb, &y.buf, i as u64 * rb, rb);
        }
        y
    }

    fn softcap(&self, x: &mut GpuTensor, cap: f32) {
        self.rec(|c, e| ops::unary(c, e, "softcap", &x.buf, x.rows * x.cols, cap));
    }

    fn read(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        self.take_error()?;
        let enc = self.take_encoder();
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.ctx()
                .read_f32_blocking(Some(enc), &x.buf, 0, x.rows * x.cols)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (enc, x);
            Err(
                GpuError::Readback("blocking reads are native-only; use the async path".into())
                    .into(),
            )
        }
    }
}

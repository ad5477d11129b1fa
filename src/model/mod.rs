//! Models: the architecture table, the spec built from metadata and shapes, weights by role, the
//! KV cache and the generic decoder, behind [`Model`] (spec/architectures.md, runtime.md §1–§4).
//!
//! [`Model`] owns the GGUF bytes and runs on the CPU reference backend
//! ([`crate::backend::cpu`]). The session layer (KV ownership policy, sampling, prefix reuse)
//! sits above it; the GPU backend implements the same [`crate::backend::Backend`] ops.
//!
//! Out of scope here: MoE, MLA and recurrent layers; an f16 KV cache on the CPU (the GPU's is
//! f16 by default, see [`kv`]); YaRN and LongRoPE scaling (a file asking for them is refused at
//! load).

pub mod arch;
mod decoder;
pub mod kv;
pub mod spec;
pub mod stream;
pub mod tap;
pub mod weights;

pub use arch::ArchSpec;
pub use kv::KvCache;
pub use spec::{LayerSpec, ModelSpec, RopeScaling, RopeSpec};
pub use stream::GpuLoader;
pub use tap::{TapEvent, TapFilter};
pub use weights::{LayerWeights, Qkv, Scales, Vector, Weight, Weights};

use crate::backend::cpu::{pool, CpuBackend, Kernel, Pool};
use crate::backend::gpu::{block_on, GpuBackend, GpuContext, GpuModel, GpuOptions, Uploads};
use crate::backend::{Backend, BatchOrder};
use crate::error::{ModelError, Result};
use crate::gguf::split::SplitPart;
use crate::gguf::{GgufHeader, Limits, Metadata, SplitSet};
use std::collections::HashMap;
use std::path::Path;
use weights::{Source, Table};

/// Tokens per internal forward chunk: bounds the scratch (activations are `[chunk × n_ff]`).
/// Chunking never changes results beyond f32 rounding (tested).
pub const MAX_UBATCH: usize = 512;

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// None: only the KV cache advances.
    None,
    /// The last token of the call.
    Last,
    /// Every token of the call.
    All,
}

/// What [`Model::run`] returns: the selected rows' logits, their argmax, or their top k.
#[derive(Default)]
struct RunOut {
    logits: Vec<f32>,
    ids: Vec<u32>,
    top: Vec<Vec<(u32, f32)>>,
}

/// What [`Model::run`] reads back for the selected rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    Logits,
    Argmax,
    /// The `k` best `(id, logit)` of each row ([`crate::backend::cpu::ops::top_k`]).
    TopK(usize),
}

/// What one chunk read back for its selected rows.
enum Rows {
    Logits(Vec<f32>),
    Argmax(Vec<u32>),
    TopK(Vec<Vec<(u32, f32)>>),
    /// No rows were selected.
    None,
}

/// A loaded model: the file bytes, its spec and its weights (views into the bytes).
pub struct Model {
    /// The bytes of each file (one unless a split set).
    files: Vec<Vec<u8>>,
    metadata: Metadata,
    spec: ModelSpec,
    weights: Weights,
    pool: Pool,
    kernel: Kernel,
    tap_env: Option<TapFilter>,
    batch_order: BatchOrder,
    /// The weights on a GPU, when the model runs there ([`Model::attach_gpu`]).
    gpu: Option<GpuModel>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("spec", &self.spec)
            .field("threads", &self.pool.n_threads())
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

/// The spec and the weights of a validated file set, the tensors' bytes read from `src` (the
/// small ones decoded, the matrices checked).
fn spec_and_weights(set: &SplitSet, src: &Source) -> Result<(ModelSpec, Weights)> {
    let table = Table::new(
        &set.parts
            .iter()
            .map(|p| (p.header.tensors.as_slice(), p.header.data_offset))
            .collect::<Vec<_>>(),
    );
    let md = set.metadata();
    let rope_freqs = match table.shape("rope_freqs.weight") {
        Some(ne) => {
            let n = ne.first().copied().unwrap_or(0) as usize;
            Some(src.dequantize(&table.req("rope_freqs.weight", &[n])?)?)
        }
        None => None,
    };
    let spec = ModelSpec::build(md, &table, rope_freqs.as_deref())?;
    let weights = Weights::load(&spec, &table, src)?;
    Ok((spec, weights))
}

impl Model {
    /// Parses and validates a whole GGUF file held in memory, builds the spec and checks every
    /// tensor the architecture needs.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Model> {
        Model::from_parts(vec![bytes])
    }

    /// The files of a split set, in order (`…-00001-of-N` first); one file is a plain model.
    pub fn from_parts(files: Vec<Vec<u8>>) -> Result<Model> {
        let mut parts = Vec::with_capacity(files.len());
        for bytes in &files {
            let header = GgufHeader::parse(bytes, bytes.len() as u64, Limits::default())?;
            header.validate_data((bytes.len() as u64).saturating_sub(header.data_offset))?;
            parts.push(SplitPart {
                header,
                file_len: bytes.len() as u64,
            });
        }
        let set = SplitSet::from_parts(parts)?;
        let slices: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).collect();
        let (spec, weights) = spec_and_weights(&set, &Source::Files(&slices))?;
        Ok(Model::assemble(files, set, spec, weights, None))
    }

    /// A model whose matrices were streamed to the GPU ([`GpuLoader`]): `host` holds the bytes of
    /// its small tensors by name, `uploads` the matrices.
    fn from_stream(
        set: SplitSet,
        host: &HashMap<String, Vec<u8>>,
        uploads: Uploads,
        ctx: GpuContext,
    ) -> Result<Model> {
        let on_gpu = |name: &str| uploads.has(name);
        let src = Source::Streamed {
            host,
            on_gpu: &on_gpu,
        };
        let (spec, weights) = spec_and_weights(&set, &src)?;
        let gpu = GpuModel::from_uploads(ctx, &weights, uploads)?;
        Ok(Model::assemble(Vec::new(), set, spec, weights, Some(gpu)))
    }

    fn assemble(
        files: Vec<Vec<u8>>,
        set: SplitSet,
        spec: ModelSpec,
        weights: Weights,
        gpu: Option<GpuModel>,
    ) -> Model {
        let metadata = set
            .parts
            .into_iter()
            .next()
            .map(|p| p.header.metadata)
            .unwrap_or_default();
        Model {
            files,
            metadata,
            spec,
            weights,
            pool: Pool::new(pool::default_threads()),
            kernel: Kernel::default(),
            tap_env: TapFilter::from_env(),
            batch_order: BatchOrder::default(),
            gpu,
        }
    }

    /// Reads a model file, or every file of a split set when `path` is named like one.
    pub fn from_file(path: &Path) -> Result<Model> {
        let paths = crate::gguf::split::split_paths(path).unwrap_or_else(|| vec![path.into()]);
        let files = paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| crate::Error::io(p.display().to_string(), e)))
            .collect::<Result<Vec<_>>>()?;
        Model::from_parts(files)
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The weights by role (descriptors into [`Model::file_bytes`]).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Whether the model has its weights on the host (a model made by [`GpuLoader`] has them
    /// on the GPU only).
    pub fn has_host_weights(&self) -> bool {
        !self.files.is_empty()
    }

    /// The bytes of file `part` (0 for single files; empty for a model streamed to the GPU).
    pub fn file_bytes(&self, part: usize) -> &[u8] {
        self.files.get(part).map_or(&[], |f| f.as_slice())
    }

    /// The CPU matmul kernel (default [`Kernel::Fast`]; [`Kernel::Reference`] is the f32 oracle).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
    }

    /// How multi-token batches order their sums on the CPU (default: batch-invariant).
    pub fn set_batch_order(&mut self, order: BatchOrder) {
        self.batch_order = order;
    }

    /// Uploads the weights to `ctx`'s device; from then on every forward runs there. On error
    /// the model stays on the CPU. In the browser only the async forwards can read the GPU's
    /// results ([`Model::forward_async`], [`Model::forward_argmax_async`]); the synchronous
    /// ones are the error `gpu_readback` there.
    pub fn attach_gpu(&mut self, ctx: GpuContext) -> Result<()> {
        if !self.has_host_weights() {
            return Err(ModelError::GpuOnly.into());
        }
        let files: Vec<&[u8]> = self.files.iter().map(|f| f.as_slice()).collect();
        self.gpu = Some(GpuModel::new(ctx, &self.weights, &files)?);
        Ok(())
    }

    /// [`Model::attach_gpu`] with a new context (native: blocks while the device is created).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn use_gpu(&mut self, opts: &GpuOptions) -> Result<()> {
        block_on(self.use_gpu_async(opts))
    }

    /// [`Model::attach_gpu`] with a new context, awaited (the browser's way to create one).
    pub async fn use_gpu_async(&mut self, opts: &GpuOptions) -> Result<()> {
        self.attach_gpu(GpuContext::new(opts).await?)
    }

    /// Back to the CPU backend (frees the GPU weights; a model streamed to the GPU then has no
    /// weights left: its forwards are [`ModelError::GpuOnly`]).
    pub fn detach_gpu(&mut self) {
        self.gpu = None;
    }

    /// The GPU the model runs on, if any.
    pub fn gpu(&self) -> Option<&GpuModel> {
        self.gpu.as_ref()
    }

    pub fn set_threads(&mut self, n: usize) {
        self.pool = Pool::new(n);
    }

    pub fn threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// An empty f32 KV cache of `n_ctx` tokens for this model.
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        let n = self.spec.n_layer;
        KvCache::new(
            n_ctx,
            vec![self.spec.k_len(); n],
            vec![self.spec.v_len(); n],
        )
    }

    /// Runs `tokens` at absolute positions `cache.len()..`, appends their K/V and returns the
    /// logits of the selected positions, row-major `[n_selected × n_vocab]`. Only the selected
    /// rows go through the final norm and the LM head.
    ///
    /// Errors (the cache is unchanged on every error): a token id `≥ n_vocab`
    /// ([`ModelError::TokenOutOfRange`]), more tokens than the cache has room for
    /// ([`crate::error::SessionError::ContextOverflow`]), no tokens with logits requested
    /// ([`ModelError::EmptyInput`]), a cache made for another model ([`ModelError::Mismatch`]).
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>> {
        block_on(self.forward_async(cache, tokens, logits))
    }

    /// [`Model::forward`], awaited: the forward is recorded synchronously and only the chunk's
    /// one GPU readback awaits (the browser's event loop resolves it). On the CPU it completes
    /// without waiting. The synchronous API is this future driven by [`block_on`].
    pub async fn forward_async(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>> {
        self.run(cache, tokens, logits, Read::Logits, None)
            .await
            .map(|r| r.logits)
    }

    /// [`Model::forward`] of `tokens` returning only the argmax of the last token's logits
    /// (greedy decoding; ties to the lowest id). On the GPU the argmax is computed there and
    /// only the id comes back.
    pub fn forward_argmax(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<u32> {
        block_on(self.forward_argmax_async(cache, tokens))
    }

    /// [`Model::forward_argmax`], awaited (see [`Model::forward_async`]).
    pub async fn forward_argmax_async(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<u32> {
        let r = self
            .run(cache, tokens, LogitsFor::Last, Read::Argmax, None)
            .await?;
        r.ids
            .last()
            .copied()
            .ok_or_else(|| ModelError::EmptyInput.into())
    }

    /// [`Model::forward`] of `tokens` returning only the `k` largest logits of the last token
    /// with their ids, best first, ties to the lower id, NaN never
    /// ([`crate::backend::cpu::ops::top_k`]; fewer than `k` when fewer are not NaN). On the GPU
    /// they are selected there and only `8·k` bytes come back (`k` ≤
    /// [`crate::backend::gpu::ops::TOPK_MAX`], else [`crate::error::GpuError::Validation`]);
    /// on the CPU they are taken from the logits.
    pub fn forward_top_k(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        block_on(self.forward_top_k_async(cache, tokens, k))
    }

    /// [`Model::forward_top_k`], awaited (see [`Model::forward_async`]).
    pub async fn forward_top_k_async(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        k: usize,
    ) -> Result<Vec<(u32, f32)>> {
        let r = self
            .run(cache, tokens, LogitsFor::Last, Read::TopK(k), None)
            .await?;
        r.top
            .into_iter()
            .last()
            .ok_or_else(|| ModelError::EmptyInput.into())
    }

    /// Greedy decoding: feeds `first`, then each token it produces, up to `n` tokens; `keep`
    /// sees each new token in order and returns false to stop after it (that token is returned
    /// but not fed). The cache ends holding `first` and every returned token but the last.
    ///
    /// On the GPU the steps are pipelined: step i + 1 is recorded and submitted, its embedding
    /// reading step i's argmax on the GPU, before step i's id is read back, so recording overlaps
    /// the GPU's work; a step computed past a stop is dropped from the cache. Otherwise a loop of
    /// [`Model::forward_argmax`].
    pub fn greedy(
        &self,
        cache: &mut KvCache,
        first: u32,
        n: usize,
        keep: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        block_on(self.greedy_async(cache, first, n, keep))
    }

    /// [`Model::greedy`], awaited (see [`Model::forward_async`]).
    pub async fn greedy_async(
        &self,
        cache: &mut KvCache,
        first: u32,
        n: usize,
        mut keep: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let Some(g) = &self.gpu else {
            let (mut out, mut next) = (Vec::new(), first);
            while out.len() < n {
                next = self.forward_argmax_async(cache, &[next]).await?;
                out.push(next);
                if !keep(next) {
                    break;
                }
            }
            return Ok(out);
        };
        let n_vocab = self.spec.n_vocab;
        if first as usize >= n_vocab {
            return Err(ModelError::TokenOutOfRange { id: first, n_vocab }.into());
        }
        let n_layer = self.spec.n_layer;
        cache.check_shape(
            &vec![self.spec.k_len(); n_layer],
            &vec![self.spec.v_len(); n_layer],
        )?;
        cache.prepare_gpu(&g.ctx).await?;
        let start = cache.len();
        // Step i reads its token from ids[i % 2] and writes its argmax to ids[(i + 1) % 2].
        let ids = [0, 1].map(|_| g.ctx.storage("greedy_ids", 4));
        g.ctx.write(&ids[0], 0, bytemuck::bytes_of(&first));
        let mut pending = std::collections::VecDeque::new();
        let (mut out, mut submitted) = (Vec::new(), 0);
        let r: Result<()> = async {
            loop {
                // Keep one step queued ahead of the one being read.
                if submitted < n && pending.len() < 2 && cache.check_room(1).is_ok() {
                    let pos0 = cache.len();
                    let b =
                        GpuBackend::with_gpu_ids(g, cache.capacity(), ids[submitted % 2].clone());
                    let c = decoder::Chunk {
                        tokens: &[0], // read from the GPU
                        pos0,
                        out_rows: &[0],
                        order: self.batch_order,
                    };
                    let t = decoder::forward(&b, &self.spec, &self.weights, cache, &c, &mut None)?
                        .ok_or(ModelError::EmptyInput)?;
                    pending.push_back(b.submit_argmax(&t, &ids[(submitted + 1) % 2])?);
                    cache.commit_gpu(pos0 + 1);
                    submitted += 1;
                    continue;
                }
                let Some((staging, at)) = pending.pop_front() else {
                    if submitted < n {
                        cache.check_room(1)?;
                    }
                    return Ok(());
                };
                let b = g.ctx.map_staging_at(staging, 4, Some(at)).await?;
                let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.push(id);
                if !keep(id) || out.len() == n {
                    return Ok(());
                }
            }
        }
        .await;
        // Steps past the last returned token (a step queued past a stop, or a failed one)
        // leave the cache; those read back are complete.
        cache.truncate(start + out.len());
        r.map(|()| out)
    }

    /// [`Model::forward`] that also calls `tap` with every named intermediate
    /// (see [`tap`]).
    pub fn forward_with_tap(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
        tap: &mut dyn FnMut(&TapEvent),
    ) -> Result<Vec<f32>> {
        block_on(self.run(cache, tokens, logits, Read::Logits, Some(tap))).map(|r| r.logits)
    }

    async fn run(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
        read: Read,
        tap: Option<&mut dyn FnMut(&TapEvent)>,
    ) -> Result<RunOut> {
        let n = self.spec.n_layer;
        cache.check_shape(&vec![self.spec.k_len(); n], &vec![self.spec.v_len(); n])?;
        if tokens.is_empty() {
            return match logits {
                LogitsFor::None => Ok(RunOut::default()),
                _ => Err(ModelError::EmptyInput.into()),
            };
        }
        let n_vocab = self.spec.n_vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { id, n_vocab }.into());
        }
        cache.check_room(tokens.len())?;

        let mut env_tap = |e: &TapEvent| {
            if self.tap_env.as_ref().is_some_and(|f| f.matches(e.name)) {
                eprint!("{}", tap::format_event(e));
            }
        };
        let mut tap: decoder::Tap = match tap {
            Some(t) => Some(t),
            None if self.tap_env.is_some() => Some(&mut env_tap),
            None => None,
        };

        // The KV rows this backend reads must be on its side (model/kv.rs; at most one
        // upload or one readback, of the missing rows only).
        match &self.gpu {
            Some(g) => cache.prepare_gpu(&g.ctx).await?,
            None if !self.has_host_weights() => return Err(ModelError::GpuOnly.into()),
            None => cache.sync_host_async().await?,
        }
        let cpu = CpuBackend::new(
            self.files.iter().map(|f| f.as_slice()).collect(),
            &self.pool,
            self.kernel,
        );
        let start = cache.len();
        let n_chunks = tokens.len().div_ceil(MAX_UBATCH);
        let mut out = RunOut::default();
        for (ci, chunk) in tokens.chunks(MAX_UBATCH).enumerate() {
            let pos0 = cache.len();
            let rows: Vec<usize> = match logits {
                LogitsFor::None => Vec::new(),
                LogitsFor::Last if ci + 1 == n_chunks => vec![chunk.len() - 1],
                LogitsFor::Last => Vec::new(),
                LogitsFor::All => (0..chunk.len()).collect(),
            };
            let c = decoder::Chunk {
                tokens: chunk,
                pos0,
                out_rows: &rows,
                order: self.batch_order,
            };
            let r = match &self.gpu {
                Some(g) => {
                    let b = GpuBackend::new(g, cache.capacity());
                    let r = match decoder::forward(
                        &b,
                        &self.spec,
                        &self.weights,
                        cache,
                        &c,
                        &mut tap,
                    ) {
                        Ok(Some(t)) => match read {
                            Read::Argmax => b.read_argmax_async(&t).await.map(Rows::Argmax),
                            Read::TopK(k) => b.read_top_k_async(&t, k).await.map(Rows::TopK),
                            Read::Logits => b.read_async(&t).await.map(Rows::Logits),
                        },
                        Ok(None) => Ok(Rows::None),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(rows) => b.finish().map(|()| rows),
                        Err(e) => Err(e),
                    }
                }
                None => decoder::forward(&cpu, &self.spec, &self.weights, cache, &c, &mut tap)
                    .and_then(|t| match t {
                        Some(t) => match read {
                            Read::Argmax => cpu.read_argmax(&t).map(Rows::Argmax),
                            Read::TopK(k) => cpu.read(&t).map(|l| {
                                let top = crate::backend::cpu::ops::top_k;
                                Rows::TopK(l.chunks(n_vocab).map(|r| top(r, k)).collect())
                            }),
                            Read::Logits => cpu.read(&t).map(Rows::Logits),
                        },
                        None => Ok(Rows::None),
                    }),
            };
            match r {
                Ok(Rows::Logits(l)) => out.logits.extend(l),
                Ok(Rows::Argmax(ids)) => out.ids.extend(ids),
                Ok(Rows::TopK(top)) => out.top.extend(top),
                Ok(Rows::None) => {}
                Err(e) => {
                    cache.truncate(start);
                    return Err(e);
                }
            }
            match &self.gpu {
                Some(_) => cache.commit_gpu(pos0 + chunk.len()),
                None => cache.commit_host(pos0 + chunk.len()),
            }
        }
        Ok(out)
    }
}

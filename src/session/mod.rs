//! Engines and sessions (spec/runtime.md §1–§8, §11): the KV cache's owner, prefill and decode,
//! prefix reuse, snapshots, saved state, sampling and the generation stream.
//!
//! - [`Engine`]: immutable after load and cheap to clone (an `Arc`): the [`Model`], the
//!   [`Tokenizer`], the chat template (the model's, else ChatML), the end-of-generation set and
//!   the default sampling parameters (the built-in table with the model's `general.sampling.*`).
//! - [`Session`]: one sequence: the [`KvCache`], the token history (`tokens().len() == kv len`
//!   after every primitive), the logits of the last token, the sampler state.
//!
//! Primitives: [`Session::eval`] / [`Session::prefill`] / [`Session::decode`] (chunked: every
//! chunk but the last runs without logits, the last computes only what was asked),
//! [`Session::truncate`], [`Session::snapshot`] / [`Session::restore`],
//! [`Session::feed_prompt`] (prefix reuse), [`Session::save_state`] / [`Session::load_state`].
//! A failed eval rolls the session back to its length before the call (attention-only models:
//! truncation is exact), so a session is never left half-advanced.
//!
//! Generation ([`generate`]): [`Session::generate`] is an iterator of [`Event`]s; the same loop is
//! driveable one step at a time ([`Session::start`] + [`Generation::next`], or
//! [`Generation::next_async`] where GPU readbacks must be awaited, as in the browser).
//!
//! Every primitive that runs the model has an `_async` twin ([`Session::eval_async`],
//! [`Session::decode_async`], [`Session::feed_prompt_async`], [`Session::complete_async`], …);
//! the synchronous one is its twin driven by [`block_on`], so the two share one implementation.
//!
//! Out of scope here: recurrent state and checkpoints (§3.3; for attention-only
//! models a snapshot or prefix reuse covers them), multiple sequences, embeddings.

// On wasm32 the model's GPU objects are not Send (single-threaded); the Arc only shares.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod clock;
pub mod generate;
pub mod sampler;
pub mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use generate::{
    Completion, Event, FinishReason, Generate, GenerateParams, Generation, Input, Stats, Truncation,
};
pub use sampler::{
    LogprobRequest, LogprobSource, Sampled, Sampler, SamplerParams, SamplerState, TokenLogprob,
};

use crate::backend::gpu::block_on;
use crate::error::{Error, ModelError, Result, SessionError, StateError, TokenizerError};
use crate::model::{KvCache, LogitsFor, Model};
use crate::tokenizer::chat::{ChatMessage, ChatTemplate};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// Default prefill chunk (tokens per forward call).
pub const DEFAULT_PREFILL_CHUNK: usize = 512;
/// Default context when [`SessionOptions::n_ctx`] is not given (capped by the training
/// context). Never the GGUF `context_length` itself (131,072 for Llama 3.2).
pub const DEFAULT_N_CTX: usize = 2048;

/// End-of-turn markers looked up in the chat template's source: those that are single tokens of
/// the vocabulary join the end-of-generation set.
const TEMPLATE_END_MARKERS: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end|>",
    "<|return|>",
    "<|user|>",
    "<|observation|>",
];

/// Load-time choices of an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// A chat template instead of the model's: a built-in name (`chatml`, `llama3`, `gemma`,
    /// `glm4`) or a Jinja source (which must compile). Without one, the model's
    /// `tokenizer.chat_template` is used, else ChatML; a model template that does not compile
    /// is reported by [`Engine::chat_template`] when used, not at load.
    pub chat_template: Option<String>,
}

struct EngineInner {
    model: Arc<Model>,
    tokenizer: Tokenizer,
    /// The template, or why the model's failed to compile (reported when used).
    template: std::result::Result<ChatTemplate, TokenizerError>,
    /// Sorted end-of-generation ids: the tokenizer's plus the template's end markers.
    eog: Vec<u32>,
    sampling: SamplerParams,
    fingerprint: [u8; 32],
}

/// A loaded model with its tokenizer and chat template, shared by sessions (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("arch", &self.inner.model.spec().arch.name)
            .field("n_vocab", &self.inner.model.spec().n_vocab)
            .field("eog", &self.inner.eog)
            .finish_non_exhaustive()
    }
}

fn as_tokenizer_error(e: Error) -> TokenizerError {
    match e {
        Error::Tokenizer(t) => t,
        other => TokenizerError::Template(other.to_string()),
    }
}

impl Engine {
    /// Builds the tokenizer, chat template, EOG set and default sampling of `model`.
    pub fn new(model: Model) -> Result<Engine> {
        Engine::with_options(Arc::new(model), EngineOptions::default())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Engine> {
        Engine::new(Model::from_bytes(bytes)?)
    }

    pub fn from_file(path: &Path) -> Result<Engine> {
        Engine::new(Model::from_file(path)?)
    }

    pub fn with_options(model: Arc<Model>, opts: EngineOptions) -> Result<Engine> {
        let md = model.metadata();
        let tokenizer = Tokenizer::from_metadata(md)?;
        let text_of = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token_text(i))
                .unwrap_or("")
                .to_owned()
        };
        let (bos, eos) = (text_of(tokenizer.bos()), text_of(tokenizer.eos()));
        let template = match &opts.chat_template {
            // an explicit choice that does not compile fails the load
            Some(name) => match ChatTemplate::builtin(name, &bos, &eos) {
                Some(t) => Ok(t),
                None => Ok(ChatTemplate::new(name, &bos, &eos)?),
            },
            None => match ChatTemplate::from_metadata(md, &bos, &eos) {
                Ok(Some(t)) => Ok(t),
                Ok(None) => ChatTemplate::builtin("chatml", &bos, &eos).ok_or_else(|| {
                    TokenizerError::Template("the built-in ChatML template is missing".into())
                }),
                Err(e) => Err(as_tokenizer_error(e)),
            },
        };
        let mut eog: Vec<u32> = tokenizer.vocab().eog_ids().to_vec();
        if let Ok(t) = &template {
            for m in TEMPLATE_END_MARKERS {
                if t.source().contains(m) {
                    eog.extend(tokenizer.vocab().id(m));
                }
            }
        }
        eog.sort_unstable();
        eog.dedup();
        let sampling = SamplerParams::from_metadata(md);
        let fingerprint = state::model_fingerprint(&model);
        Ok(Engine {
            inner: Arc::new(EngineInner {
                model,
                tokenizer,
                template,
                eog,
                sampling,
                fingerprint,
            }),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.inner.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The chat template in use, or why the model's could not be compiled.
    pub fn chat_template(&self) -> Result<&ChatTemplate> {
        self.inner
            .template
            .as_ref()
            .map_err(|e| Error::Tokenizer(e.clone()))
    }

    /// The default sampling parameters: runtime.md §5.1 with the model's `general.sampling.*`.
    pub fn default_sampling(&self) -> &SamplerParams {
        &self.inner.sampling
    }

    /// The end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.inner.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.eog.binary_search(&id).is_ok()
    }

    /// The model fingerprint recorded in snapshots and saved state.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.inner.fingerprint
    }

    pub fn n_vocab(&self) -> usize {
        self.inner.model.spec().n_vocab
    }

    /// `llama_tokenize`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.inner
            .tokenizer
            .encode(text, add_special, parse_special)
    }

    /// `llama_detokenize(ids, remove_special = false, unparse_special)`.
    pub fn detokenize(&self, ids: &[u32], unparse_special: bool) -> Result<String> {
        self.inner.tokenizer.decode(ids, false, unparse_special)
    }

    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat_template()?
            .render(messages, add_generation_prompt)
    }

    /// The prompt tokens of an [`Input`]: text is tokenized with BOS as the model asks and
    /// special tokens parsed; messages go through the chat template first (a BOS that both the
    /// template and the tokenizer add is kept once).
    pub fn encode_input(&self, input: &Input) -> Result<Vec<u32>> {
        match input {
            Input::Tokens(t) => Ok(t.clone()),
            Input::Text(s) => Ok(self.tokenize(s, true, true)),
            Input::Chat(messages) => {
                let text = self.apply_chat_template(messages, true)?;
                let mut ids = self.tokenize(&text, true, true);
                if let Some(bos) = self.tokenizer().bos() {
                    if self.tokenizer().add_bos()
                        && ids.len() >= 2
                        && ids[0] == bos
                        && ids[1] == bos
                    {
                        ids.remove(0);
                    }
                }
                Ok(ids)
            }
        }
    }

    /// A new, empty session.
    pub fn session(&self, opts: SessionOptions) -> Result<Session> {
        Session::new(self.clone(), opts)
    }
}

/// Per-session choices.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// KV capacity in tokens. `None`: [`DEFAULT_N_CTX`] capped by the training context.
    pub n_ctx: Option<usize>,
    /// Tokens per prefill forward; `None`: [`DEFAULT_PREFILL_CHUNK`].
    pub prefill_chunk: Option<usize>,
    /// The sampler RNG's initial seed; `None`: from entropy ([`clock::entropy_seed`]).
    pub seed: Option<u64>,
    /// `None`: [`SystemClock`].
    pub clock: Option<Arc<dyn Clock>>,
}

/// A copy of a session's state at one moment (KV rows, tokens, logits, sampler state), for
/// [`Session::restore`] within sessions of the same model.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    fingerprint: [u8; 32],
    tokens: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    logits: Option<Vec<f32>>,
    sampler: SamplerState,
}

impl Snapshot {
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn sampler_state(&self) -> SamplerState {
        self.sampler
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        let f: usize = self.k.iter().chain(&self.v).map(Vec::len).sum();
        4 * (f + self.tokens.len() + self.logits.as_ref().map_or(0, Vec::len))
    }
}

/// One sequence: the KV cache, its tokens, the last logits and the sampler.
pub struct Session {
    engine: Engine,
    cache: KvCache,
    tokens: Vec<u32>,
    /// Logits of the last token of `tokens`, when the last eval computed them.
    logits: Option<Vec<f32>>,
    sampler: Sampler,
    chunk: usize,
    clock: Arc<dyn Clock>,
    /// Bumped by every change of the KV/tokens (a [`Generation`] checks it between steps).
    epoch: u64,
    /// Tokens run through the model by this session (a counter for metrics and tests).
    n_evaluated: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("len", &self.tokens.len())
            .field("n_ctx", &self.cache.capacity())
            .field("prefill_chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(engine: Engine, opts: SessionOptions) -> Result<Session> {
        let spec = engine.model().spec();
        let n_ctx = opts
            .n_ctx
            .unwrap_or_else(|| DEFAULT_N_CTX.min(spec.n_ctx_train.max(1)));
        if n_ctx == 0 || n_ctx > u32::MAX as usize {
            return Err(SessionError::BadParams(format!("n_ctx {n_ctx} is out of range")).into());
        }
        let chunk = opts.prefill_chunk.unwrap_or(DEFAULT_PREFILL_CHUNK);
        if chunk == 0 {
            return Err(SessionError::BadParams("prefill_chunk must be ≥ 1".into()).into());
        }
        let cache = engine.model().new_cache(n_ctx);
        let seed = opts.seed.unwrap_or_else(clock::entropy_seed);
        let sampler = Sampler::new(engine.default_sampling().clone(), seed);
        Ok(Session {
            cache,
            tokens: Vec::new(),
            logits: None,
            sampler,
            chunk,
            clock: opts.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
            epoch: 0,
            n_evaluated: 0,
            engine,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The tokens in the KV cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// KV capacity in tokens.
    pub fn n_ctx(&self) -> usize {
        self.cache.capacity()
    }

    pub fn kv_cache(&self) -> &KvCache {
        &self.cache
    }

    /// Logits `[n_vocab]` of the last token, when the last eval produced them.
    pub fn logits(&self) -> Option<&[f32]> {
        self.logits.as_deref()
    }

    /// Tokens this session has run through the model, over its lifetime.
    pub fn tokens_evaluated(&self) -> u64 {
        self.n_evaluated
    }

    pub fn prefill_chunk(&self) -> usize {
        self.chunk
    }

    pub fn set_prefill_chunk(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(SessionError::BadParams("prefill_chunk must be ≥ 1".into()).into());
        }
        self.chunk = n;
        Ok(())
    }

    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Runs `tokens` at positions `len()..` in chunks of [`Session::prefill_chunk`] and returns
    /// the requested logits rows `[n × n_vocab]` (`Last`: only the final chunk computes its last
    /// row). On error the session is as before the call.
    pub fn eval(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>> {
        block_on(self.eval_async(tokens, logits))
    }

    /// [`Session::eval`], awaited: on the GPU each chunk's readback is awaited (the browser's
    /// way); the synchronous primitives are these futures driven by [`block_on`].
    pub async fn eval_async(&mut self, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return match logits {
                LogitsFor::None => Ok(Vec::new()),
                _ => Err(ModelError::EmptyInput.into()),
            };
        }
        if self.len() + tokens.len() > self.n_ctx() {
            return Err(SessionError::ContextOverflow {
                n_prompt: self.len() + tokens.len(),
                n_ctx: self.n_ctx(),
                reserve: 0,
            }
            .into());
        }
        let start = self.len();
        let n_chunks = tokens.len().div_ceil(self.chunk);
        let mut out = Vec::new();
        let model = Arc::clone(self.engine.model());
        for (i, chunk) in tokens.chunks(self.chunk).enumerate() {
            let want = match logits {
                LogitsFor::All => LogitsFor::All,
                LogitsFor::Last if i + 1 == n_chunks => LogitsFor::Last,
                _ => LogitsFor::None,
            };
            match model.forward_async(&mut self.cache, chunk, want).await {
                Ok(l) => out.extend_from_slice(&l),
                Err(e) => {
                    self.cache.truncate(start);
                    self.tokens.truncate(start);
                    return Err(e);
                }
            }
            self.tokens.extend_from_slice(chunk);
        }
        debug_assert_eq!(self.tokens.len(), self.cache.len());
        self.n_evaluated += tokens.len() as u64;
        let n_vocab = self.engine.n_vocab();
        self.logits = match logits {
            LogitsFor::None => None,
            _ => Some(out[out.len() - n_vocab..].to_vec()),
        };
        self.epoch += 1;
        Ok(out)
    }

    /// Appends `tokens` and returns the logits of the last one.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.eval(tokens, LogitsFor::Last)
    }

    /// Appends one token and returns its logits.
    pub fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.eval(&[token], LogitsFor::Last)
    }

    /// [`Session::decode`], awaited.
    pub async fn decode_async(&mut self, token: u32) -> Result<Vec<f32>> {
        self.eval_async(&[token], LogitsFor::Last).await
    }

    /// Appends one token and returns only its `k` largest logits with their ids, best first
    /// ([`Model::forward_top_k`]: on the GPU they are selected there and `8·k` bytes come back,
    /// not the row). [`Session::logits`] is `None` afterwards. On error the session is as before
    /// the call.
    pub fn decode_top_k(&mut self, token: u32, k: usize) -> Result<Vec<(u32, f32)>> {
        block_on(self.decode_top_k_async(token, k))
    }

    /// [`Session::decode_top_k`], awaited.
    pub async fn decode_top_k_async(&mut self, token: u32, k: usize) -> Result<Vec<(u32, f32)>> {
        if self.len() + 1 > self.n_ctx() {
            return Err(SessionError::ContextOverflow {
                n_prompt: self.len() + 1,
                n_ctx: self.n_ctx(),
                reserve: 0,
            }
            .into());
        }
        let start = self.len();
        let model = Arc::clone(self.engine.model());
        let top = match model
            .forward_top_k_async(&mut self.cache, &[token], k)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                self.cache.truncate(start);
                return Err(e);
            }
        };
        self.tokens.push(token);
        debug_assert_eq!(self.tokens.len(), self.cache.len());
        self.n_evaluated += 1;
        self.logits = None;
        self.epoch += 1;
        Ok(top)
    }

    /// Forgets every token from `n` on (O(1); `n ≥ len` is a no-op).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.cache.truncate(n);
            self.tokens.truncate(n);
            self.logits = None;
            self.epoch += 1;
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.truncate(0);
        self.logits = None;
    }

    /// `llama_memory_clear`.
    pub fn memory_clear(&mut self) {
        self.clear();
    }

    /// `llama_memory_seq_rm(seq, p0, p1)` (runtime.md §3.4): `p0 < 0` means 0, `p1 < 0` means
    /// ∞. Only removing a tail (`p1 ≥ len`) is possible: the session is truncated to `p0` and
    /// `true` returned; removing a middle range returns `false` and changes nothing. Sessions
    /// hold one sequence: `seq` other than 0 is [`SessionError::BadParams`].
    pub fn memory_seq_rm(&mut self, seq: i32, p0: i64, p1: i64) -> Result<bool> {
        check_seq(seq)?;
        let p0 = p0.max(0) as u64;
        let p1 = if p1 < 0 { u64::MAX } else { p1 as u64 };
        if p0 >= p1 {
            return Ok(true); // an empty range
        }
        if p1 < self.len() as u64 {
            return Ok(false);
        }
        self.truncate(p0.min(self.len() as u64) as usize);
        Ok(true)
    }

    /// `llama_memory_seq_pos_max(seq)`: the last occupied position, `len − 1`, or −1 when
    /// empty.
    pub fn memory_seq_pos_max(&self, seq: i32) -> Result<i64> {
        check_seq(seq)?;
        Ok(self.len() as i64 - 1)
    }

    /// Prefix reuse (runtime.md §2): keeps the longest common prefix of `prompt` and the cached
    /// tokens, truncates the rest and prefills only the new suffix, leaving the logits of the
    /// prompt's last token in [`Session::logits`]. A prompt equal to the cached tokens costs
    /// nothing when their logits are at hand; otherwise at least one token is re-fed. Returns
    /// the number of reused tokens.
    pub fn feed_prompt(&mut self, prompt: &[u32]) -> Result<usize> {
        block_on(self.feed_prompt_async(prompt))
    }

    /// [`Session::feed_prompt`], awaited.
    pub async fn feed_prompt_async(&mut self, prompt: &[u32]) -> Result<usize> {
        if prompt.is_empty() {
            return Err(ModelError::EmptyInput.into());
        }
        if prompt.len() > self.n_ctx() {
            return Err(SessionError::ContextOverflow {
                n_prompt: prompt.len(),
                n_ctx: self.n_ctx(),
                reserve: 0,
            }
            .into());
        }
        let lcp = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        if lcp == prompt.len() && lcp == self.len() && self.logits.is_some() {
            return Ok(lcp);
        }
        let keep = lcp.min(prompt.len() - 1);
        // validate the suffix before truncating, so a bad token id leaves the session as it was
        let n_vocab = self.engine.n_vocab();
        if let Some(&id) = prompt[keep..].iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { id, n_vocab }.into());
        }
        self.truncate(keep);
        self.eval_async(&prompt[keep..], LogitsFor::Last).await?;
        Ok(keep)
    }

    /// A copy of the current state. After a GPU forward this reads back the KV rows the host
    /// lacks (once: they stay on the host, see `model/kv.rs`), hence `&mut` and the error of
    /// a failed readback.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.cache.sync_host()?;
        self.snapshot_synced()
    }

    /// [`Session::snapshot`], awaited (the browser's way to read the GPU's rows back).
    pub async fn snapshot_async(&mut self) -> Result<Snapshot> {
        self.cache.sync_host_async().await?;
        self.snapshot_synced()
    }

    fn snapshot_synced(&self) -> Result<Snapshot> {
        let n = self.cache.n_layer();
        let (mut k, mut v) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for l in 0..n {
            k.push(self.cache.layer_k(l)?.to_vec());
            v.push(self.cache.layer_v(l)?.to_vec());
        }
        Ok(Snapshot {
            fingerprint: *self.engine.fingerprint(),
            tokens: self.tokens.clone(),
            k,
            v,
            logits: self.logits.clone(),
            sampler: self.sampler.state(),
        })
    }

    /// Returns to `snap` (taken from a session of the same model with no more tokens than this
    /// one's capacity). Checked before anything changes.
    pub fn restore(&mut self, snap: &Snapshot) -> Result<()> {
        if &snap.fingerprint != self.engine.fingerprint() {
            return Err(StateError::ModelMismatch.into());
        }
        self.cache
            .restore(snap.tokens.len(), snap.k.clone(), snap.v.clone())?;
        self.tokens = snap.tokens.clone();
        self.logits = snap.logits.clone();
        self.sampler.set_state(snap.sampler);
        self.epoch += 1;
        Ok(())
    }

    /// Bytes [`Session::save_state`] would return now.
    pub fn state_size(&self) -> usize {
        let rows: Vec<_> = (0..self.cache.n_layer())
            .map(|l| self.cache.row_len(l))
            .collect();
        state::encoded_len(
            self.engine.n_vocab(),
            self.len(),
            self.logits.is_some(),
            &rows,
        )
    }

    /// The session in the [`state`] format (reading back the KV rows only the GPU has, as
    /// [`Session::snapshot`] does).
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        self.cache.sync_host()?;
        self.encode_state()
    }

    /// [`Session::save_state`], awaited.
    pub async fn save_state_async(&mut self) -> Result<Vec<u8>> {
        self.cache.sync_host_async().await?;
        self.encode_state()
    }

    fn encode_state(&self) -> Result<Vec<u8>> {
        state::encode(
            self.engine.fingerprint(),
            self.engine.n_vocab(),
            &self.tokens,
            self.sampler.state(),
            self.logits.as_deref(),
            &self.cache,
        )
    }

    /// Replaces the session with a saved state. Everything is validated first (format, model
    /// fingerprint, shapes, every length, checksum): on error the session is unchanged.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let rows: Vec<_> = (0..self.cache.n_layer())
            .map(|l| self.cache.row_len(l))
            .collect();
        let want = state::Expect {
            fingerprint: self.engine.fingerprint(),
            n_vocab: self.engine.n_vocab(),
            rows,
            capacity: self.n_ctx(),
        };
        let view = state::parse(bytes, &want)?;
        let (k, v): (Vec<_>, Vec<_>) = view
            .layers
            .iter()
            .map(|(k, v)| (state::f32s(k), state::f32s(v)))
            .unzip();
        self.cache.restore(view.tokens.len(), k, v)?;
        self.tokens = view.tokens;
        self.logits = view.logits.map(state::f32s);
        self.sampler.set_state(view.sampler);
        self.epoch += 1;
        Ok(())
    }
}

fn check_seq(seq: i32) -> Result<()> {
    if seq != 0 {
        return Err(SessionError::BadParams(format!(
            "sequence {seq}: sessions hold one sequence (0)"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Engine>();
        send_sync::<Session>();
        send_sync::<Generation>();
        send_sync::<Snapshot>();
    }
}

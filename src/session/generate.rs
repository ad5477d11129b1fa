//! The generation loop (spec/runtime.md §4 "Generate pipeline", §6 stop conditions, §8
//! metrics): template and tokenize, prefix reuse, capacity check, chunked prefill, then
//! sample → stop check → detokenize and emit → decode, one token per step.
//!
//! The loop is a state machine ([`Generation`]) that a caller drives one step at a time
//! ([`Generation::next`], or [`Generation::next_async`], which awaits the GPU's readbacks as the
//! browser must), so an async JS wrapper can yield between tokens; [`Generate`] wraps it as an
//! `Iterator`. The first step runs the prefill.
//!
//! Events: one [`Event::Token`] per generated token, an [`Event::Text`] when text held back at the
//! end (a partial stop string or incomplete UTF-8 that turned out not to be one) is released, then
//! [`Event::Done`]. Concatenating every `text_delta` gives the generated text; stop strings and
//! end-of-generation tokens never appear in it.
//!
//! A sampled token is fed to the model only when the next token is wanted: the token that ends
//! a generation is never fed, so `session.tokens()` is the prompt plus every generated token but
//! the last (the next request's prefix reuse re-feeds it).

use super::sampler::{LogprobRequest, LogprobSource, SamplerParams, TokenLogprob};
use super::{Engine, Session};
use crate::backend::gpu::block_on;
use crate::error::{ModelError, Result, SessionError};
use crate::tokenizer::chat::ChatMessage;
use crate::tokenizer::stream::{StopStep, TextStream};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
    /// Raw text: BOS as the model asks, special tokens parsed.
    Text(String),
    /// A conversation: rendered with the chat template (with the generation prompt).
    Chat(Vec<ChatMessage>),
}

impl From<Vec<u32>> for Input {
    fn from(t: Vec<u32>) -> Self {
        Input::Tokens(t)
    }
}
impl From<&[u32]> for Input {
    fn from(t: &[u32]) -> Self {
        Input::Tokens(t.to_vec())
    }
}
impl From<&str> for Input {
    fn from(s: &str) -> Self {
        Input::Text(s.to_owned())
    }
}
impl From<String> for Input {
    fn from(s: String) -> Self {
        Input::Text(s)
    }
}
impl From<Vec<ChatMessage>> for Input {
    fn from(m: Vec<ChatMessage>) -> Self {
        Input::Chat(m)
    }
}

/// Prompt truncation for prompts that do not fit: keep the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Keep a leading BOS in front of the kept tail.
    pub keep_bos: bool,
    /// Tokens left free for generation: the prompt is cut to `n_ctx − reserve` (at least 1).
    pub reserve: usize,
}

impl Default for Truncation {
    fn default() -> Self {
        Truncation {
            keep_bos: true,
            reserve: 0,
        }
    }
}

/// One request's settings.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    /// `None`: the engine's [`Engine::default_sampling`].
    pub sampling: Option<SamplerParams>,
    /// `None`: until an end-of-generation token, a stop string or a full context.
    pub max_tokens: Option<usize>,
    /// Stop strings (matched across tokens, never emitted).
    pub stop: Vec<String>,
    /// Report each token's log-probability.
    pub logprobs: bool,
    /// Report the `n` most likely alternatives of each step.
    pub top_logprobs: usize,
    pub logprob_source: LogprobSource,
    /// Render control tokens' text (otherwise they add no text).
    pub render_special: bool,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// `None`: a prompt longer than the context is [`SessionError::ContextOverflow`].
    pub truncate: Option<Truncation>,
    /// Checked before every step; when set the generation ends with [`FinishReason::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Read the whole logits row at every step even where the sampler needs only the top
    /// candidates (on the GPU those are otherwise all that comes back; see
    /// [`super::Sampler::top_candidates`]). The sampled tokens are the same either way.
    pub full_logits: bool,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token (not emitted).
    Eos,
    /// A stop string (not emitted).
    StopSequence,
    /// `max_tokens` generated.
    Length,
    /// The KV cache is full.
    ContextFull,
    /// The cancel flag was set.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::StopSequence => "stop_sequence",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Per-request metrics (runtime.md §8). Times in milliseconds from the session's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub finish_reason: FinishReason,
    /// Prompt tokens (after template, tokenization and truncation).
    pub n_prompt: usize,
    /// Prompt tokens reused from the KV cache (prefix reuse).
    pub n_cached: usize,
    /// Prompt tokens dropped by [`Truncation`].
    pub n_truncated: usize,
    /// Tokens emitted as [`Event::Token`] (an end-of-generation token is not counted).
    pub n_generated: usize,
    /// Request start (before tokenization) to the first sampled token.
    pub ttft_ms: f64,
    /// Prefill of the `n_prompt − n_cached` new tokens.
    pub prefill_ms: f64,
    pub prefill_tps: f64,
    /// From the first sampled token to the end: the decode forwards, sampling and
    /// detokenization of every token after the first.
    pub decode_ms: f64,
    /// Tokens after the first per second of `decode_ms`.
    pub decode_tps: f64,
    /// KV use at the end.
    pub kv_len: usize,
    pub n_ctx: usize,
    /// The seed applied at the start of this request, if any.
    pub seed: Option<u64>,
}

/// What a generation yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token {
        id: u32,
        /// The token's position in the sequence (prompt tokens are `0..n_prompt`).
        pos: usize,
        /// Text that became final with this token (possibly empty).
        text_delta: String,
        logprob: Option<f32>,
        top_logprobs: Vec<TokenLogprob>,
    },
    /// Held-back text released at the end.
    Text {
        text_delta: String,
    },
    Done(Stats),
}

/// A collected generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prefill,
    Decode,
    Done,
}

/// The state of one generation, driven by [`Generation::next`] with its session.
#[derive(Debug)]
pub struct Generation {
    phase: Phase,
    prompt: Vec<u32>,
    max_tokens: Option<usize>,
    lp: LogprobRequest,
    render_special: bool,
    ignore_eos: bool,
    cancel: Option<Arc<AtomicBool>>,
    full_logits: bool,
    stream: TextStream,
    /// Sampled and emitted, fed at the next step.
    pending: Option<u32>,
    queue: VecDeque<Event>,
    /// The session's epoch after this generation's last change.
    epoch: u64,
    n_generated: usize,
    n_sampled: usize,
    n_cached: usize,
    n_truncated: usize,
    seed: Option<u64>,
    t_start: f64,
    prefill_ms: f64,
    t_first: Option<f64>,
}

/// Keeps the tail of `prompt` that fits (see [`Truncation`]); returns the dropped count.
fn truncate_prompt(prompt: &mut Vec<u32>, n_ctx: usize, t: Truncation, bos: Option<u32>) -> usize {
    let limit = n_ctx.saturating_sub(t.reserve).max(1);
    if prompt.len() <= limit {
        return 0;
    }
    let dropped = prompt.len() - limit;
    let lead_bos = t.keep_bos && limit >= 2 && bos.is_some() && prompt.first() == bos.as_ref();
    if lead_bos {
        prompt.drain(1..1 + dropped);
    } else {
        prompt.drain(..dropped);
    }
    dropped
}

impl Session {
    /// Validates the request, tokenizes the prompt and sets up the sampler; nothing runs until
    /// the first [`Generation::next`].
    pub fn start(&mut self, input: impl Into<Input>, params: GenerateParams) -> Result<Generation> {
        let t_start = self.clock.now_ms();
        let engine: Engine = self.engine.clone();
        let n_vocab = engine.n_vocab();
        let sampling = params
            .sampling
            .unwrap_or_else(|| engine.default_sampling().clone());
        sampling.validate(n_vocab)?;
        if params.top_logprobs > n_vocab {
            return Err(SessionError::BadParams(format!(
                "top_logprobs {} exceeds the vocabulary of {n_vocab}",
                params.top_logprobs
            ))
            .into());
        }
        let mut prompt = engine.encode_input(&input.into())?;
        if prompt.is_empty() {
            return Err(ModelError::EmptyInput.into());
        }
        if let Some(&id) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { id, n_vocab }.into());
        }
        let n_truncated = match params.truncate {
            Some(t) => truncate_prompt(&mut prompt, self.n_ctx(), t, engine.tokenizer().bos()),
            None if prompt.len() > self.n_ctx() => {
                return Err(SessionError::ContextOverflow {
                    n_prompt: prompt.len(),
                    n_ctx: self.n_ctx(),
                    reserve: 0,
                }
                .into())
            }
            None => 0,
        };
        let seed = sampling.seed;
        self.sampler.set_params(sampling);
        Ok(Generation {
            phase: Phase::Prefill,
            prompt,
            max_tokens: params.max_tokens,
            lp: LogprobRequest {
                logprob: params.logprobs,
                top_n: params.top_logprobs,
                source: params.logprob_source,
            },
            render_special: params.render_special,
            ignore_eos: params.ignore_eos,
            cancel: params.cancel,
            full_logits: params.full_logits,
            stream: TextStream::new(params.stop),
            pending: None,
            queue: VecDeque::new(),
            epoch: self.epoch,
            n_generated: 0,
            n_sampled: 0,
            n_cached: 0,
            n_truncated,
            seed,
            t_start,
            prefill_ms: 0.0,
            t_first: None,
        })
    }

    /// [`Session::start`] as an iterator of events.
    pub fn generate(
        &mut self,
        input: impl Into<Input>,
        params: GenerateParams,
    ) -> Result<Generate<'_>> {
        let gen = self.start(input, params)?;
        Ok(Generate { session: self, gen })
    }

    /// Runs a whole generation and collects it.
    pub fn complete(
        &mut self,
        input: impl Into<Input>,
        params: GenerateParams,
    ) -> Result<Completion> {
        block_on(self.complete_async(input, params))
    }

    /// [`Session::complete`], awaited.
    pub async fn complete_async(
        &mut self,
        input: impl Into<Input>,
        params: GenerateParams,
    ) -> Result<Completion> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut gen = self.start(input, params)?;
        while let Some(ev) = gen.next_async(self).await {
            match ev? {
                Event::Token { id, text_delta, .. } => {
                    tokens.push(id);
                    text.push_str(&text_delta);
                }
                Event::Text { text_delta } => text.push_str(&text_delta),
                Event::Done(stats) => {
                    return Ok(Completion {
                        text,
                        tokens,
                        stats,
                    })
                }
            }
        }
        Err(SessionError::BadState("generation ended without a result".into()).into())
    }
}

impl Generation {
    /// The prompt tokens (after truncation).
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done && self.queue.is_empty()
    }

    /// The next event; `None` after [`Event::Done`] or an error. Each call does at most one
    /// forward (the first: the prompt's prefill). The session must not be changed between calls
    /// (that is reported as [`SessionError::BadState`]).
    pub fn next(&mut self, s: &mut Session) -> Option<Result<Event>> {
        block_on(async { Ok(self.next_async(s).await) }).unwrap_or_else(|e| Some(Err(e)))
    }

    /// [`Generation::next`], awaited (on the GPU the step's readback is awaited: the browser's
    /// way to generate).
    pub async fn next_async(&mut self, s: &mut Session) -> Option<Result<Event>> {
        if let Some(e) = self.queue.pop_front() {
            return Some(Ok(e));
        }
        if self.phase == Phase::Done {
            return None;
        }
        if s.epoch != self.epoch {
            self.phase = Phase::Done;
            return Some(Err(SessionError::BadState(
                "the session changed during a generation".into(),
            )
            .into()));
        }
        if let Err(e) = self.step(s).await {
            self.phase = Phase::Done;
            self.queue.clear();
            return Some(Err(e));
        }
        self.epoch = s.epoch;
        self.queue.pop_front().map(Ok)
    }

    /// How many top candidates to read back instead of the logits row before feeding `next`:
    /// only on the GPU, only when the sampler's result depends on them alone
    /// ([`super::Sampler::top_candidates`]), no raw log-probability is asked for and they are
    /// fewer bytes than the row.
    fn top_candidates(&self, s: &Session, next: u32) -> Option<usize> {
        let raw_lp = self.lp.source == LogprobSource::Raw && (self.lp.logprob || self.lp.top_n > 0);
        if self.full_logits || raw_lp || s.engine.model().gpu().is_none() {
            return None;
        }
        let window = s.sampler.params().penalty_window;
        let mut h = s.tokens[s.tokens.len().saturating_sub(window)..].to_vec();
        h.push(next);
        // 8 bytes a candidate against 4 a logit: past half the vocabulary the row is cheaper.
        s.sampler
            .top_candidates(&h)
            .filter(|&k| 2 * k < s.engine.n_vocab())
    }

    async fn step(&mut self, s: &mut Session) -> Result<()> {
        let mut top = None;
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            self.finish(s, FinishReason::Cancelled, String::new());
            return Ok(());
        }
        match self.phase {
            Phase::Prefill => {
                let t0 = s.clock.now_ms();
                self.n_cached = s.feed_prompt_async(&self.prompt).await?;
                self.prefill_ms = s.clock.now_ms() - t0;
                self.phase = Phase::Decode;
            }
            Phase::Decode => {
                if let Some(t) = self.pending.take() {
                    top = match self.top_candidates(s, t) {
                        Some(k) => Some(s.decode_top_k_async(t, k).await?),
                        None => {
                            s.decode_async(t).await?;
                            None
                        }
                    };
                }
            }
            Phase::Done => return Ok(()),
        }
        if self.max_tokens == Some(0) {
            self.finish(s, FinishReason::Length, String::new());
            return Ok(());
        }
        let sampled = match (&top, s.logits.as_deref()) {
            (Some(top), _) => s.sampler.sample_top_with(top, &s.tokens, self.lp)?,
            (None, Some(logits)) => s.sampler.sample_with(logits, &s.tokens, self.lp),
            (None, None) => {
                return Err(SessionError::BadState("no logits to sample from".into()).into())
            }
        };
        self.n_sampled += 1;
        if self.t_first.is_none() {
            self.t_first = Some(s.clock.now_ms());
        }
        let id = sampled.id;
        if !self.ignore_eos && s.engine.is_eog(id) {
            self.finish(s, FinishReason::Eos, String::new());
            return Ok(());
        }
        self.n_generated += 1;
        // ids the model has beyond the tokenizer's vocabulary add no text
        let bytes = s
            .engine
            .tokenizer()
            .token_to_piece(id, self.render_special)
            .unwrap_or_default();
        let (mut delta, mut reason) = match self.stream.push(&bytes) {
            StopStep::Text(t) => (t, None),
            StopStep::Stopped { text, .. } => (text, Some(FinishReason::StopSequence)),
        };
        if reason.is_none() {
            if self.max_tokens.is_some_and(|m| self.n_generated >= m) {
                reason = Some(FinishReason::Length);
            } else if s.len() >= s.n_ctx() {
                reason = Some(FinishReason::ContextFull);
            }
            if reason.is_some() {
                match self.stream.finish() {
                    StopStep::Text(t) => delta.push_str(&t),
                    StopStep::Stopped { text, .. } => {
                        delta.push_str(&text);
                        reason = Some(FinishReason::StopSequence);
                    }
                }
            }
        }
        self.queue.push_back(Event::Token {
            id,
            pos: s.len(),
            text_delta: delta,
            logprob: sampled.logprob,
            top_logprobs: sampled.top_logprobs,
        });
        match reason {
            Some(r) => self.done(s, r),
            None => self.pending = Some(id),
        }
        Ok(())
    }

    /// Ends with `reason`, releasing held-back text as an [`Event::Text`].
    fn finish(&mut self, s: &Session, mut reason: FinishReason, mut text: String) {
        match self.stream.finish() {
            StopStep::Text(t) => text.push_str(&t),
            StopStep::Stopped { text: t, .. } => {
                text.push_str(&t);
                if reason != FinishReason::Cancelled {
                    reason = FinishReason::StopSequence;
                }
            }
        }
        if !text.is_empty() {
            self.queue.push_back(Event::Text { text_delta: text });
        }
        self.done(s, reason);
    }

    fn done(&mut self, s: &Session, reason: FinishReason) {
        let now = s.clock.now_ms();
        let t_first = self.t_first.unwrap_or(now);
        let n_prefilled = self.prompt.len() - self.n_cached;
        let decode_ms = now - t_first;
        let n_decoded = self.n_sampled.saturating_sub(1);
        let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        self.queue.push_back(Event::Done(Stats {
            finish_reason: reason,
            n_prompt: self.prompt.len(),
            n_cached: self.n_cached,
            n_truncated: self.n_truncated,
            n_generated: self.n_generated,
            ttft_ms: t_first - self.t_start,
            prefill_ms: self.prefill_ms,
            prefill_tps: rate(n_prefilled, self.prefill_ms),
            decode_ms,
            decode_tps: rate(n_decoded, decode_ms),
            kv_len: s.len(),
            n_ctx: s.n_ctx(),
            seed: self.seed,
        }));
        self.pending = None;
        self.phase = Phase::Done;
    }
}

/// A [`Generation`] borrowing its session: an `Iterator` of events.
pub struct Generate<'a> {
    session: &'a mut Session,
    gen: Generation,
}

impl Generate<'_> {
    pub fn session(&self) -> &Session {
        self.session
    }
}

impl Iterator for Generate<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        self.gen.next(self.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_tail_and_bos() {
        let t = |keep_bos, reserve| Truncation { keep_bos, reserve };
        let mut p: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_prompt(&mut p, 4, t(true, 0), Some(0)), 6);
        assert_eq!(p, vec![0, 7, 8, 9]);
        let mut p: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_prompt(&mut p, 4, t(false, 0), Some(0)), 6);
        assert_eq!(p, vec![6, 7, 8, 9]);
        let mut p: Vec<u32> = (0..10).collect();
        assert_eq!(truncate_prompt(&mut p, 6, t(true, 2), Some(5)), 6);
        assert_eq!(p, vec![6, 7, 8, 9]);
        let mut p: Vec<u32> = (0..3).collect();
        assert_eq!(truncate_prompt(&mut p, 6, t(true, 2), Some(0)), 0);
        assert_eq!(p.len(), 3);
        let mut p: Vec<u32> = (0..3).collect();
        assert_eq!(truncate_prompt(&mut p, 2, t(true, 5), Some(0)), 2);
        assert_eq!(p, vec![2]);
    }
}

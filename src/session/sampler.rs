//! Token sampling on the CPU (spec/runtime.md §5): penalties, logit bias, greedy, temperature,
//! top-k, min-p, top-p, Mirostat v2, a stateful seeded RNG and log-probabilities.
//!
//! Per step, in this order (§5.2):
//! 1. repetition / presence / frequency penalties over the last `penalty_window` tokens of the
//!    history, each **distinct** token once (llama.cpp's `llama_sampler_penalties`: a repeated
//!    token's logit is divided by `repetition_penalty` when positive and multiplied when not,
//!    then `frequency·count + presence` is subtracted);
//! 2. `logit_bias` (additive), then `banned_tokens` (−∞), so constraints also hold at T = 0;
//! 3. greedy (`temperature ≤ 0` or `top_k == 1`): argmax, the first maximum winning;
//! 4. temperature; 5. top-k (partial selection, O(V)); 6. softmax; 7. min-p; 8. top-p;
//! 9. renormalise and walk the CDF with one uniform draw (past the end: the last candidate).
//!
//! Mirostat v2 replaces 4–9: after temperature, softmax over every token, keep those with
//! surprise `−log₂ p ≤ mu` (at least the best), renormalise, draw, then
//! `mu ← mu − η·(−log₂ p_chosen − τ)` with `p_chosen` from the renormalised distribution
//! (llama.cpp's `llama_sampler_mirostat_v2`).
//!
//! The RNG is xorshift64 (§5.3), seeded through splitmix64 so that nearby seeds give unrelated
//! streams; a draw is `(x >> 40) / 2²⁴`. It lives in the session, is never re-seeded per step,
//! and its state is part of snapshots and saved state ([`SamplerState`]).
//!
//! Log-probabilities ([`LogprobSource`]): by default the log-softmax of the **raw** logits, before
//! penalties, bias and temperature (§5.1); optionally of the final distribution the token was
//! drawn from (after every filter; greedy then gives the chosen token probability 1).
//!
//! Top-k ranks by the logit before temperature (larger first, −0 = +0, then the lower id;
//! [`crate::backend::cpu::ops::rank_desc`]): the same set as ranking `logit / T` for T > 0 but
//! for the ties that rounding `logit / T` can create, and llama.cpp's chain also applies
//! temperature after top-k. It makes the GPU's top-k exact (below).
//!
//! **Sampling from the top candidates** ([`Sampler::top_candidates`], [`Sampler::sample_top_with`]):
//! when the result depends only on the best few logits, the GPU selects them
//! (`ops::top_k`) and only those come back (runtime.md §5.4). That holds for greedy and for
//! top-k (1 ≤ k) with temperature, min-p and top-p after it, when every step before top-k can
//! only lower a logit: repetition penalty ≥ 1, presence and frequency penalties ≥ 0, logit biases
//! ≤ 0, bans. With T the set of tokens those steps touch (the distinct tokens of the penalty
//! window, the biased and the banned ones), the raw top `k + |T|` contain the true top k after
//! them: at least k of the raw top `k + |T|` are untouched and keep their logits, so no untouched
//! token outside it can enter the top k; a touched token outside it ranked below all of them
//! before and was only lowered (an equal value after lowering means an equal raw value and a
//! higher id). Each candidate then gets exactly the arithmetic the full row gives it, so the
//! sampled token, the RNG stream and the final distribution are identical to [`Sampler::sample`]
//! on the full logits. Mirostat, top-k off, raising penalties or biases and raw log-probabilities
//! (which need the whole row's normaliser) read the full row.
//!
//! Out of scope: grammar masks, XTC, DRY, typical-p, Mirostat v1.

use crate::error::{Result, SessionError};
use crate::gguf::Metadata;
use std::cmp::Ordering;

/// Sampling parameters. [`Default`] is the built-in table of runtime.md §5.1;
/// [`SamplerParams::from_metadata`] applies a model's `general.sampling.*` on top.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    /// `≤ 0` is greedy.
    pub temperature: f32,
    /// 0 = off; 1 = greedy.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// Keep `p ≥ min_p · p_max`; 0 = off.
    pub min_p: f32,
    /// 1.0 = off.
    pub repetition_penalty: f32,
    /// The last N tokens (prompt and generated) the penalties look at.
    pub penalty_window: usize,
    /// Subtracted once from every token present in the window.
    pub presence_penalty: f32,
    /// Subtracted `count` times from every token in the window.
    pub frequency_penalty: f32,
    /// `(id, additive bias)`; `f32::NEG_INFINITY` bans.
    pub logit_bias: Vec<(u32, f32)>,
    /// Tokens that are never sampled.
    pub banned_tokens: Vec<u32>,
    /// Re-seed the session's RNG with this at the start of a request; `None` continues its stream
    /// (seeded from entropy, or [`crate::session::SessionOptions::seed`], at session creation).
    pub seed: Option<u64>,
    /// 0 = off, 2 = Mirostat v2.
    pub mirostat: u8,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repetition_penalty: 1.1,
            penalty_window: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            banned_tokens: Vec::new(),
            seed: None,
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding with no penalties (argmax of the raw logits plus any bias).
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            repetition_penalty: 1.0,
            ..Default::default()
        }
    }

    /// The built-in defaults with a model's recommended `general.sampling.*` values on top
    /// (`temp`, `top_k`, `top_p`, `min_p`, `penalty_last_n` (−1 = the whole context),
    /// `penalty_repeat`, `mirostat`, `mirostat_tau`, `mirostat_eta`; llama.cpp's
    /// `LLM_KV_SAMPLING_*`). The keys are advisory: one of the wrong type or out of range is
    /// ignored rather than failing the model load.
    pub fn from_metadata(md: &Metadata) -> Self {
        let mut p = SamplerParams::default();
        let f = |k: &str| {
            md.float(&format!("general.sampling.{k}"))
                .ok()
                .flatten()
                .map(|v| v as f32)
                .filter(|v| v.is_finite())
        };
        let i = |k: &str| {
            md.int::<i64>(&format!("general.sampling.{k}"))
                .ok()
                .flatten()
        };
        if let Some(v) = f("temp") {
            p.temperature = v;
        }
        if let Some(v) = i("top_k").filter(|&v| v >= 0) {
            p.top_k = v as usize;
        }
        if let Some(v) = f("top_p").filter(|v| (0.0..=1.0).contains(v)) {
            p.top_p = v;
        }
        if let Some(v) = f("min_p").filter(|v| (0.0..=1.0).contains(v)) {
            p.min_p = v;
        }
        match i("penalty_last_n") {
            Some(-1) => p.penalty_window = usize::MAX,
            Some(v) if v >= 0 => p.penalty_window = v as usize,
            _ => {}
        }
        if let Some(v) = f("penalty_repeat").filter(|&v| v > 0.0) {
            p.repetition_penalty = v;
        }
        if let Some(v) = i("mirostat").filter(|&v| v == 0 || v == 2) {
            p.mirostat = v as u8;
        }
        if let Some(v) = f("mirostat_tau") {
            p.mirostat_tau = v;
        }
        if let Some(v) = f("mirostat_eta").filter(|&v| v >= 0.0) {
            p.mirostat_eta = v;
        }
        p
    }

    /// Whether sampling is argmax: T ≤ 0 (also with Mirostat), or top-k 1 (Mirostat, which
    /// ignores top-k, off).
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || (self.mirostat == 0 && self.top_k == 1)
    }

    /// Checks every value ([`SessionError::BadParams`]); token ids against `n_vocab`.
    pub fn validate(&self, n_vocab: usize) -> Result<()> {
        let bad = |m: String| Err(SessionError::BadParams(m).into());
        if self.temperature.is_nan() || self.temperature.is_infinite() {
            return bad(format!("temperature {} is not finite", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p {} is outside [0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} is outside [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty {} must be positive",
                self.repetition_penalty
            ));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence and frequency penalties must be finite".into());
        }
        if self.mirostat != 0 && self.mirostat != 2 {
            return bad(format!(
                "mirostat {} is not supported (0 or 2)",
                self.mirostat
            ));
        }
        let eta_ok = self.mirostat_eta.is_finite() && self.mirostat_eta >= 0.0;
        if !(self.mirostat_tau.is_finite() && eta_ok) {
            return bad("mirostat tau and eta must be finite, eta ≥ 0".into());
        }
        for &(id, b) in &self.logit_bias {
            if id as usize >= n_vocab {
                return bad(format!(
                    "logit_bias token {id} is outside the vocabulary of {n_vocab}"
                ));
            }
            if b.is_nan() || b == f32::INFINITY {
                return bad(format!("logit_bias of token {id} is {b}"));
            }
        }
        if let Some(&id) = self.banned_tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return bad(format!(
                "banned token {id} is outside the vocabulary of {n_vocab}"
            ));
        }
        Ok(())
    }
}

/// The xorshift64 generator of runtime.md §5.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

/// Replaces a zero state, which xorshift would never leave.
const ZERO_STATE: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    /// A generator seeded through splitmix64 (nearby seeds give unrelated streams).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng::from_state(z ^ (z >> 31))
    }

    /// Resumes from a saved [`Rng::state`] (a zero state maps to a fixed non-zero constant).
    pub fn from_state(state: u64) -> Rng {
        Rng {
            state: if state == 0 { ZERO_STATE } else { state },
        }
    }

    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Uniform in `[0, 1)` with 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }
}

/// Everything of the sampler that evolves from step to step (saved in snapshots and state).
/// The penalty window is the session's token history, saved with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerState {
    pub rng: u64,
    /// Mirostat's running surprise target.
    pub mu: f32,
}

/// Which distribution log-probabilities describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogprobSource {
    /// Log-softmax of the raw model logits (before penalties, bias and temperature): runtime.md
    /// §5.1 and OpenAI's convention.
    #[default]
    Raw,
    /// The final distribution the token was drawn from, after every filter and renormalisation
    /// (tokens filtered out are absent; greedy gives the chosen token log-probability 0).
    Final,
}

/// One token and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// A sampled token with the log-probabilities that were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// The chosen token's log-probability (when asked for).
    pub logprob: Option<f32>,
    /// The `n` most likely tokens, most likely first (ties: lower id first).
    pub top_logprobs: Vec<TokenLogprob>,
}

/// What log-probabilities to compute with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogprobRequest {
    pub logprob: bool,
    pub top_n: usize,
    pub source: LogprobSource,
}

/// The sampler of one session: parameters plus evolving state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
    mu: f32,
    /// Working copy of the logits (reused between steps).
    work: Vec<f32>,
    /// Candidates `(id, logit or probability)`.
    cand: Vec<(u32, f32)>,
}

/// Descending by value, then ascending by id (deterministic ties); NaN sorts last.
fn by_value_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

pub use crate::backend::cpu::ops::{argmax, rank_desc};

/// [`argmax`] of `(id, value)` pairs in any order: the largest value at the lowest id (−0 = +0),
/// NaN never; 0 when every value is NaN (as [`argmax`] of the full row they were taken from).
fn argmax_pairs(c: &[(u32, f32)]) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for &(i, v) in c {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((bi, bv)) if !(v > bv || (v == bv && i < bi)) => {}
            _ => best = Some((i, v)),
        }
    }
    best.map_or(0, |b| b.0)
}

/// The largest candidate count [`Sampler::top_candidates`] asks for (the GPU's
/// `ops::TOPK_MAX`).
pub const MAX_TOP_CANDIDATES: usize = 256;

/// `log Σ exp(x)` in f64 (−∞ when every entry is −∞ or NaN).
fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let s: f64 = x
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| ((v - m) as f64).exp())
        .sum();
    m as f64 + s.ln()
}

impl Sampler {
    /// A sampler whose RNG is seeded with `seed` (Mirostat's `mu` starts at `2τ`).
    pub fn new(params: SamplerParams, seed: u64) -> Sampler {
        let mu = 2.0 * params.mirostat_tau;
        Sampler {
            params,
            rng: Rng::new(seed),
            mu,
            work: Vec::new(),
            cand: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// New parameters for the next request: the RNG stream continues (unless `params.seed` is
    /// set, which re-seeds it) and Mirostat's `mu` restarts at `2τ`.
    pub fn set_params(&mut self, params: SamplerParams) {
        if let Some(seed) = params.seed {
            self.rng = Rng::new(seed);
        }
        self.mu = 2.0 * params.mirostat_tau;
        self.params = params;
    }

    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    pub fn state(&self) -> SamplerState {
        SamplerState {
            rng: self.rng.state(),
            mu: self.mu,
        }
    }

    pub fn set_state(&mut self, s: SamplerState) {
        self.rng = Rng::from_state(s.rng);
        self.mu = s.mu;
    }

    /// Samples one token from `logits` (`[n_vocab]`) given the token `history` (the penalty
    /// window is its tail).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.sample_with(logits, history, LogprobRequest::default())
            .id
    }

    /// [`Sampler::sample`] with log-probabilities.
    pub fn sample_with(&mut self, logits: &[f32], history: &[u32], lp: LogprobRequest) -> Sampled {
        let id = self.pick(logits, history);
        let mut out = Sampled {
            id,
            logprob: None,
            top_logprobs: Vec::new(),
        };
        if !lp.logprob && lp.top_n == 0 {
            return out;
        }
        match lp.source {
            LogprobSource::Raw => {
                let lse = log_sum_exp(logits);
                let lp_of = |v: f32| (v as f64 - lse) as f32;
                if lp.logprob {
                    out.logprob = Some(lp_of(logits[id as usize]));
                }
                if lp.top_n > 0 {
                    let mut c: Vec<(u32, f32)> = logits
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (i as u32, v))
                        .collect();
                    let n = lp.top_n.min(c.len());
                    if n < c.len() {
                        c.select_nth_unstable_by(n - 1, by_value_desc);
                        c.truncate(n);
                    }
                    c.sort_by(by_value_desc);
                    out.top_logprobs = c
                        .into_iter()
                        .map(|(id, v)| TokenLogprob {
                            id,
                            logprob: lp_of(v),
                        })
                        .collect();
                }
            }
            LogprobSource::Final => self.final_logprobs(&mut out, lp),
        }
        out
    }

    /// [`LogprobSource::Final`] log-probabilities into `out`: `cand` holds the final
    /// distribution (probabilities, sorted) after a pick.
    fn final_logprobs(&self, out: &mut Sampled, lp: LogprobRequest) {
        if lp.logprob {
            let p = self
                .cand
                .iter()
                .find(|c| c.0 == out.id)
                .map_or(0.0, |c| c.1);
            out.logprob = Some(p.ln());
        }
        out.top_logprobs = self
            .cand
            .iter()
            .take(lp.top_n)
            .map(|&(id, p)| TokenLogprob {
                id,
                logprob: p.ln(),
            })
            .collect();
    }

    /// Steps 1–9; leaves the final distribution (id, probability), sorted, in `self.cand`.
    fn pick(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut work = std::mem::take(&mut self.work);
        work.clear();
        work.extend_from_slice(logits);
        self.penalize(&mut work, history);
        for &(id, b) in &self.params.logit_bias {
            if let Some(l) = work.get_mut(id as usize) {
                *l += b;
            }
        }
        for &id in &self.params.banned_tokens {
            if let Some(l) = work.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let id = if self.params.is_greedy() {
            argmax(&work)
        } else if self.params.mirostat == 2 {
            self.mirostat_v2(&work)
        } else {
            let all = work.iter().enumerate().map(|(i, &v)| (i as u32, v));
            self.filter_and_draw(all).unwrap_or_else(|| argmax(&work))
        };
        if self.params.is_greedy() || self.cand.is_empty() {
            self.cand.clear();
            self.cand.push((id, 1.0));
        }
        self.work = work;
        id
    }

    /// How many of the largest raw logits (with their ids) [`Sampler::sample_top_with`] needs
    /// to sample exactly what [`Sampler::sample_with`] samples from the whole row, given the
    /// token `history` the next sample will see: `k` plus the tokens that penalties, biases and
    /// bans touch (see the module's comment); `None` when the sampler needs the full row
    /// (Mirostat, top-k off, a step that can raise a logit, more than
    /// [`MAX_TOP_CANDIDATES`]). Greedy is top-1.
    pub fn top_candidates(&self, history: &[u32]) -> Option<usize> {
        let p = &self.params;
        let k = if p.is_greedy() {
            1
        } else if p.mirostat != 0 || p.top_k == 0 {
            return None;
        } else {
            p.top_k
        };
        let mut touched = 0usize;
        if let Some(window) = self.penalty_window(history) {
            let lowers = p.repetition_penalty >= 1.0
                && p.presence_penalty >= 0.0
                && p.frequency_penalty >= 0.0;
            if !lowers {
                return None;
            }
            let mut w = window.to_vec();
            w.sort_unstable();
            w.dedup();
            touched += w.len();
        }
        if p.logit_bias.iter().any(|&(_, b)| b > 0.0) {
            return None;
        }
        touched += p.logit_bias.len() + p.banned_tokens.len();
        Some(k + touched).filter(|&n| n <= MAX_TOP_CANDIDATES)
    }

    /// [`Sampler::sample_with`] from the `n` largest raw logits of the row, `top` (`(id, logit)`,
    /// any order, NaN never, all of the row's non-NaN values when fewer than `n`), where `n`
    /// is what [`Sampler::top_candidates`] gave for this `history`: the same token, RNG
    /// stream, state and final distribution (see the module's comment). Raw log-probabilities
    /// need the whole row: asking for them is [`SessionError::BadParams`].
    pub fn sample_top_with(
        &mut self,
        top: &[(u32, f32)],
        history: &[u32],
        lp: LogprobRequest,
    ) -> Result<Sampled> {
        if lp.source == LogprobSource::Raw && (lp.logprob || lp.top_n > 0) {
            return Err(SessionError::BadParams(
                "raw log-probabilities need the full logits, not the top candidates".into(),
            )
            .into());
        }
        let id = self.pick_top(top, history);
        let mut out = Sampled {
            id,
            logprob: None,
            top_logprobs: Vec::new(),
        };
        self.final_logprobs(&mut out, lp);
        Ok(out)
    }

    /// [`Sampler::pick`] on candidates: each gets the arithmetic of its entry of the full row.
    fn pick_top(&mut self, top: &[(u32, f32)], history: &[u32]) -> u32 {
        let mut w = top.to_vec();
        w.sort_unstable_by_key(|c| c.0);
        fn at(w: &mut [(u32, f32)], id: u32) -> Option<&mut f32> {
            w.binary_search_by_key(&id, |c| c.0)
                .ok()
                .map(|i| &mut w[i].1)
        }
        self.penalize_runs(history, |id, n, pen| {
            if let Some(v) = at(&mut w, id) {
                *v = pen(*v, n);
            }
        });
        for &(id, b) in &self.params.logit_bias {
            if let Some(l) = at(&mut w, id) {
                *l += b;
            }
        }
        for &id in &self.params.banned_tokens {
            if let Some(l) = at(&mut w, id) {
                *l = f32::NEG_INFINITY;
            }
        }
        let id = if self.params.is_greedy() {
            argmax_pairs(&w)
        } else {
            self.filter_and_draw(w.iter().copied())
                .unwrap_or_else(|| argmax_pairs(&w))
        };
        if self.params.is_greedy() || self.cand.is_empty() {
            self.cand.clear();
            self.cand.push((id, 1.0));
        }
        id
    }

    /// The penalty window's tokens, `None` when the penalties are off.
    fn penalty_window<'h>(&self, history: &'h [u32]) -> Option<&'h [u32]> {
        let p = &self.params;
        let off =
            p.repetition_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
        if off || p.penalty_window == 0 || history.is_empty() {
            return None;
        }
        Some(&history[history.len().saturating_sub(p.penalty_window)..])
    }

    /// Step 1: `f(id, count, penalty)` for each distinct token of the window, in id order,
    /// where `penalty(logit, count)` is the penalized logit.
    fn penalize_runs(
        &self,
        history: &[u32],
        mut f: impl FnMut(u32, usize, &dyn Fn(f32, usize) -> f32),
    ) {
        let Some(window) = self.penalty_window(history) else {
            return;
        };
        let p = &self.params;
        let pen = |mut v: f32, n: usize| {
            if v > 0.0 {
                v /= p.repetition_penalty;
            } else {
                v *= p.repetition_penalty;
            }
            v - (n as f32 * p.frequency_penalty + p.presence_penalty)
        };
        let mut window = window.to_vec();
        window.sort_unstable();
        for run in window.chunk_by(|a, b| a == b) {
            f(run[0], run.len(), &pen);
        }
    }

    /// Step 1 on a full row, each distinct token of the window once.
    fn penalize(&self, l: &mut [f32], history: &[u32]) {
        self.penalize_runs(history, |id, n, pen| {
            if let Some(v) = l.get_mut(id as usize) {
                *v = pen(*v, n);
            }
        });
    }

    /// Steps 4–9 over `(id, logit)` items (a full row or its top candidates); `None` (and
    /// `self.cand` empty) when every logit is NaN or −∞.
    fn filter_and_draw(&mut self, items: impl Iterator<Item = (u32, f32)>) -> Option<u32> {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(items.filter(|&(_, v)| !v.is_nan() && v > f32::NEG_INFINITY));
        if cand.is_empty() {
            return None;
        }
        // Top-k on the logits before temperature (the module's comment), then temperature.
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, rank_desc);
            cand.truncate(p.top_k);
        }
        for c in cand.iter_mut() {
            c.1 *= inv_t;
        }
        cand.sort_by(by_value_desc);
        softmax_sorted(cand);
        if p.min_p > 0.0 {
            let min = p.min_p * cand[0].1;
            let keep = cand.iter().take_while(|c| c.1 >= min).count().max(1);
            cand.truncate(keep);
        }
        if p.top_p < 1.0 {
            let mut cum = 0.0f32;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                cum += c.1;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }
        renormalize(cand);
        Some(draw(cand, &mut self.rng))
    }

    fn mirostat_v2(&mut self, l: &[f32]) -> u32 {
        let p = &self.params;
        let t = p.temperature; // > 0: T ≤ 0 is greedy
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(
            l.iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan() && **v > f32::NEG_INFINITY)
                .map(|(i, &v)| (i as u32, v / t)),
        );
        if cand.is_empty() {
            let id = argmax(l);
            cand.push((id, 1.0));
            return id;
        }
        cand.sort_by(by_value_desc);
        softmax_sorted(cand);
        let mu = self.mu;
        let keep = cand.iter().take_while(|c| -c.1.log2() <= mu).count().max(1);
        cand.truncate(keep);
        renormalize(cand);
        let id = draw(cand, &mut self.rng);
        let p_chosen = cand.iter().find(|c| c.0 == id).map_or(1.0, |c| c.1);
        let surprise = -p_chosen.log2();
        self.mu -= p.mirostat_eta * (surprise - p.mirostat_tau);
        id
    }
}

/// Logits (sorted descending) → probabilities in place.
fn softmax_sorted(cand: &mut [(u32, f32)]) {
    let m = cand[0].1;
    let mut sum = 0.0f64;
    for c in cand.iter_mut() {
        c.1 = (c.1 - m).exp();
        sum += c.1 as f64;
    }
    for c in cand.iter_mut() {
        c.1 = (c.1 as f64 / sum) as f32;
    }
}

fn renormalize(cand: &mut [(u32, f32)]) {
    let sum: f64 = cand.iter().map(|c| c.1 as f64).sum();
    if sum > 0.0 {
        for c in cand.iter_mut() {
            c.1 = (c.1 as f64 / sum) as f32;
        }
    }
}

/// One uniform draw against the CDF; past the end (rounding) the last candidate.
fn draw(cand: &[(u32, f32)], rng: &mut Rng) -> u32 {
    let r = rng.next_f32();
    let mut cum = 0.0f32;
    for c in cand {
        cum += c.1;
        if r < cum {
            return c.0;
        }
    }
    cand.last().map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stochastic(t: f32) -> SamplerParams {
        SamplerParams {
            temperature: t,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            ..Default::default()
        }
    }

    fn logits(n: usize, salt: u64) -> Vec<f32> {
        let mut r = Rng::new(salt);
        (0..n).map(|_| r.next_f32() * 8.0 - 4.0).collect()
    }

    #[test]
    fn greedy_is_argmax_and_t0_topk1_are_greedy() {
        let l = logits(300, 1);
        let want = argmax(&l);
        assert_eq!(
            want as usize,
            l.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        );
        for p in [
            SamplerParams::greedy(),
            SamplerParams {
                top_k: 1,
                repetition_penalty: 1.0,
                temperature: 1.5,
                ..Default::default()
            },
            SamplerParams {
                temperature: -1.0,
                repetition_penalty: 1.0,
                ..Default::default()
            },
        ] {
            assert!(p.is_greedy());
            let mut s = Sampler::new(p, 7);
            for _ in 0..5 {
                assert_eq!(s.sample(&l, &[]), want);
            }
        }
        // the first maximum wins
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn seeded_sequence_is_deterministic_and_survives_a_state_snapshot() {
        let params = SamplerParams {
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let steps: Vec<Vec<f32>> = (0..10).map(|i| logits(100, 10 + i)).collect();
        let run = |s: &mut Sampler, from: usize| -> Vec<u32> {
            steps[from..].iter().map(|l| s.sample(l, &[])).collect()
        };
        let mut a = Sampler::new(params.clone(), 42);
        let mut b = Sampler::new(params.clone(), 42);
        let ra = run(&mut a, 0);
        assert_eq!(ra, run(&mut b, 0));
        // not one repeated uniform: the draws differ from step to step
        let distinct: std::collections::BTreeSet<_> = ra.iter().collect();
        assert!(distinct.len() > 3, "{ra:?}");
        let mut c = Sampler::new(params.clone(), 43);
        assert_ne!(ra, run(&mut c, 0));

        // snapshot after 4 steps, continue, restore, continue again: identical
        let mut s = Sampler::new(params.clone(), 42);
        let first: Vec<u32> = steps[..4].iter().map(|l| s.sample(l, &[])).collect();
        assert_eq!(first, ra[..4]);
        let snap = s.state();
        let tail1 = run(&mut s, 4);
        s.set_state(snap);
        assert_eq!(run(&mut s, 4), tail1);
        assert_eq!(tail1, ra[4..]);
        // a fresh sampler given the state continues the same stream
        let mut t = Sampler::new(params, 999);
        t.set_state(snap);
        assert_eq!(run(&mut t, 4), tail1);
    }

    #[test]
    fn top_p_half_keeps_the_dominant_token() {
        let l = vec![0.0, 3.0, 0.5, 0.2, -1.0, 0.1];
        let mut s = Sampler::new(
            SamplerParams {
                top_p: 0.5,
                ..stochastic(1.0)
            },
            5,
        );
        for _ in 0..500 {
            assert_eq!(s.sample(&l, &[]), 1);
        }
    }

    #[test]
    fn repetition_penalty_100_flips_the_winner() {
        let l = vec![1.0, 5.0, 4.0, -2.0];
        let p = SamplerParams {
            repetition_penalty: 100.0,
            ..SamplerParams::greedy()
        };
        let mut s = Sampler::new(p, 1);
        assert_eq!(s.sample(&l, &[]), 1);
        assert_eq!(s.sample(&l, &[1]), 2);
        // once per distinct token: [1, 1, 1] gives 5/100, not 5/100³ (still above -2·100)
        let mut work = l.clone();
        s.penalize(&mut work, &[1, 1, 1, 3]);
        assert_eq!(work, vec![1.0, 0.05, 4.0, -200.0]);
        // outside the window: no penalty
        let s2 = Sampler::new(
            SamplerParams {
                repetition_penalty: 100.0,
                penalty_window: 1,
                ..SamplerParams::greedy()
            },
            1,
        );
        let mut work = l.clone();
        s2.penalize(&mut work, &[1, 0]);
        assert_eq!(work, vec![0.01, 5.0, 4.0, -2.0]);
    }

    #[test]
    fn presence_and_frequency_penalties() {
        let s = Sampler::new(
            SamplerParams {
                presence_penalty: 0.5,
                frequency_penalty: 0.25,
                ..SamplerParams::greedy()
            },
            1,
        );
        let mut work = vec![1.0, 1.0, 1.0];
        s.penalize(&mut work, &[2, 0, 2, 2]);
        assert_eq!(work, vec![1.0 - 0.25 - 0.5, 1.0, 1.0 - 0.75 - 0.5]);
    }

    #[test]
    fn uniform_logits_draw_each_token_about_equally() {
        let l = vec![0.0f32; 4];
        let mut s = Sampler::new(stochastic(1.0), 2024);
        let mut counts = [0usize; 4];
        for _ in 0..1000 {
            counts[s.sample(&l, &[]) as usize] += 1;
        }
        for c in counts {
            assert!((100..=400).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn min_p_filters_unlikely_tokens() {
        // p ∝ e^{0, -1, -5}: min_p 0.2 keeps p ≥ 0.2·p_max, i.e. ids 0 and 1 (e^-1 ≈ 0.37)
        let l = vec![0.0, -1.0, -5.0, -6.0];
        let mut s = Sampler::new(
            SamplerParams {
                min_p: 0.2,
                ..stochastic(1.0)
            },
            9,
        );
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[s.sample(&l, &[]) as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        // without min-p the tail shows up
        let mut s = Sampler::new(stochastic(3.0), 9);
        let tail = (0..2000).filter(|_| s.sample(&l, &[]) >= 2).count();
        assert!(tail > 0);
    }

    #[test]
    fn top_k_bias_and_bans() {
        let l = vec![3.0, 2.0, 1.0, 0.0, -1.0];
        let mut s = Sampler::new(
            SamplerParams {
                top_k: 2,
                ..stochastic(5.0)
            },
            3,
        );
        for _ in 0..300 {
            assert!(s.sample(&l, &[]) < 2);
        }
        // bias and bans also apply at T = 0
        let mut s = Sampler::new(
            SamplerParams {
                logit_bias: vec![(4, 10.0)],
                banned_tokens: vec![0],
                ..SamplerParams::greedy()
            },
            3,
        );
        assert_eq!(s.sample(&l, &[]), 4);
        let mut s = Sampler::new(
            SamplerParams {
                banned_tokens: vec![0, 1],
                ..SamplerParams::greedy()
            },
            3,
        );
        assert_eq!(s.sample(&l, &[]), 2);
        // everything banned: argmax fallback, no panic
        let mut s = Sampler::new(
            SamplerParams {
                banned_tokens: vec![0, 1, 2, 3, 4],
                ..stochastic(1.0)
            },
            3,
        );
        assert!(s.sample(&l, &[]) < 5);
    }

    #[test]
    fn mirostat_mu_adapts() {
        let l = logits(200, 77);
        let p = SamplerParams {
            mirostat: 2,
            mirostat_tau: 3.0,
            mirostat_eta: 0.1,
            ..stochastic(1.0)
        };
        let mut s = Sampler::new(p, 11);
        assert_eq!(s.state().mu, 6.0);
        let mut mus = Vec::new();
        for _ in 0..50 {
            s.sample(&l, &[]);
            mus.push(s.state().mu);
        }
        assert!(mus.iter().any(|&m| m != 6.0));
        assert!(mus.iter().all(|m| m.is_finite()));
    }

    #[test]
    fn logprobs_raw_and_final() {
        let l = vec![2.0f32, 1.0, 0.0, -1.0];
        let lse = l.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        let mut s = Sampler::new(SamplerParams::greedy(), 1);
        let req = LogprobRequest {
            logprob: true,
            top_n: 3,
            source: LogprobSource::Raw,
        };
        let out = s.sample_with(&l, &[], req);
        assert_eq!(out.id, 0);
        assert!((out.logprob.unwrap() as f64 - (2.0 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = out.top_logprobs.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!((out.top_logprobs[2].logprob as f64 - (0.0 - lse)).abs() < 1e-6);
        let fin = s.sample_with(
            &l,
            &[],
            LogprobRequest {
                source: LogprobSource::Final,
                ..req
            },
        );
        assert_eq!(fin.logprob, Some(0.0));
        assert_eq!(fin.top_logprobs.len(), 1);
        // Final with top-k 2 at T = 1: the two survivors renormalised
        let mut s = Sampler::new(
            SamplerParams {
                top_k: 2,
                ..stochastic(1.0)
            },
            1,
        );
        let fin = s.sample_with(
            &l,
            &[],
            LogprobRequest {
                source: LogprobSource::Final,
                ..req
            },
        );
        assert_eq!(fin.top_logprobs.len(), 2);
        let p0 = 1.0 / (1.0 + (-1.0f64).exp());
        assert!((fin.top_logprobs[0].logprob as f64 - p0.ln()).abs() < 1e-6);
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(SamplerParams::default().validate(10).is_ok());
        for p in [
            SamplerParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplerParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplerParams {
                min_p: -0.1,
                ..Default::default()
            },
            SamplerParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            SamplerParams {
                mirostat: 1,
                ..Default::default()
            },
            SamplerParams {
                logit_bias: vec![(10, 1.0)],
                ..Default::default()
            },
            SamplerParams {
                banned_tokens: vec![11],
                ..Default::default()
            },
        ] {
            assert_eq!(p.validate(10).unwrap_err().code(), "session_params");
        }
    }

    /// A row of `n` logits on a coarse grid (ties everywhere), with ±0, −∞ and NaN mixed in.
    fn tied_row(n: usize, salt: u64) -> Vec<f32> {
        let mut r = Rng::new(salt);
        (0..n)
            .map(|_| match r.next_u64() % 24 {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => -0.0,
                3 => 0.0,
                _ => (r.next_f32() * 16.0).floor() / 4.0 - 2.0,
            })
            .collect()
    }

    /// Sampling from [`Sampler::top_candidates`] of the row's largest logits gives the token,
    /// RNG state and final distribution of sampling from the whole row, step after step, for
    /// greedy and top-k chains with temperature, min-p, top-p, lowering penalties, negative
    /// biases and bans, on rows full of ties, signed zeros, −∞ and NaN.
    #[test]
    fn top_candidates_sample_exactly_as_the_full_row() {
        let base = SamplerParams {
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let sets = [
            SamplerParams::greedy(),
            SamplerParams {
                repetition_penalty: 1.3,
                penalty_window: 16,
                logit_bias: vec![(5, -0.5), (7, -100.0)],
                banned_tokens: vec![3],
                ..SamplerParams::greedy()
            },
            SamplerParams {
                top_k: 1,
                temperature: 0.8,
                ..base.clone()
            },
            SamplerParams {
                top_k: 2,
                temperature: 1.0,
                top_p: 1.0,
                ..base.clone()
            },
            SamplerParams {
                temperature: 0.7,
                ..Default::default()
            },
            SamplerParams {
                top_k: 40,
                temperature: 1.3,
                top_p: 0.95,
                min_p: 0.05,
                repetition_penalty: 1.1,
                presence_penalty: 0.5,
                frequency_penalty: 0.25,
                penalty_window: 32,
                logit_bias: vec![(11, -1.0), (11, -0.25), (2, 0.0)],
                banned_tokens: vec![0, 1],
                ..Default::default()
            },
            SamplerParams {
                top_k: 200,
                temperature: 3.0,
                top_p: 1.0,
                ..base.clone()
            },
        ];
        let lp = LogprobRequest {
            logprob: true,
            top_n: 5,
            source: LogprobSource::Final,
        };
        for (si, params) in sets.iter().enumerate() {
            for seed in 0..8u64 {
                let mut full = Sampler::new(params.clone(), seed);
                let mut top = Sampler::new(params.clone(), seed);
                let mut history: Vec<u32> = vec![4, 4, 9, 5];
                for step in 0..24 {
                    let row = tied_row(300, seed * 1000 + step);
                    let n = top.top_candidates(&history).expect("eligible");
                    let cands = crate::backend::cpu::ops::top_k(&row, n);
                    let a = full.sample_with(&row, &history, lp);
                    let b = top.sample_top_with(&cands, &history, lp).unwrap();
                    assert_eq!(a, b, "set {si} seed {seed} step {step} (n {n})");
                    assert_eq!(full.state(), top.state());
                    history.push(a.id);
                }
            }
        }
    }

    #[test]
    fn top_candidates_refuse_what_needs_the_full_row() {
        let h = [1u32, 2, 2, 3];
        let with = |p: SamplerParams| Sampler::new(p, 1).top_candidates(&h);
        // greedy: 1, plus the window's 3 distinct tokens when penalties are on
        assert_eq!(with(SamplerParams::greedy()), Some(1));
        let d = SamplerParams::default();
        assert_eq!(with(d.clone()), Some(40 + 3));
        let none = [
            SamplerParams {
                top_k: 0,
                ..d.clone()
            },
            SamplerParams {
                mirostat: 2,
                ..d.clone()
            },
            SamplerParams {
                repetition_penalty: 0.9,
                ..d.clone()
            },
            SamplerParams {
                presence_penalty: -0.1,
                ..d.clone()
            },
            SamplerParams {
                frequency_penalty: -0.1,
                ..d.clone()
            },
            SamplerParams {
                logit_bias: vec![(4, 0.5)],
                ..d.clone()
            },
            SamplerParams {
                top_k: 255,
                ..d.clone()
            },
        ];
        for p in none {
            assert_eq!(with(p.clone()), None, "{p:?}");
        }
        // penalties that cannot apply (off, or an empty window) touch nothing
        let off = SamplerParams {
            repetition_penalty: 1.0,
            banned_tokens: vec![7],
            logit_bias: vec![(8, -1.0)],
            ..d.clone()
        };
        assert_eq!(with(off), Some(42));
        // raw log-probabilities need the whole row
        let mut s = Sampler::new(d, 1);
        let raw = LogprobRequest {
            logprob: true,
            ..Default::default()
        };
        assert_eq!(
            s.sample_top_with(&[(0, 1.0)], &h, raw).unwrap_err().code(),
            "session_params"
        );
    }

    #[test]
    fn rng_is_xorshift64_with_24_bit_draws() {
        let mut r = Rng::from_state(1);
        let mut x = 1u64;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert_eq!(r.next_u64(), x);
        assert_eq!(Rng::from_state(0).state(), ZERO_STATE);
        let mut r = Rng::new(0);
        for _ in 0..1000 {
            let f = r.next_f32();
            assert!((0.0..1.0).contains(&f));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}

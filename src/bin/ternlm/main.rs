//! The native `ternlm` command: a thin adapter over the library (STYLE.md practice 1).

mod download;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use ternlm::backend::gpu::{GpuContext, GpuOptions};
use ternlm::gguf::SplitSet;
use ternlm::model::{GpuLoader, LogitsFor, Model};
use ternlm::session::{
    Engine, Event, GenerateParams, Input, SamplerParams, Session, SessionOptions, Stats,
};
use ternlm::tokenizer::chat::{ChatMessage, ChatTemplate};
use ternlm::tokenizer::Tokenizer;
use ternlm::Error;

/// The default model, fetched by the README's setup command (scripts/fetch-models.sh).
const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    Cpu,
    Gpu,
    /// The GPU when an adapter exists, else the CPU.
    Auto,
}

/// Options every command that loads a model takes.
#[derive(Args, Debug)]
struct ModelArgs {
    /// A .gguf file, any file of a split set, or an http(s) URL (downloaded once into the cache).
    /// Default: SmolLM2-135M-Instruct, fetched by scripts/fetch-models.sh.
    #[arg(short, long)]
    model: Option<String>,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

/// Sampling flags; unset ones keep the model's defaults (`general.sampling.*`) or ternlm's.
#[derive(Args, Debug)]
struct SamplingArgs {
    /// Temperature (0 = greedy).
    #[arg(long)]
    temp: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repeat_penalty: Option<f32>,
    /// RNG seed: the same seed gives the same text.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop strings (repeatable); never printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Context size in tokens (default: 2048, capped by the model's training context).
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,
}

impl SamplingArgs {
    fn params(&self, engine: &Engine) -> SamplerParams {
        let mut p = engine.default_sampling().clone();
        if let Some(t) = self.temp {
            p.temperature = t;
        }
        if let Some(k) = self.top_k {
            p.top_k = k;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.min_p {
            p.min_p = v;
        }
        if let Some(v) = self.repeat_penalty {
            p.repetition_penalty = v;
        }
        p.seed = self.seed;
        p
    }

    fn session(&self, engine: &Engine) -> ternlm::Result<Session> {
        engine.session(SessionOptions {
            n_ctx: self.ctx_size,
            seed: self.seed,
            ..Default::default()
        })
    }
}

/// Streams one generation's text to stdout; returns the generated ids and the statistics.
fn stream(
    session: &mut Session,
    input: Input,
    params: GenerateParams,
) -> ternlm::Result<(Vec<u32>, Stats)> {
    let mut out = std::io::stdout().lock();
    let mut ids = Vec::new();
    for ev in session.generate(input, params)? {
        match ev? {
            Event::Token { id, text_delta, .. } => {
                ids.push(id);
                let _ = out.write_all(text_delta.as_bytes());
                let _ = out.flush();
            }
            Event::Text { text_delta } => {
                let _ = out.write_all(text_delta.as_bytes());
            }
            Event::Done(stats) => return Ok((ids, stats)),
        }
    }
    Err(Error::Usage("generation ended without statistics".into()))
}

fn print_stats(s: &Stats) {
    eprintln!(
        "\n[{}] prompt {} tokens ({} cached), generated {}; ttft {:.1} ms; prefill {:.1} tok/s; decode {:.1} tok/s",
        s.finish_reason.as_str(),
        s.n_prompt,
        s.n_cached,
        s.n_generated,
        s.ttft_ms,
        s.prefill_tps,
        s.decode_tps
    );
}

/// `$TERNLM_CACHE`, else `$XDG_CACHE_HOME/ternlm`, else `~/.cache/ternlm`.
fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("TERNLM_CACHE") {
        return c.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("ternlm")
}

impl ModelArgs {
    /// The model's local path: the argument (a URL is downloaded first) or the default model.
    fn path(&self) -> ternlm::Result<PathBuf> {
        if let Some(m) = &self.model {
            return download::resolve(m, &cache_dir());
        }
        let candidates = [
            std::env::var_os("TERNLM_CACHE").map(|c| PathBuf::from(c).join("models")),
            Some(PathBuf::from(".cache/models")),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models")),
        ];
        candidates.into_iter().flatten().map(|d| d.join(DEFAULT_MODEL)).find(|p| p.exists()).ok_or_else(|| {
            Error::Usage(format!("no -m given and the default model {DEFAULT_MODEL} is not fetched: run scripts/fetch-models.sh"))
        })
    }

    /// Loads the model on the backend asked for: `gpu` streams the file (or a split set's
    /// files) to the GPU (the host holds a tensor at a time, not the file) and fails when
    /// there is no adapter or the upload fails; `auto` does the same on a hardware GPU when
    /// one works, else loads for the CPU (saying why on stderr).
    fn load(&self) -> ternlm::Result<Model> {
        let path = self.path()?;
        // TERNLM_GPU_PROFILE: time every GPU dispatch (bench reports the totals per kernel).
        let opts = GpuOptions {
            profile: std::env::var_os("TERNLM_GPU_PROFILE").is_some(),
            ..Default::default()
        };
        let on_gpu = |ctx: GpuContext| GpuLoader::load_file(ctx, &path);
        let model = match self.backend {
            Backend::Cpu => Model::from_file(&path)?,
            Backend::Gpu => on_gpu(GpuContext::new_blocking(&opts)?)?,
            // A software adapter (lavapipe, SwiftShader) is far slower than the CPU backend:
            // `auto` takes hardware GPUs only.
            Backend::Auto => {
                let why = match GpuContext::new_blocking(&opts) {
                    Ok(ctx) if ctx.adapter.device_type == "Cpu" => {
                        format!("the GPU adapter {} is software", ctx.adapter.name)
                    }
                    Ok(ctx) => match on_gpu(ctx) {
                        Ok(m) => return Ok(self.with_threads(m)),
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                eprintln!("ternlm: running on the CPU ({why})");
                Model::from_file(&path)?
            }
        };
        Ok(self.with_threads(model))
    }

    fn with_threads(&self, mut m: Model) -> Model {
        if let Some(t) = self.threads {
            m.set_threads(t.max(1));
        }
        m
    }
}

/// `"gpu"` or `"cpu"`, for reports.
fn backend_name(m: &Model) -> &'static str {
    if m.gpu().is_some() {
        "gpu"
    } else {
        "cpu"
    }
}

/// Deterministic token ids in `[0, n_vocab)` for benchmarks.
/// Seconds per dispatch of a chain of dependent tiny dispatches (a 64-element scale each) in
/// one pass: the fixed cost every kernel pays on this device. Two chain lengths, so that the
/// submit and the readback cancel.
fn dispatch_cost(ctx: &GpuContext) -> Result<f64, Error> {
    use ternlm::backend::gpu::ops;
    let buf = ctx.storage("dispatch_cost", 256);
    let run = |n: usize| -> Result<f64, Error> {
        let mut enc = ctx.recorder();
        for _ in 0..n {
            ops::unary(ctx, &mut enc, "scale", &buf, 64, 1.0)?;
        }
        let t = Instant::now();
        ctx.read_f32_blocking(Some(enc), &buf, 0, 1)?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(200)?;
    let (a, b) = (run(200)?, run(400)?);
    Ok((b - a) / 200.0)
}

fn bench_tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}

#[derive(Parser)]
#[command(
    name = "ternlm",
    version,
    about = "Run GGUF language models on WebGPU, wasm and native wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture, hyperparameters, tokenizer summary, tensor table and totals of a GGUF model.
    Inspect {
        /// A .gguf file, any file of a `name-0000N-of-0000M.gguf` split set, or an http(s) URL.
        model: String,
        /// Accepted for uniformity: inspect reads only headers and uses no backend.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Text to token ids (a JSON array), exactly as llama.cpp tokenizes it.
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        text: String,
        /// Plain text: no BOS/EOS, special-token text is not parsed as special tokens.
        #[arg(long)]
        no_special: bool,
        /// Wrap TEXT as a user message in the model's chat template (with the generation prompt).
        #[arg(long)]
        chat: bool,
    },
    /// Token ids to text.
    Detokenize {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated ids.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u32>,
        /// Drop BOS/EOS and render control tokens as nothing.
        #[arg(long)]
        no_special: bool,
    },
    /// Generates text: streams it to stdout, statistics to stderr.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// The prompt text (BOS as the model asks, special tokens parsed).
        #[arg(
            short,
            long,
            conflicts_with = "tokens",
            required_unless_present = "tokens"
        )]
        prompt: Option<String>,
        /// Raw prompt ids, used exactly as given (no BOS is added).
        #[arg(long, value_delimiter = ',')]
        tokens: Option<Vec<u32>>,
        /// Wrap the prompt as a user message in the chat template.
        #[arg(long, conflicts_with = "tokens")]
        chat: bool,
        /// Maximum tokens to generate.
        #[arg(short = 'n', long, default_value_t = 128)]
        n_predict: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Keep generating past end-of-generation tokens.
        #[arg(long)]
        ignore_eos: bool,
        /// Print the generated ids as a JSON array on the last line.
        #[arg(long)]
        print_ids: bool,
    },
    /// An interactive multi-turn chat that reuses the KV cache between turns (empty line or EOF ends).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        /// An optional system message.
        #[arg(long)]
        system: Option<String>,
        /// Maximum tokens per reply.
        #[arg(short = 'n', long, default_value_t = 512)]
        n_predict: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Raw little-endian f32 logits [n_tokens × n_vocab] for every position of the given ids.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Comma-separated ids, used exactly as given (no BOS is added).
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prefill and decode speed in tokens/s, as JSON.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt tokens.
        #[arg(short = 'p', long, default_value_t = 512)]
        n_prompt: usize,
        /// Generated tokens.
        #[arg(short = 'n', long, default_value_t = 128)]
        n_gen: usize,
        /// Timed runs of each test after the warm-up, averaged (llama-bench's `-r`, 5 there too).
        #[arg(short = 'r', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        reps: u32,
    },
    /// Tokenizer construction time and encode throughput on a text file, as JSON.
    BenchTokenizer {
        #[command(flatten)]
        model: ModelArgs,
        /// The text to encode.
        #[arg(short, long)]
        file: PathBuf,
        /// Encode runs (the best is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// Reads only the header of a model (or split set) and builds its tokenizer.
fn tokenizer(model: &Path) -> ternlm::Result<(SplitSet, Tokenizer)> {
    let set = SplitSet::open(model)?;
    let tok = Tokenizer::from_metadata(set.metadata())?;
    Ok((set, tok))
}

/// The model's chat template, or ChatML when the file has none (as llama.cpp does).
fn chat_template(set: &SplitSet, tok: &Tokenizer) -> ternlm::Result<ChatTemplate> {
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    let (bos, eos) = (text(tok.bos()), text(tok.eos()));
    match ChatTemplate::from_metadata(set.metadata(), &bos, &eos)? {
        Some(t) => Ok(t),
        None => ChatTemplate::builtin("chatml", &bos, &eos)
            .ok_or_else(|| Error::Usage("no chatml template".into())),
    }
}

/// Renders one user message with the generation prompt. A template that writes the BOS text itself
/// has it removed when the tokenizer adds BOS, so it is never doubled (llama.cpp does the same).
fn chat_prompt(set: &SplitSet, tok: &Tokenizer, user: &str) -> ternlm::Result<String> {
    let t = chat_template(set, tok)?;
    let text = t.render(&[ChatMessage::new("user", user)], true)?;
    let bos = t.bos_token();
    Ok(match text.strip_prefix(bos) {
        Some(rest) if !bos.is_empty() && tok.vocab().add_bos() => rest.to_string(),
        _ => text,
    })
}

fn run(cli: Cli) -> ternlm::Result<()> {
    match cli.command {
        Command::Inspect {
            model,
            json,
            backend: _,
        } => {
            let set = SplitSet::open(&download::resolve(&model, &cache_dir())?)?;
            let summary = ternlm::inspect::summary(&set);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).expect("JSON values serialize")
                );
            } else {
                print!("{}", ternlm::inspect::render_text(&summary));
            }
        }
        Command::Tokenize {
            model,
            text,
            no_special,
            chat,
        } => {
            let (set, tok) = tokenizer(&model.path()?)?;
            let text = if chat {
                chat_prompt(&set, &tok, &text)?
            } else {
                text
            };
            let special = !no_special;
            let ids = tok.encode(&text, special, special || chat);
            println!("{}", serde_json::to_string(&ids).expect("ids serialize"));
        }
        Command::Detokenize {
            model,
            ids,
            no_special,
        } => {
            let (_, tok) = tokenizer(&model.path()?)?;
            println!("{}", tok.decode(&ids, no_special, !no_special)?);
        }
        Command::Generate {
            model,
            prompt,
            tokens,
            chat,
            n_predict,
            sampling,
            ignore_eos,
            print_ids,
        } => {
            let engine = Engine::new(model.load()?)?;
            let mut session = sampling.session(&engine)?;
            let input = match (tokens, prompt) {
                (Some(t), _) => Input::Tokens(t),
                (None, Some(p)) if chat => Input::Chat(vec![ChatMessage::new("user", p)]),
                (None, Some(p)) => Input::Text(p),
                (None, None) => return Err(Error::Usage("give -p PROMPT or --tokens".into())),
            };
            let params = GenerateParams {
                sampling: Some(sampling.params(&engine)),
                max_tokens: Some(n_predict),
                stop: sampling.stop.clone(),
                ignore_eos,
                ..Default::default()
            };
            let (ids, stats) = stream(&mut session, input, params)?;
            print_stats(&stats);
            if print_ids {
                println!("\n{}", serde_json::to_string(&ids).expect("ids serialize"));
            }
        }
        Command::Chat {
            model,
            system,
            n_predict,
            sampling,
        } => {
            let engine = Engine::new(model.load()?)?;
            let mut session = sampling.session(&engine)?;
            let mut messages: Vec<ChatMessage> = system
                .map(|s| ChatMessage::new("system", s))
                .into_iter()
                .collect();
            let stdin = std::io::stdin();
            loop {
                eprint!("> ");
                let mut line = String::new();
                if stdin
                    .lock()
                    .read_line(&mut line)
                    .map_err(|e| Error::io("stdin", e))?
                    == 0
                    || line.trim().is_empty()
                {
                    break;
                }
                messages.push(ChatMessage::new("user", line.trim_end()));
                let params = GenerateParams {
                    sampling: Some(sampling.params(&engine)),
                    max_tokens: Some(n_predict),
                    stop: sampling.stop.clone(),
                    ..Default::default()
                };
                let (ids, stats) = stream(&mut session, Input::Chat(messages.clone()), params)?;
                println!();
                print_stats(&stats);
                messages.push(ChatMessage::new(
                    "assistant",
                    engine.detokenize(&ids, false)?,
                ));
            }
        }
        Command::Logits { model, tokens, out } => {
            let m = model.load()?;
            let mut cache = m.new_cache(tokens.len());
            let logits = m.forward(&mut cache, &tokens, LogitsFor::All)?;
            let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(&out, bytes).map_err(|e| Error::io(out.display().to_string(), e))?;
            eprintln!(
                "{} tokens x {} logits -> {}",
                tokens.len(),
                m.spec().n_vocab,
                out.display()
            );
        }
        Command::Bench {
            model,
            n_prompt,
            n_gen,
            reps,
        } => {
            let t_load = Instant::now();
            let m = model.load()?;
            let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
            let n_vocab = m.spec().n_vocab;
            let prompt = bench_tokens(n_prompt.max(1), n_vocab);
            let capacity = (n_prompt + n_gen).max(prompt.len() + 2);
            let mut cache = m.new_cache(capacity);
            // Warm-up (pipelines compiled, buffers and bind groups made), as llama-bench warms up
            // on the context it then times: a prefill and two decode steps on the timed cache.
            let id = m.forward_argmax(&mut cache, &prompt)?;
            m.greedy(&mut cache, id, 2, |_| true)?;
            // Per-kernel GPU time (with TERNLM_GPU_PROFILE), per prefill or per decode step.
            let profile = |per: f64| -> serde_json::Value {
                let p = m.gpu().map(|g| g.ctx.profile()).unwrap_or_default();
                p.iter()
                    .map(|(k, s, n)| serde_json::json!([k, s * 1e3 / per, *n as f64 / per]))
                    .collect()
            };
            profile(1.0);
            // Greedy: on the GPU only the argmax id comes back each step. Each test `reps` times
            // from an empty cache, its rate the mean of the runs' rates (llama-bench's avg_ts).
            let reps = reps as usize;
            let mut prefill_s = Vec::with_capacity(reps);
            for _ in 0..reps {
                cache.clear();
                let t0 = Instant::now();
                m.forward_argmax(&mut cache, &prompt)?;
                prefill_s.push(t0.elapsed().as_secs_f64());
            }
            let prefill_profile = profile(reps as f64);
            let dispatches_before_decode = m.gpu().map_or(0, |g| g.ctx.dispatch_count());
            let waited_before_decode = m.gpu().map_or(0.0, |g| g.ctx.waited_s());
            let mut decode_s = Vec::with_capacity(reps);
            for _ in 0..reps {
                // Decode from an empty cache, as llama-bench's tg test does; pipelined on the
                // GPU (Model::greedy: a step is recorded while the last one runs).
                cache.clear();
                let t1 = Instant::now();
                m.greedy(&mut cache, prompt[0], n_gen, |_| true)?;
                decode_s.push(t1.elapsed().as_secs_f64());
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let rates = |n: usize, v: &[f64]| v.iter().map(|t| n as f64 / t).collect::<Vec<_>>();
            let (prefill_rates, decode_rates) =
                (rates(prompt.len(), &prefill_s), rates(n_gen, &decode_s));
            let (prefill, decode) = (mean(&prefill_s), mean(&decode_s));
            let steps = (n_gen * reps).max(1) as f64;
            let mut report = serde_json::json!({
                "model": model.path()?.display().to_string(), "backend": backend_name(&m), "threads": m.threads(),
                "n_prompt": prompt.len(), "n_gen": n_gen,
                "reps": reps, "prefill_tok_s": mean(&prefill_rates), "decode_tok_s": mean(&decode_rates),
                "prefill_tok_s_runs": prefill_rates, "decode_tok_s_runs": decode_rates,
                "prefill_ms": prefill * 1e3, "decode_ms": decode * 1e3, "load_ms": load_ms,
            });
            if let Some(g) = m.gpu() {
                // Dispatches of the decode steps only; every step reads every weight once.
                let per_token = (g.ctx.dispatch_count() - dispatches_before_decode) as f64 / steps;
                let gb_s = g.weight_bytes() as f64 * n_gen as f64 / decode / 1e9;
                report["adapter"] = g.ctx.adapter.name.clone().into();
                report["shaders"] = if g.ctx.shader_checks.is_some() {
                    "trusted"
                } else {
                    "checked"
                }
                .into();
                report["weight_bytes"] = g.weight_bytes().into();
                report["dispatches_per_token"] = per_token.into();
                report["effective_gb_s"] = gb_s.into();
                // Per decode step: waiting for the GPU, and the rest (recording, host work).
                let wait = (g.ctx.waited_s() - waited_before_decode) / steps;
                report["gpu_wait_ms_per_token"] = (wait * 1e3).into();
                report["host_ms_per_token"] = ((decode / n_gen.max(1) as f64 - wait) * 1e3).into();
                let decode_profile = profile(steps);
                report["dispatch_us"] = (dispatch_cost(&g.ctx)? * 1e6).into();
                if decode_profile.as_array().is_some_and(|a| !a.is_empty()) {
                    // [kernel, GPU ms, dispatches]: for the whole prefill, per decode step.
                    report["gpu_profile_prefill"] = prefill_profile;
                    report["gpu_profile_decode"] = decode_profile;
                }
            }
            println!("{report}");
        }
        Command::BenchTokenizer { model, file, runs } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(file.display().to_string(), e))?;
            let path = model.path()?;
            let set = SplitSet::open(&path)?;
            let t0 = Instant::now();
            let tok = Tokenizer::from_metadata(set.metadata())?;
            let construct_ms = t0.elapsed().as_secs_f64() * 1e3;
            let mut best = f64::INFINITY;
            let mut n_tokens = 0;
            for _ in 0..runs.max(1) {
                let t = Instant::now();
                n_tokens = tok.encode(&text, false, false).len();
                best = best.min(t.elapsed().as_secs_f64());
            }
            let mb = text.len() as f64 / 1e6;
            let report = serde_json::json!({
                "runtime": "native", "model": path.display().to_string(), "n_vocab": tok.n_vocab(),
                "construct_ms": construct_ms, "text_bytes": text.len(), "n_tokens": n_tokens,
                "encode_ms": best * 1e3, "mb_per_s": mb / best,
            });
            println!("{report}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

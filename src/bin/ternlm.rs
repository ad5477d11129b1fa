//! The native `ternlm` command: a thin adapter over the library (STYLE.md practice 1).

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use ternlm::gguf::SplitSet;
use ternlm::tokenizer::chat::{ChatMessage, ChatTemplate};
use ternlm::tokenizer::Tokenizer;
use ternlm::Error;

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
        /// A .gguf file, or any file of a `name-0000N-of-0000M.gguf` split set.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Text to token ids (a JSON array), exactly as llama.cpp tokenizes it.
    Tokenize {
        #[arg(short, long)]
        model: PathBuf,
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
        #[arg(short, long)]
        model: PathBuf,
        /// Comma-separated ids.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<u32>,
        /// Drop BOS/EOS and render control tokens as nothing.
        #[arg(long)]
        no_special: bool,
    },
    /// Tokenizer construction time and encode throughput on a text file, as JSON.
    BenchTokenizer {
        #[arg(short, long)]
        model: PathBuf,
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
        Command::Inspect { model, json } => {
            let set = SplitSet::open(&model)?;
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
            let (set, tok) = tokenizer(&model)?;
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
            let (_, tok) = tokenizer(&model)?;
            println!("{}", tok.decode(&ids, no_special, !no_special)?);
        }
        Command::BenchTokenizer { model, file, runs } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(file.display().to_string(), e))?;
            let set = SplitSet::open(&model)?;
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
                "runtime": "native", "model": model.display().to_string(), "n_vocab": tok.n_vocab(),
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

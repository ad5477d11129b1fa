//! The native `ternlm` command: a thin adapter over the library (STYLE.md practice 1).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use ternlm::gguf::SplitSet;

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

//! `unicorn`: parse the command line, call the engine, print its results. One file
//! per subcommand; argument groups they share are in [`args`], printing in
//! [`output`], Ctrl-C in [`interrupt`]. Human-readable output by default, one JSON
//! object per line with `--json`.

mod args;
mod bench;
mod chat;
mod compare;
mod convert;
mod generate;
mod gpu;
mod import;
mod info;
mod interrupt;
mod library;
mod list;
mod output;
mod perplexity;
mod pull;
mod quantize;
mod search;
mod serve;
mod synth;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "unicorn",
    version,
    about = "Run, inspect and benchmark local language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with a model: interactive without --prompt, one reply with it.
    Chat(chat::ChatArgs),
    /// Raw completion of a prompt, no chat template.
    Generate(generate::GenerateArgs),
    /// Perplexity of a text file (llama-perplexity's definition).
    Perplexity(perplexity::PerplexityArgs),
    /// Architecture, size and tensor types of a model file.
    Info(info::InfoArgs),
    /// Prefill and decode speed, memory, and the bandwidth roofline.
    Bench(bench::BenchArgs),
    /// Convert a GGUF file to an HF folder (safetensors) that transformers loads.
    Convert(convert::ConvertArgs),
    /// Download a model from the Hugging Face Hub into the HF cache (resumable).
    Pull(pull::PullArgs),
    /// Search the Hugging Face Hub's models.
    Search(search::SearchArgs),
    /// The model library: pulled, imported, converted and cached models.
    List(list::ListArgs),
    /// Add a model file or folder to the library.
    Import(import::ImportArgs),
    /// Quantize an HF folder or GGUF to a GGUF type, with a quality report.
    Quantize(quantize::QuantizeArgs),
    /// Perplexity, KL divergence and top-1 agreement of a quantized model against its base.
    Compare(compare::CompareArgs),
    /// A random-weight model at a public model's exact shape (for benchmarks).
    Synth(synth::SynthArgs),
    Serve(serve::ServeArgs),
}

impl Command {
    /// Where the command runs a model, for the hand-over to the CUDA build.
    fn device(&self) -> Option<unicorn_engine::device::DeviceChoice> {
        match self {
            Self::Chat(a) => Some(a.model.load.device),
            Self::Generate(a) => Some(a.model.load.device),
            Self::Perplexity(a) => Some(a.model.load.device),
            Self::Bench(a) => Some(a.model.load.device),
            Self::Compare(a) => Some(a.device),
            Self::Serve(a) => Some(a.load.device),
            _ => None,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(d) = cli.command.device() {
        if let Err(e) = gpu::hand_over(d) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
    let result = match cli.command {
        Command::Chat(a) => chat::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Search(a) => search::run(a),
        Command::List(a) => list::run(a),
        Command::Import(a) => import::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Serve(a) => serve::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

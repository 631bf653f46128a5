//! `unicorn convert`: a GGUF file to an HF folder, with a progress bar; Ctrl-C
//! cancels and leaves nothing behind.

use crate::args::model_path;
use crate::interrupt::Cancellable;
use crate::output::{event, human_bytes, Reporter};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use unicorn_engine::convert::{gguf_to_hf, OutDType};

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    /// An HF folder: config.json, model.safetensors, tokenizer files.
    Safetensors,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DTypeArg {
    F32,
    Bf16,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The .gguf file to convert (or a repository id whose cached snapshot has one).
    model: String,
    /// Output format.
    #[arg(long, value_enum)]
    to: Target,
    /// Output folder (must not exist unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Weight precision of the output.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Replace an existing output folder.
    #[arg(long)]
    force: bool,
    /// Print JSON lines (progress and the result).
    #[arg(long)]
    json: bool,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let Target::Safetensors = a.to;
    let model = model_path(&a.model)?;
    if model.is_dir() {
        bail!(
            "{} is a folder; convert takes a .gguf file",
            model.display()
        );
    }
    let dtype = match a.dtype {
        DTypeArg::F32 => OutDType::F32,
        DTypeArg::Bf16 => OutDType::Bf16,
    };
    let _guard = Cancellable::start()?;
    let mut shown = Reporter::bytes(a.json, "converting");
    let report = gguf_to_hf(&model, &a.out, dtype, a.force, &mut |p| shown.show(p))
        .with_context(|| format!("converting {}", model.display()))?;
    drop(shown);
    crate::library::record(&report.out, unicorn_library::source::CONVERTED, None);
    if a.json {
        event("done", serde_json::json!({ "report": report }));
    } else {
        println!(
            "wrote {} ({} tensors, {}): {}",
            report.out.display(),
            report.tensors,
            human_bytes(report.weight_bytes as f64),
            report.files.join(", ")
        );
        if let Some(p) = &report.mmproj {
            println!(
                "with the vision tower of {} (a Gemma3ForConditionalGeneration folder)",
                p.display()
            );
        }
    }
    Ok(())
}

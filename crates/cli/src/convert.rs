//! `unicorn convert`: a GGUF file to an HF folder, with a progress bar; Ctrl-C
//! cancels and leaves nothing behind.

use crate::{cancel_requested, Cancellable};
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
    let model = crate::model_path(&a.model)?;
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
    let bar = crate::bytes_bar(a.json, 0);
    let json = a.json;
    let report = gguf_to_hf(&model, &a.out, dtype, a.force, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{} {}", p.tensors_done, p.tensors, p.tensor));
        if json {
            println!(
                "{}",
                serde_json::json!({"event": "progress", "progress": p})
            );
        }
        !cancel_requested()
    })
    .with_context(|| format!("converting {}", model.display()))?;
    bar.finish_and_clear();
    crate::library::record(
        &report.out,
        unicorn_engine::library::source::CONVERTED,
        None,
    );
    if json {
        println!("{}", serde_json::json!({"event": "done", "report": report}));
    } else {
        println!(
            "wrote {} ({} tensors, {}): {}",
            report.out.display(),
            report.tensors,
            crate::human_bytes(report.weight_bytes as f64),
            report.files.join(", ")
        );
    }
    Ok(())
}

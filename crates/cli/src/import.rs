//! `unicorn import PATH`: adds a model file or folder to the library (it is not moved).

use crate::output::{human_bytes, json_line};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use unicorn_library::source;

#[derive(Args)]
pub struct ImportArgs {
    /// A .gguf file or an HF model folder to add to the library (it is not moved).
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ImportArgs) -> Result<()> {
    let e = crate::library::open()?.add(&a.path, source::IMPORTED, None)?;
    if a.json {
        json_line(&e);
    } else {
        println!(
            "added {} ({}, {}, {})",
            e.path,
            e.architecture,
            e.quantization,
            human_bytes(e.size_bytes as f64)
        );
    }
    Ok(())
}

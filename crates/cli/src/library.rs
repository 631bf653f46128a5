//! `unicorn list` and `unicorn import`: the model library the desktop app shows too.

use crate::human_bytes;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use unicorn_engine::library::{source, Library};

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// A .gguf file or an HF model folder to add to the library (it is not moved).
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn open() -> Result<Library> {
    Library::open_default().context("opening the model library")
}

/// Records a model the CLI just wrote or fetched; a library problem is a warning,
/// never a failure of the work itself.
pub fn record(path: &std::path::Path, src: &str, repo: Option<&str>) {
    if let Err(e) = open().and_then(|l| Ok(l.add(path, src, repo)?)) {
        eprintln!("warning: not added to the model library: {e:#}");
    }
}

pub fn list(a: ListArgs) -> Result<()> {
    let lib = open()?;
    lib.scan_hf_cache(&unicorn_engine::hub::cache_dir())?;
    let entries = lib.list()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("no models yet: `unicorn pull REPO`, `unicorn import PATH` or `unicorn convert` add them ({})", lib.path().display());
    }
    for e in entries {
        println!(
            "{:<9} {:<12} {:<8} {:>10} {:>8.1}M params  {}{}{}",
            e.source,
            e.architecture,
            e.quantization,
            human_bytes(e.size_bytes as f64),
            e.parameters as f64 / 1e6,
            e.path,
            e.repo.map(|r| format!(" ({r})")).unwrap_or_default(),
            if e.present { "" } else { "  [missing]" }
        );
    }
    Ok(())
}

pub fn import(a: ImportArgs) -> Result<()> {
    let e = open()?.add(&a.path, source::IMPORTED, None)?;
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
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

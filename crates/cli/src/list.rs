//! `unicorn list`: the model library the desktop app shows too, after recording what
//! the HF cache holds.

use crate::output::{human_bytes, json_line};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ListArgs) -> Result<()> {
    let lib = crate::library::open()?;
    lib.scan_hf_cache(&unicorn_hub::cache_dir())?;
    let entries = lib.list()?;
    if a.json {
        json_line(&entries);
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

//! `unicorn search`: find models on the Hugging Face Hub, with downloads, likes,
//! licence and whether each is gated; `unicorn pull` then fetches one.

use crate::output::event;
use anyhow::Result;
use clap::Args;
use unicorn_hub::search::{Format, Sort};
use unicorn_hub::{Gated, Hub};

#[derive(Args)]
pub struct SearchArgs {
    /// Words of the model's id (empty: the most popular).
    #[arg(default_value = "")]
    query: String,
    /// Only repositories with GGUF files.
    #[arg(long, conflicts_with = "safetensors")]
    gguf: bool,
    /// Only repositories with safetensors files.
    #[arg(long)]
    safetensors: bool,
    /// Order: downloads, trending or likes (highest first).
    #[arg(long, default_value = "downloads")]
    sort: String,
    /// Most results (1 to 100).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print one JSON line per result.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SearchArgs) -> Result<()> {
    let format = match (a.gguf, a.safetensors) {
        (true, _) => Format::Gguf,
        (_, true) => Format::Safetensors,
        _ => Format::Any,
    };
    let results = Hub::from_env().search(&a.query, format, Sort::parse(&a.sort)?, a.limit)?;
    if a.json {
        for r in &results {
            event("result", serde_json::json!({ "result": r }));
        }
        event("done", serde_json::json!({ "count": results.len() }));
        return Ok(());
    }
    if results.is_empty() {
        println!("no models found");
    }
    for r in results {
        println!(
            "{:<50} {:>10} downloads {:>7} likes  {}{}",
            r.id,
            r.downloads,
            r.likes,
            r.license.as_deref().unwrap_or("licence unknown"),
            match r.gated {
                Gated::No => "",
                Gated::Auto => "  [gated]",
                Gated::Manual => "  [gated, approval by the authors]",
            }
        );
    }
    Ok(())
}

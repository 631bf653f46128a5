//! `unicorn pull`: list a Hub repository's files with sizes, then download them into
//! the HF cache with a progress bar (bytes, rate, ETA). Ctrl-C stops; the next pull
//! resumes the interrupted file.

use crate::{cancel_requested, human_bytes, Cancellable};
use anyhow::Result;
use clap::Args;
use unicorn_engine::hub::Hub;

#[derive(Args)]
pub struct PullArgs {
    /// Repository id, e.g. google/gemma-3-4b-it.
    repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Only files matching this glob (repeatable), e.g. --include '*.json'.
    #[arg(long)]
    include: Vec<String>,
    /// Print JSON lines (the file list, progress, the result).
    #[arg(long)]
    json: bool,
}

pub fn run(a: PullArgs) -> Result<()> {
    let hub = Hub::from_env();
    let listing = hub.list(&a.repo, &a.revision, &a.include)?;
    let total: u64 = listing.files.iter().map(|f| f.size).sum();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"event": "listing", "listing": listing})
        );
    } else {
        println!(
            "{} at {} ({} files, {}):",
            listing.repo,
            &listing.commit,
            listing.files.len(),
            human_bytes(total as f64)
        );
        for f in &listing.files {
            println!("  {:>10}  {}", human_bytes(f.size as f64), f.path);
        }
    }
    let _guard = Cancellable::start()?;
    let bar = crate::bytes_bar(a.json, total);
    let mut last_json = std::time::Instant::now();
    let json = a.json;
    let snap = hub.pull(&listing, &a.revision, &mut |p| {
        bar.set_position(p.bytes_done);
        bar.set_message(p.file.clone());
        if json
            && (last_json.elapsed().as_millis() >= 200 || p.file_bytes_done == p.file_bytes_total)
        {
            last_json = std::time::Instant::now();
            println!(
                "{}",
                serde_json::json!({"event": "progress", "progress": p})
            );
        }
        !cancel_requested()
    })?;
    bar.finish_and_clear();
    for model in unicorn_engine::hub::pulled_models(&snap, &listing) {
        crate::library::record(
            &model,
            unicorn_engine::library::source::HUB,
            Some(&listing.repo),
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "snapshot": snap, "commit": listing.commit})
        );
    } else {
        println!("done: {}", snap.display());
    }
    Ok(())
}

//! `unicorn pull`: list a Hub repository's files with sizes, then download them into
//! the HF cache with a progress bar (bytes, rate, ETA). Ctrl-C stops; the next pull
//! resumes the interrupted file.

use crate::interrupt::Cancellable;
use crate::output::{event, human_bytes, Reporter};
use anyhow::Result;
use clap::Args;
use unicorn_hub::Hub;

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
    /// Seconds a transfer may bring almost nothing (under 16 KiB) before it counts as
    /// stalled: retried three times, then an error (the partial file stays).
    #[arg(long, default_value_t = 30)]
    stall_timeout: u64,
}

pub fn run(a: PullArgs) -> Result<()> {
    let hub = Hub {
        stall_timeout: std::time::Duration::from_secs(a.stall_timeout.max(1)),
        ..Hub::from_env()
    };
    let listing = hub.list(&a.repo, &a.revision, &a.include)?;
    let total: u64 = listing.files.iter().map(|f| f.size).sum();
    if a.json {
        event("listing", serde_json::json!({ "listing": listing }));
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
    let mut shown = Reporter::bytes(a.json, "downloading");
    let snap = hub.pull(&listing, &a.revision, &mut |p| shown.show(p))?;
    drop(shown);
    for model in unicorn_hub::pulled_models(&snap, &listing) {
        crate::library::record(&model, unicorn_library::source::HUB, Some(&listing.repo));
    }
    if a.json {
        event(
            "done",
            serde_json::json!({"snapshot": snap, "commit": listing.commit}),
        );
    } else {
        println!("done: {}", snap.display());
    }
    Ok(())
}

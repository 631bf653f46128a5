//! `unicorn pull`: choose what to download from a Hub repository, list it with sizes,
//! then download it into the HF cache with a progress bar (bytes, rate, ETA). A GGUF
//! repository holds many quantizations: `--quant` names one (its split parts come
//! together; `--mmproj` adds the vision projector), and without it a repository with
//! several is listed, with whether each fits this machine, and the user picks. Of a
//! safetensors repository only the files the engine reads come (`--include` or
//! `--all` take others). Ctrl-C stops; the next pull resumes the interrupted file.

use crate::interrupt::Cancellable;
use crate::output::{event, human_bytes, Reporter};
use anyhow::{bail, Result};
use clap::Args;
use unicorn_hub::fit::{assess, HeaderCache, QuantFit};
use unicorn_hub::plan::{plan, Plan};
use unicorn_hub::{Hub, Listing};

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
    /// The quantization of a GGUF repository to download (Q4_K_M, Q8_0, ...; or a
    /// file's name without `.gguf`).
    #[arg(long)]
    quant: Option<String>,
    /// With --quant, the vision projector too (`--mmproj`: the only one; or name it).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    mmproj: Option<String>,
    /// Every file of the repository, whatever it holds.
    #[arg(long, conflicts_with_all = ["include", "quant"])]
    all: bool,
    /// Context length the memory estimate of each quantization is for.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
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
    let whole = hub.list(&a.repo, &a.revision, &a.include)?;
    let listing = choose(&hub, &a, &whole)?;
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

/// The files to download: everything with `--all` or `--include`; of a GGUF
/// repository the chosen quantization (asking for one when there are several); of a
/// safetensors repository what the engine reads; else everything.
fn choose(hub: &Hub, a: &PullArgs, whole: &Listing) -> Result<Listing> {
    if a.all || !a.include.is_empty() {
        return Ok(whole.clone());
    }
    let p = plan(whole);
    if a.json {
        for note in &p.notes {
            event("note", serde_json::json!({ "message": note }));
        }
    } else {
        for note in &p.notes {
            eprintln!("note: {note}");
        }
    }
    if let Some(wanted) = &a.quant {
        let q = p.quant(wanted)?;
        let mut files = q.files.clone();
        if let Some(m) = &a.mmproj {
            files.extend(p.projector(m)?.files.iter().cloned());
        }
        return Ok(whole.only(&files)?);
    }
    if a.mmproj.is_some() {
        bail!("--mmproj goes with --quant, which names the model's quantization");
    }
    match (p.quants.len(), &p.safetensors) {
        (0, Some(set)) => Ok(whole.only(&set.files)?),
        (0, None) => Ok(whole.clone()),
        (1, None) => Ok(whole.only(&p.quants[0].files)?),
        _ => {
            let fits = assess(
                hub,
                whole,
                &p,
                a.ctx,
                unicorn_engine::stats::available_memory(),
                unicorn_engine::stats::rss_bytes(),
                &HeaderCache::default(),
            );
            show_choices(a, &p, &fits);
            bail!(
                "{} holds {} quantizations; pick one with --quant: {}",
                p.repo,
                p.quants.len(),
                p.quants
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// The quantizations of `p` with size, bits per weight and fit.
fn show_choices(a: &PullArgs, p: &Plan, fits: &[QuantFit]) {
    if a.json {
        event(
            "plan",
            serde_json::json!({ "plan": p, "fits": fits, "ctx": a.ctx }),
        );
        return;
    }
    println!(
        "{} (licence {}{}), at {} tokens of context:",
        p.repo,
        p.license.as_deref().unwrap_or("unknown"),
        match p.gated {
            unicorn_hub::Gated::No => "",
            _ => ", gated",
        },
        a.ctx
    );
    for (q, f) in p.quants.iter().zip(fits) {
        let fit = match (&f.estimate, &f.error) {
            (Some(e), _) => format!(
                "needs ~{}: {}",
                human_bytes(e.memory_estimate_bytes as f64),
                if f.fits == Some(true) {
                    "fits"
                } else {
                    "does not fit"
                }
            ),
            (None, Some(e)) => format!("no estimate: {e}"),
            (None, None) => String::new(),
        };
        println!(
            "  {:<10} {:>10} {:>6}  {}{}{}",
            q.name,
            human_bytes(q.size as f64),
            f.bits_per_weight
                .map(|b| format!("{b:.2}b"))
                .unwrap_or_default(),
            fit,
            if q.files.len() > 1 {
                format!(" ({} parts)", q.files.len())
            } else {
                String::new()
            },
            if f.best_fit { "  <- best fit" } else { "" }
        );
    }
    for m in &p.mmproj {
        println!(
            "  vision projector {} ({})",
            m.files[0],
            human_bytes(m.size as f64)
        );
    }
}

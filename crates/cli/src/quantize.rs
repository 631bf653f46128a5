//! `unicorn quantize`: an HF folder or GGUF to a quantized GGUF, with a progress bar
//! and the quality report (printed, and written next to the output as JSON).

use crate::args::{model_path, RunArgs};
use crate::interrupt::Cancellable;
use crate::output::{event, human_bytes, print_tensors, Reporter};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use unicorn_common::atomic;
use unicorn_engine::formats::nf4::export as nf4_export;
use unicorn_engine::quantize::{quantize, types::QuantType};

#[derive(Args)]
pub struct QuantizeArgs {
    /// An HF folder (F32/F16/BF16), a GGUF, or a cached repository id.
    model: String,
    /// F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q4_0, Q3_K_M, Q2_K
    /// (a GGUF file), or NF4 (an HF folder in bitsandbytes' layout).
    #[arg(long)]
    to: String,
    /// Output .gguf file, or folder for NF4 (not replaced unless --force).
    #[arg(long)]
    out: PathBuf,
    /// NF4: weights per block (a power of two, 32..4096).
    #[arg(long, default_value_t = 64)]
    blocksize: usize,
    /// NF4: keep block scales in f32 instead of double-quantizing them.
    #[arg(long)]
    no_double_quant: bool,
    /// Replace an existing output (only a previous output of the same kind).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    a.run.apply()?;
    let nf4 = a.to.eq_ignore_ascii_case("nf4");
    let to = match nf4 {
        true => None,
        false => Some(QuantType::parse(&a.to).with_context(|| {
            let names: Vec<&str> = unicorn_engine::quantize::types::ALL
                .iter()
                .map(|(n, _)| *n)
                .collect();
            format!(
                "--to {}: not a type we write ({}, NF4)",
                a.to,
                names.join(", ")
            )
        })?),
    };
    let src = model_path(&a.model)?;
    let report_path = PathBuf::from(format!("{}.report.json", a.out.display()));
    atomic::check_target(&report_path, atomic::Kind::File, a.force, Some(&src))?;
    let _guard = Cancellable::start()?;
    let json = a.run.json;
    let mut shown = Reporter::bytes(json, "quantizing");
    let (tensors, summary, warnings, report) = match to {
        Some(to) => {
            let r = quantize(&src, &a.out, to, a.force, &mut |p| shown.show(p))
                .with_context(|| format!("quantizing {}", src.display()))?;
            let mut summary = format!(
                "{} → {}: {} → {} ({:.2}x), {:.2} bits per weight, {:.1} s ({:.2} GB/s of source), peak RSS {}",
                r.source,
                r.output,
                human_bytes(r.source_bytes as f64),
                human_bytes(r.output_bytes as f64),
                r.ratio,
                r.bits_per_weight,
                r.seconds,
                r.source_bytes_per_sec / 1e9,
                r.peak_rss_bytes.map(|b| human_bytes(b as f64)).unwrap_or_else(|| "n/a".into()),
            );
            if let Some(m) = &r.mmproj {
                summary += &format!("; the vision tower beside it, as llama.cpp keeps it: {m}");
            }
            (
                r.tensors.clone(),
                summary,
                r.warnings.clone(),
                serde_json::to_value(&r)?,
            )
        }
        None => {
            let r = nf4_export::export(
                &src,
                &a.out,
                a.blocksize,
                !a.no_double_quant,
                a.force,
                &mut |p| shown.show(p),
            )
            .with_context(|| format!("quantizing {} to NF4", src.display()))?;
            let summary = format!(
                "{} → {}: {} → {} ({:.2}x); {} weights in NF4 at {:.3} bits per weight; {:.1} s",
                src.display(),
                r.output,
                human_bytes(r.source_bytes as f64),
                human_bytes(r.output_bytes as f64),
                r.ratio,
                r.quantized_weights,
                r.bits_per_weight,
                r.seconds,
            );
            (
                r.tensors.clone(),
                summary,
                r.notes.clone(),
                serde_json::to_value(&r)?,
            )
        }
    };
    drop(shown);
    atomic::file(&report_path, |tmp| {
        std::fs::write(tmp, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", report_path.display()))
    })?;
    crate::library::record(&a.out, unicorn_library::source::QUANTIZED, None);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if json {
        event("done", serde_json::json!({ "report": report }));
    } else {
        print_tensors(&tensors);
        println!("{summary}; report {}", report_path.display());
    }
    Ok(())
}

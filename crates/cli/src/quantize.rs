//! `unicorn quantize`: an HF folder or GGUF to a quantized GGUF, with a progress bar
//! and the quality report (printed, and written next to the output as JSON).

use crate::{cancel_requested, human_bytes, Cancellable};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
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
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON lines (progress and the report).
    #[arg(long)]
    json: bool,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    if a.to.eq_ignore_ascii_case("nf4") {
        return run_nf4(a);
    }
    let to = QuantType::parse(&a.to).with_context(|| {
        let names: Vec<&str> = unicorn_engine::quantize::types::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect();
        format!("--to {}: not a type we write ({})", a.to, names.join(", "))
    })?;
    unicorn_engine::set_threads(a.threads);
    let src = crate::model_path(&a.model)?;
    let report_path = report_path(&a)?;
    let _guard = Cancellable::start()?;
    let bar = crate::bytes_bar(a.json, 0);
    let json = a.json;
    let mut last = std::time::Instant::now();
    let r = quantize(&src, &a.out, to, a.force, &mut |p| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_read);
        bar.set_message(format!("{}/{} {}", p.tensor_index, p.tensors, p.tensor));
        if json && last.elapsed().as_millis() >= 200 {
            last = std::time::Instant::now();
            println!(
                "{}",
                serde_json::json!({"event": "progress", "progress": p})
            );
        }
        !cancel_requested()
    })
    .with_context(|| format!("quantizing {}", src.display()))?;
    bar.finish_and_clear();
    save_report(&report_path, &r)?;
    crate::library::record(&a.out, unicorn_engine::library::source::QUANTIZED, None);
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        println!("{}", serde_json::json!({"event": "done", "report": r}));
        return Ok(());
    }
    print_tensors(&r.tensors);
    println!(
        "{} → {}: {} → {} ({:.2}x), {:.2} bits per weight, {:.1} s ({:.2} GB/s of source), peak RSS {}; report {}",
        r.source,
        r.output,
        human_bytes(r.source_bytes as f64),
        human_bytes(r.output_bytes as f64),
        r.ratio,
        r.bits_per_weight,
        r.seconds,
        r.source_bytes_per_sec / 1e9,
        r.peak_rss_bytes.map(|b| human_bytes(b as f64)).unwrap_or_else(|| "n/a".into()),
        report_path.display()
    );
    Ok(())
}

/// The per-tensor error table both quantizers print.
fn print_tensors(tensors: &[unicorn_engine::quantize::TensorReport]) {
    println!(
        "{:<40} {:<6} {:>10} {:>6} {:>10} {:>9} {:>8}",
        "tensor", "type", "bytes", "bpw", "rmse", "rel err", "SNR dB"
    );
    for t in tensors {
        println!(
            "{:<40} {:<6} {:>10} {:>6.2} {:>10.3e} {:>9.4} {:>8.1}",
            t.name,
            t.r#type,
            human_bytes(t.bytes as f64),
            t.bits_per_weight,
            t.rmse,
            t.relative_error,
            t.snr_db
        );
    }
}

/// `OUT.report.json`, refused if it exists and `--force` was not given.
fn report_path(a: &QuantizeArgs) -> Result<PathBuf> {
    let p = PathBuf::from(format!("{}.report.json", a.out.display()));
    if p.exists() && !a.force {
        anyhow::bail!("{} already exists; pass --force to replace it", p.display());
    }
    Ok(p)
}

/// Writes `report` as JSON beside the output (`OUT.report.json`), whole or not at all.
fn save_report(report_path: &std::path::Path, report: &impl serde::Serialize) -> Result<()> {
    let tmp = report_path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(report)? + "\n")
        .and_then(|_| std::fs::rename(&tmp, report_path))
        .with_context(|| format!("writing {}", report_path.display()))
}

fn run_nf4(a: QuantizeArgs) -> Result<()> {
    unicorn_engine::set_threads(a.threads);
    let src = crate::model_path(&a.model)?;
    let report_path = report_path(&a)?;
    let _guard = Cancellable::start()?;
    let json = a.json;
    let r = unicorn_engine::quantize::nf4_export::export(
        &src,
        &a.out,
        a.blocksize,
        !a.no_double_quant,
        a.force,
        &mut |done, total| {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "progress", "tensors_done": done, "tensors": total})
                );
            } else {
                eprint!("\rtensor {done}/{total}");
            }
            !cancel_requested()
        },
    )
    .with_context(|| format!("quantizing {} to NF4", src.display()))?;
    save_report(&report_path, &r)?;
    crate::library::record(&a.out, unicorn_engine::library::source::QUANTIZED, None);
    if json {
        println!("{}", serde_json::json!({"event": "done", "report": r}));
    } else {
        eprintln!();
        print_tensors(&r.tensors);
        println!(
            "{} → {}: {} → {} ({:.2}x); {} weights in NF4 at {:.3} bits per weight; {:.1} s; report {}",
            src.display(),
            r.output,
            human_bytes(r.source_bytes as f64),
            human_bytes(r.output_bytes as f64),
            r.ratio,
            r.quantized_weights,
            r.bits_per_weight,
            r.seconds,
            report_path.display()
        );
    }
    Ok(())
}

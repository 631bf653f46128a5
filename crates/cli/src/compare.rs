//! `unicorn compare BASE QUANT --text FILE`: what quantization cost, measured.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use unicorn_engine::{compare::compare, LoadOptions, LoadedModel};

#[derive(Args)]
pub struct CompareArgs {
    /// The reference model (F32/BF16 folder or GGUF).
    base: String,
    /// The quantized model.
    quant: String,
    /// UTF-8 text file to score.
    #[arg(long)]
    text: PathBuf,
    /// Window size in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// auto, cpu, cuda, cuda:N or metal (both models).
    #[arg(long, default_value = "auto")]
    pub(crate) device: unicorn_engine::device::DeviceChoice,
}

pub fn run(a: CompareArgs) -> Result<()> {
    unicorn_engine::set_threads(a.threads);
    let load = |m: &str| -> Result<LoadedModel> {
        let p = crate::model_path(m)?;
        let opts = LoadOptions {
            device: a.device,
            ..Default::default()
        };
        LoadedModel::load(&p, &opts).with_context(|| format!("loading {m}"))
    };
    let (base, quant) = (load(&a.base)?, load(&a.quant)?);
    let text = std::fs::read_to_string(&a.text)
        .with_context(|| format!("reading {}", a.text.display()))?;
    let json = a.json;
    let r = compare(
        &base,
        &quant,
        &text,
        a.ctx,
        a.max_tokens,
        &mut |done, total| {
            if !json {
                eprint!("\rwindow {done}/{total}");
            }
            true
        },
    )?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        eprintln!();
        println!(
            "perplexity {:.4} → {:.4} (ΔPPL {:+.4}, {:+.3} %), KL divergence mean {:.6} p99 {:.6}, top-1 agreement {:.2} % over {} tokens",
            r.ppl_base, r.ppl_quant, r.delta_ppl, r.delta_ppl_percent, r.kld_mean, r.kld_p99, r.top1_agreement * 100.0, r.tokens_scored
        );
    }
    Ok(())
}

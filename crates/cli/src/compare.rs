//! `unicorn compare BASE QUANT --text FILE`: what quantization cost, measured.

use crate::args::{model_path, RunArgs, ScoreArgs};
use crate::output::{json_line, Reporter};
use anyhow::{Context, Result};
use clap::Args;
use unicorn_engine::attention::KvType;
use unicorn_engine::device::DeviceChoice;
use unicorn_engine::models::HeadType;
use unicorn_engine::{compare::compare, LoadOptions, LoadedModel};

#[derive(Args)]
pub struct CompareArgs {
    /// The reference model (F32/BF16 folder or GGUF).
    base: String,
    /// The quantized model.
    quant: String,
    #[command(flatten)]
    score: ScoreArgs,
    #[command(flatten)]
    run: RunArgs,
    /// auto, cpu, cuda, cuda:N or metal (both models).
    #[arg(long, default_value = "auto")]
    pub(crate) device: DeviceChoice,
    /// The KV cache type of QUANT (f16 by default on the CPU, q8_0, f32).
    #[arg(long, value_parser = KvType::parse)]
    kv_type: Option<KvType>,
    /// The KV cache type of BASE. Comparing a model with itself, `--base-kv-type f32
    /// --kv-type q8_0` measures what the cache's type costs.
    #[arg(long, value_parser = KvType::parse)]
    base_kv_type: Option<KvType>,
    /// How QUANT's output head runs (stored, or a q8_0 copy of a dense head). With
    /// BASE the same model, measures what the Q8_0 head costs.
    #[arg(long, value_parser = HeadType::parse, default_value = "stored")]
    head_type: HeadType,
}

pub fn run(a: CompareArgs) -> Result<()> {
    a.run.apply()?;
    let load = |m: &str, kv_type, head_type| -> Result<LoadedModel> {
        let opts = LoadOptions {
            device: a.device,
            kv_type,
            head_type,
            ..Default::default()
        };
        LoadedModel::load(&model_path(m)?, &opts).with_context(|| format!("loading {m}"))
    };
    let (base, quant) = (
        load(&a.base, a.base_kv_type, HeadType::Stored)?,
        load(&a.quant, a.kv_type, a.head_type)?,
    );
    let text = a.score.read()?;
    let json = a.run.json;
    let mut shown = Reporter::count(json, "scoring");
    let r = compare(
        &base,
        &quant,
        &text,
        a.score.ctx,
        a.score.max_tokens,
        &mut |p| shown.show(p),
    )?;
    drop(shown);
    if json {
        json_line(&r);
    } else {
        println!(
            "perplexity {:.4} → {:.4} (ΔPPL {:+.4}, {:+.3} %), KL divergence mean {:.6} p99 {:.6}, top-1 agreement {:.2} % over {} tokens",
            r.ppl_base, r.ppl_quant, r.delta_ppl, r.delta_ppl_percent, r.kld_mean, r.kld_p99, r.top1_agreement * 100.0, r.tokens_scored
        );
    }
    Ok(())
}

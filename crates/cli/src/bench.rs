//! `unicorn bench`: prefill and decode speed like llama-bench, with load time, peak
//! RSS and the memory-bandwidth roofline.

use crate::args::ModelArgs;
use crate::output::{human_bytes, json_line};
use anyhow::Result;
use clap::Args;
use unicorn_engine::bench;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Prompt tokens per prefill run.
    #[arg(long, default_value_t = 512)]
    pp: usize,
    /// Tokens per decode run.
    #[arg(long, default_value_t = 128)]
    tg: usize,
    /// Repetitions.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Tokens already in the KV cache when each run starts (llama-bench's `-d`).
    #[arg(long, default_value_t = 0)]
    depth: usize,
    /// Also measure decode with this draft model against decode alone (speculative
    /// decoding): greedy, through the generation loop, runs alternating.
    #[command(flatten)]
    draft: crate::args::DraftArgs,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let model = a.model.load()?;
    let json = a.model.load.run.json;
    let opts = bench::BenchOptions {
        pp: a.pp,
        tg: a.tg,
        reps: a.reps,
        depth: a.depth,
    };
    let mut progress = |label: &str| {
        if !json {
            eprint!("\r{label:<30}");
        }
    };
    let r = bench::run(&model, opts, &mut progress)?;
    let drafted = match a.draft.load(&a.model.load)? {
        Some(d) => Some(bench::draft(
            &model,
            d,
            (a.draft.draft_min, a.draft.draft_tokens),
            opts,
            &mut progress,
        )?),
        None => None,
    };
    if json {
        let mut v = serde_json::to_value(&r)?;
        v["draft"] = serde_json::to_value(&drafted)?;
        json_line(&v);
        return Ok(());
    }
    eprintln!("\r{:<30}", "");
    println!(
        "model      {} ({}) on {}, {} threads, KV cache {}, output head {}, loaded in {:.2} s",
        r.model, r.architecture, r.device, r.threads, r.kv_type, r.head_type, r.load_s
    );
    let at = match r.depth {
        0 => String::new(),
        d => format!(" @ d{d}"),
    };
    if let Some(p) = &r.pp {
        println!(
            "{:<10} {:>9.1} ± {:.1} tok/s",
            format!("pp{}{at}", p.tokens),
            p.mean_tok_s,
            p.sd_tok_s
        );
    }
    if let Some(t) = &r.tg {
        println!(
            "{:<10} {:>9.1} ± {:.1} tok/s",
            format!("tg{}{at}", t.tokens),
            t.mean_tok_s,
            t.sd_tok_s
        );
    }
    if let Some(d) = &drafted {
        println!(
            "draft      {}: tg{} {:.1} ± {:.1} tok/s alone, {:.1} ± {:.1} with it: {:.2}x, {:.0} % of proposals accepted, ids {}",
            d.draft_model,
            d.alone.tokens,
            d.alone.mean_tok_s,
            d.alone.sd_tok_s,
            d.drafted.mean_tok_s,
            d.drafted.sd_tok_s,
            d.speedup,
            100.0 * d.acceptance_rate,
            if d.identical { "identical" } else { "DIFFERENT" }
        );
    }
    println!(
        "roofline   {} read per token at {}/s measured bandwidth → bound {:.1} tok/s; achieved {:.0} %",
        human_bytes(r.bytes_per_token as f64),
        human_bytes(r.memory_bandwidth_bytes_s),
        r.roofline_tok_s,
        r.roofline_pct
    );
    println!(
        "memory     weights {}, RSS {}, peak RSS {}",
        human_bytes(r.weights_bytes as f64),
        human_bytes(r.rss_bytes as f64),
        r.peak_rss_bytes
            .map(|b| human_bytes(b as f64))
            .unwrap_or_else(|| "n/a".into())
    );
    if let Some(v) = r.vram_bytes {
        println!("gpu        {} of VRAM in use", human_bytes(v as f64));
    }
    Ok(())
}

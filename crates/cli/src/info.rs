//! `unicorn info`: what a model file holds, read from its headers alone, and whether
//! it will fit.

use crate::args::model_path;
use crate::output::human_bytes;
use anyhow::Result;
use clap::Args;
use unicorn_engine::attention::KvType;
use unicorn_engine::info;

#[derive(Args)]
pub struct InfoArgs {
    /// A .gguf file, an HF model folder, or a repository id in the HF cache.
    model: String,
    /// Context length for the memory estimate (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// The KV cache type the estimate assumes: f16, q8_0 or f32.
    #[arg(long, default_value = "f16", value_parser = KvType::parse)]
    kv_type: KvType,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let i = info::inspect_kv(&model_path(&a.model)?, a.ctx, a.kv_type)?;
    let gpus = unicorn_engine::device::gpus();
    if a.json {
        let mut v = serde_json::to_value(&i)?;
        v["gpus"] = serde_json::to_value(gpus.as_deref().unwrap_or_default())?;
        v["gpu_note"] = gpus.as_ref().err().map(String::as_str).into();
        v["cuda_build"] = unicorn_engine::device::CUDA_BUILD.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}", i.path);
    println!(
        "  architecture   {}{}",
        i.architecture,
        i.name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    println!(
        "  parameters     {} ({:.1} M)",
        i.parameters,
        i.parameters as f64 / 1e6
    );
    println!(
        "  size           {} in tensors, {} file, {:.2} bits per weight",
        human_bytes(i.tensor_bytes as f64),
        human_bytes(i.file_bytes as f64),
        i.bits_per_weight
    );
    println!(
        "  context        {} tokens, KV cache {} per token ({})",
        i.context_length,
        human_bytes(i.kv_bytes_per_token as f64),
        i.kv_type
    );
    println!(
        "  shape          hidden {}, {} heads / {} kv heads × {}, ffn {}, vocab {}",
        i.hidden_size, i.heads, i.kv_heads, i.head_dim, i.feed_forward, i.vocab_size
    );
    println!("  layers         {}", i.layer_pattern);
    println!(
        "  tokenizer      {}{}",
        i.tokenizer.as_deref().unwrap_or("none"),
        if i.chat_template {
            ", with chat template"
        } else {
            ", no chat template"
        }
    );
    let m = &i.memory;
    println!(
        "  memory         ~{} with {} tokens of context (estimate: weights {}, KV cache {}, activations {}, tokenizer {}, runtime {}); {} available: {}",
        human_bytes(m.memory_estimate_bytes as f64),
        m.ctx,
        human_bytes(m.weights_bytes as f64),
        human_bytes(m.kv_cache_bytes as f64),
        human_bytes(m.activation_bytes as f64),
        human_bytes(m.tokenizer_bytes as f64),
        human_bytes(m.baseline_bytes as f64),
        human_bytes(m.free_ram_bytes as f64),
        if m.fits_in_ram { "fits" } else { "does NOT fit" }
    );
    match &gpus {
        Ok(g) if !g.is_empty() => {
            for g in g {
                println!(
                    "  gpu {}          {}: {} used of {}, {} free{}",
                    g.index,
                    g.name,
                    human_bytes(g.used_bytes as f64),
                    human_bytes(g.total_bytes as f64),
                    human_bytes(g.free_bytes as f64),
                    match (g.index, m.fits_in_vram) {
                        (0, Some(true)) => ": the model fits",
                        (0, Some(false)) => ": the model does NOT fit",
                        _ => "",
                    }
                );
            }
            if !unicorn_engine::device::CUDA_BUILD {
                println!("                 (this build runs on the CPU: scripts/build-cuda makes the CUDA one)");
            }
        }
        Ok(_) => println!("  gpu            none"),
        Err(why) => println!("  gpu            none ({why})"),
    }
    println!("  tensor types");
    for t in &i.tensor_types {
        println!(
            "    {:<6} {:>4} tensors {:>12} weights {:>10}",
            t.r#type,
            t.tensors,
            t.parameters,
            human_bytes(t.bytes as f64)
        );
    }
    Ok(())
}

//! `unicorn synth`: a random-weight model at a public model's exact shape, for
//! benchmarks and memory tests where the real weights cannot be downloaded.

use crate::interrupt::Cancellable;
use crate::output::{human_bytes, json_line, Reporter};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use unicorn_engine::formats::nf4::export as nf4_export;
use unicorn_engine::quantize::{quantize_synthetic, types::QuantType};
use unicorn_engine::synth;

#[derive(Args)]
pub struct SynthArgs {
    /// An architecture with built-in shapes (gemma3, llama, qwen3), or the one a
    /// CONFIG.json --shape names.
    #[arg(long)]
    arch: String,
    /// A built-in shape (gemma3: 270m 1b 4b 12b 27b; llama: 135m 360m 1.7b 3.2-1b 3.2-3b 3.1-8b; qwen3:
    /// 0.6b 1.7b 4b 8b 14b 32b) or a config.json (a multimodal one's text part is used).
    #[arg(long)]
    shape: String,
    /// Weight type of the folder: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Write a quantized model instead of the folder: a GGUF type (Q4_K_M, Q8_0, ...;
    /// OUT is then a .gguf file) or NF4 (OUT a folder). The weights are generated as
    /// they are quantized (the same model as the folder's, byte for byte what
    /// quantizing it gives), so no BF16 folder is ever written.
    #[arg(long)]
    to: Option<String>,
    /// A tokenizer.json to ship with the model: text prompts, chat templates, and a
    /// GGUF vocabulary llama.cpp loads (padded or trimmed to the embedding's rows, as
    /// its converter does). Gemma 3's is in the test assets.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The tokenizer_config.json that goes with --tokenizer (special tokens, chat
    /// template).
    #[arg(long, requires = "tokenizer")]
    tokenizer_config: Option<PathBuf>,
    /// Seed of the random weights (the same seed and shape give the same model).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (or .gguf file with a GGUF --to); must not exist.
    #[arg(long)]
    out: PathBuf,
    /// Print the config only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let arch = a.arch.to_ascii_lowercase();
    if unicorn_engine::models::by_name(&arch).is_none() {
        bail!(
            "--arch {}: not an architecture (built-in shapes: {})",
            a.arch,
            synth::known_shapes()
        );
    }
    let config = synth::config(&arch, &a.shape)?;
    let parameters = config.parameters();
    if a.dry_run {
        json_line(&serde_json::json!({
            "parameters": parameters,
            "config": config.to_hf_json("bfloat16"),
        }));
        return Ok(());
    }
    if a.out.exists() {
        bail!("{}: already exists; give a new path", a.out.display());
    }
    let tokenizer = match &a.tokenizer {
        Some(t) => Some(synth::TokenizerFiles::check(
            t,
            a.tokenizer_config.as_deref(),
        )?),
        None => None,
    };
    let target = a.to.as_deref().map(str::to_ascii_uppercase);
    let gguf = match target.as_deref() {
        None | Some("NF4") => None,
        Some(t) => {
            Some(QuantType::parse(t).with_context(|| format!("--to {t}: not a type we write"))?)
        }
    };
    let folder = match &target {
        None => a.out.clone(),
        Some(_) => {
            let name = a
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            a.out
                .with_file_name(format!(".{name}.synth-{}", std::process::id()))
        }
    };
    let _guard = Cancellable::start()?;
    // A GGUF type or NF4 is generated where it is quantized, from a folder of
    // headers only; a plain folder gets the weights.
    let mut shown = Reporter::bytes(a.json, "random weights");
    let r = match target {
        Some(_) => synth::write_headers(&config, &a.dtype, tokenizer.as_ref(), &folder),
        None => synth::write_with(
            &config,
            &a.dtype,
            a.seed,
            tokenizer.as_ref(),
            &folder,
            &mut |p| shown.show(p),
        ),
    }
    .with_context(|| format!("writing {}", folder.display()))?;
    let mut warnings = Vec::new();
    let quantized = match (&target, gguf) {
        (None, _) => Ok(None),
        (Some(_), Some(to)) => {
            quantize_synthetic(&folder, a.seed, &a.out, to, &mut |p| shown.show(p)).map(|q| {
                warnings = q.warnings;
                Some((q.output_bytes, q.bits_per_weight))
            })
        }
        (Some(_), None) => {
            nf4_export::export_synthetic(&folder, a.seed, &a.out, &mut |p| shown.show(p))
                .map(|q| Some((q.output_bytes, q.bits_per_weight)))
        }
    };
    drop(shown);
    if target.is_some() {
        std::fs::remove_dir_all(&folder).ok();
    }
    let quantized = quantized.with_context(|| format!("quantizing to {}", a.out.display()))?;
    // A GGUF of a shape that sees gets its vision tower beside it, as llama.cpp
    // ships one: an F16 mmproj (a folder or NF4 output stays text-only).
    let tower = match gguf {
        Some(_) => unicorn_engine::models::siglip::public_tower(&config),
        None => None,
    };
    let mmproj = match tower {
        Some(v) => {
            let name = a
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Whole or not at all, and an existing file is not replaced.
            let p = a.out.with_file_name(format!("mmproj-{name}"));
            unicorn_common::atomic::check_target(
                &p,
                unicorn_common::atomic::Kind::File,
                false,
                None,
            )?;
            unicorn_common::atomic::file(&p, |tmp| {
                unicorn_engine::models::mmproj::write(
                    tmp,
                    &v,
                    [0.5; 3],
                    [0.5; 3],
                    unicorn_engine::models::mmproj::MmprojType::F16,
                    &mut unicorn_engine::models::mmproj::synthetic(a.seed),
                )
            })
            .with_context(|| format!("writing {}", p.display()))?;
            Some(p)
        }
        None => None,
    };
    let (bytes, bpw) = quantized.unwrap_or((r.bytes, r.bytes as f64 * 8.0 / parameters as f64));
    // The quantizer read the tokenizer from the temporary folder: name the user's file.
    let copied = folder.join("tokenizer.json").display().to_string();
    for w in &warnings {
        match &a.tokenizer {
            Some(t) => eprintln!("warning: {}", w.replace(&copied, &t.display().to_string())),
            None => eprintln!("warning: {w}"),
        }
    }
    if a.json {
        json_line(
            &serde_json::json!({"out": a.out, "parameters": parameters, "bytes": bytes,
                                      "bits_per_weight": bpw, "shards": r.shards,
                                      "mmproj": mmproj}),
        );
    } else {
        println!(
            "{}: {} {} ({:.2} B parameters, {}, {:.2} bits per weight), random weights",
            a.out.display(),
            arch,
            a.shape,
            parameters as f64 / 1e9,
            human_bytes(bytes as f64),
            bpw
        );
        if let Some(p) = &mmproj {
            println!(
                "{}: its vision tower (SigLIP so400m, F16, random weights)",
                p.display()
            );
        }
    }
    Ok(())
}

//! Argument groups several subcommands share, each declared once and flattened where
//! it is used: the model and where it runs ([`ModelArgs`]), threads and output
//! ([`RunArgs`]), sampling ([`SamplingArgs`]) and scoring text ([`ScoreArgs`]).

use crate::output::Reporter;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use unicorn_engine::attention::KvType;
use unicorn_engine::device::DeviceChoice;
use unicorn_engine::models::HeadType;
use unicorn_engine::sampler::SamplingOverrides;
use unicorn_engine::{GenerationParams, LoadOptions, LoadedModel, SamplingParams};

/// Threads and output format: every command that computes takes them.
#[derive(Args, Clone, Copy)]
pub struct RunArgs {
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print machine-readable JSON lines.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// Checks `--threads` and sets the worker pools' size; call before any work.
    pub fn apply(&self) -> Result<()> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // More threads than this only fight over the cores (and thousands make the
        // pools fail to start).
        let most = (4 * cores).min(1024);
        match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) if n > most => {
                bail!("--threads {n}: at most {most} on this machine (4 x its {cores} cores)")
            }
            _ => {}
        }
        unicorn_engine::set_threads(self.threads);
        Ok(())
    }
}

/// How a model is loaded and where it runs: every command that loads one (through
/// [`ModelArgs`]) and `serve` (several) take these.
#[derive(Args)]
pub struct LoadArgs {
    /// Use this tokenizer.json instead of the one built from the file's metadata.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// How the KV cache holds keys and values on the CPU: f16 (default), q8_0 or f32.
    /// A model on a GPU keeps an f32 cache.
    #[arg(long, value_parser = KvType::parse)]
    pub kv_type: Option<KvType>,
    /// How the output head runs: stored (default), or q8_0, a Q8_0 copy of a dense
    /// (BF16/F16/F32) head made at load, as for an NF4 model's tied head; the files
    /// are unchanged.
    #[arg(long, value_parser = HeadType::parse, default_value = "stored")]
    pub head_type: HeadType,
    /// The vision tower of a GGUF model: a llama.cpp mmproj GGUF (default: an
    /// mmproj*.gguf beside the model that fits it).
    #[arg(long, conflicts_with = "no_vision")]
    pub mmproj: Option<PathBuf>,
    /// Load no vision tower, even where the model has one (saves its memory).
    #[arg(long)]
    pub no_vision: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

impl LoadArgs {
    /// The engine's load options these flags ask for.
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            tokenizer_json: self.tokenizer.clone(),
            device: self.device,
            kv_type: self.kv_type,
            head_type: self.head_type,
            mmproj: self.mmproj.clone(),
            text_only: self.no_vision,
        }
    }
}

/// A model to load, and where it runs.
#[derive(Args)]
pub struct ModelArgs {
    /// A .gguf file, an HF model folder, or a repository id in the HF cache.
    pub model: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

impl ModelArgs {
    /// Loads the model with a progress bar (Ctrl-C here exits: nothing is written).
    pub fn load(&self) -> Result<LoadedModel> {
        let run = &self.load.run;
        run.apply()?;
        let opts = self.load.options();
        let path = model_path(&self.model)?;
        let mut shown = Reporter::bytes(run.json, "loading").quiet();
        let model = LoadedModel::load_with_progress(&path, &opts, &mut |p| shown.show(p))
            .with_context(|| format!("loading {}", self.model));
        drop(shown);
        let model = model?;
        crate::gpu::say_placement(&model, run.json);
        Ok(model)
    }
}

/// A draft model for speculative decoding.
#[derive(Args)]
pub struct DraftArgs {
    /// A smaller model with the same vocabulary that proposes tokens for MODEL to
    /// check in one batched pass (speculative decoding): the output is MODEL's,
    /// faster when the draft guesses well. A quantized copy of MODEL drafts well.
    #[arg(long)]
    pub draft: Option<String>,
    /// The most tokens the draft proposes at once (1 to 15); fewer when its guesses
    /// are often rejected or it is slow next to MODEL (measured as it runs).
    #[arg(long, default_value_t = 8, requires = "draft")]
    pub draft_tokens: usize,
    /// Propose at least this many tokens each step, even where the measurements say
    /// it does not pay (default 0: the draft may rest).
    #[arg(long, default_value_t = 0, requires = "draft")]
    pub draft_min: usize,
}

impl DraftArgs {
    /// Loads the draft (on the target's device and KV cache type), if one is named.
    pub fn load(&self, target: &LoadArgs) -> Result<Option<std::sync::Arc<LoadedModel>>> {
        let Some(d) = &self.draft else {
            return Ok(None);
        };
        let opts = target.options().for_draft();
        let path = model_path(d)?;
        let mut shown = Reporter::bytes(target.run.json, "loading draft").quiet();
        let model = LoadedModel::load_with_progress(&path, &opts, &mut |p| shown.show(p))
            .with_context(|| format!("loading the draft {d}"));
        drop(shown);
        Ok(Some(std::sync::Arc::new(model?)))
    }

    /// The engine's draft for `target`, checked to share its vocabulary.
    pub fn for_target(
        &self,
        target: &LoadedModel,
        draft: Option<&std::sync::Arc<LoadedModel>>,
    ) -> Result<Option<unicorn_engine::speculative::Draft>> {
        draft
            .map(|d| {
                unicorn_engine::speculative::Draft::with_min(
                    target,
                    d.clone(),
                    self.draft_tokens,
                    self.draft_min,
                )
            })
            .transpose()
            .map_err(Into::into)
    }
}

/// Images for a prompt (`--image`, repeatable), prepared for the loaded model.
#[derive(Args)]
pub struct ImageArgs {
    /// An image (PNG, JPEG or WebP) for a model that sees (Gemma 3 4B and up);
    /// repeatable, used in order.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
}

impl ImageArgs {
    /// Each image decoded and preprocessed for `model`.
    pub fn open(&self, model: &LoadedModel) -> Result<Vec<unicorn_engine::vision::Image>> {
        self.images
            .iter()
            .map(|p| Ok(model.open_image(p)?))
            .collect()
    }
}

/// A MODEL argument: a path, or a repository id resolved through the HF cache.
pub fn model_path(s: &str) -> Result<PathBuf> {
    Ok(unicorn_hub::resolve_model(s)?)
}

/// How tokens are picked.
#[derive(Args)]
pub struct SamplingArgs {
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Temperature, 0 = greedy (default: the model's generation_config.json, else 0.8).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Top-k, 0 = off (default: the model's, else 40).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p, 1 = off (default: the model's, else 0.95).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Min-p, 0 = off (default: the model's, else 0.05).
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Repetition penalty, 1 = off (default: the model's, else 1.1; 1 with
    /// --temperature 0, which means argmax).
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop when the text contains this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// End a reply that has fallen into an exact loop (one block of tokens repeated).
    #[arg(long)]
    pub stop_on_loop: bool,
}

impl SamplingArgs {
    /// Flags win; unset ones come from the model's recommended sampling, else ours.
    pub fn params(&self, ignore_eos: bool, model: &LoadedModel) -> Result<GenerationParams> {
        let p = GenerationParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams::resolve(
                model.default_sampling(),
                &SamplingOverrides {
                    temperature: self.temperature,
                    top_k: self.top_k,
                    top_p: self.top_p,
                    min_p: self.min_p,
                    repeat_penalty: self.repeat_penalty,
                    repeat_last_n: None,
                    seed: Some(self.seed),
                },
            ),
            stop_strings: self.stop.clone(),
            ignore_eos,
            stop_on_loop: self.stop_on_loop,
        };
        p.sampling.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

/// Text to score, and how (perplexity, compare).
#[derive(Args)]
pub struct ScoreArgs {
    /// UTF-8 text file to score.
    #[arg(long)]
    pub text: PathBuf,
    /// Window size in tokens.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
}

impl ScoreArgs {
    /// The text.
    pub fn read(&self) -> Result<String> {
        std::fs::read_to_string(&self.text)
            .with_context(|| format!("reading {}", self.text.display()))
    }
}

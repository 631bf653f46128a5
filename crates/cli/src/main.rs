//! `unicorn`: parse the command line, call the engine, print its results.
//! Human-readable output by default, one JSON object per line with `--json`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
mod compare;
mod convert;
mod gpu;
mod library;
mod pull;
mod quantize;
mod synth;

use unicorn_engine::device::DeviceChoice;
use unicorn_engine::{
    bench, info, perplexity, GenerationParams, LoadOptions, LoadedModel, Message, Reply,
    SamplingParams, TokenEvent,
};

/// Set while a reply is being generated: Ctrl-C then stops the reply, not the program.
static GENERATING: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

#[derive(Parser)]
#[command(
    name = "unicorn",
    version,
    about = "Run, inspect and benchmark local language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with a model: interactive without --prompt, one reply with it.
    Chat(ChatArgs),
    /// Raw completion of a prompt, no chat template.
    Generate(GenerateArgs),
    /// Perplexity of a text file (llama-perplexity's definition).
    Perplexity(PerplexityArgs),
    /// Architecture, size and tensor types of a model file.
    Info(InfoArgs),
    /// Prefill and decode speed, memory, and the bandwidth roofline.
    Bench(BenchArgs),
    /// Convert a GGUF file to an HF folder (safetensors) that transformers loads.
    Convert(convert::ConvertArgs),
    /// Download a model from the Hugging Face Hub into the HF cache (resumable).
    Pull(pull::PullArgs),
    /// The model library: pulled, imported, converted and cached models.
    List(library::ListArgs),
    /// Add a model file or folder to the library.
    Import(library::ImportArgs),
    /// Quantize an HF folder or GGUF to a GGUF type, with a quality report.
    Quantize(quantize::QuantizeArgs),
    /// Perplexity, KL divergence and top-1 agreement of a quantized model against its base.
    Compare(compare::CompareArgs),
    /// A random-weight model at a public model's exact shape (for benchmarks).
    Synth(synth::SynthArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// A .gguf file, an HF model folder, or a repository id in the HF cache.
    model: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Use this tokenizer.json instead of the one built from the file's metadata.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print machine-readable JSON lines.
    #[arg(long)]
    json: bool,
    /// auto (CUDA, then Metal, then the CPU), cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args)]
struct SamplingArgs {
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Temperature, 0 = greedy (default: the model's generation_config.json, else 0.8).
    #[arg(long)]
    temperature: Option<f32>,
    /// Top-k, 0 = off (default: the model's, else 40).
    #[arg(long)]
    top_k: Option<usize>,
    /// Top-p, 1 = off (default: the model's, else 0.95).
    #[arg(long)]
    top_p: Option<f32>,
    /// Min-p, 0 = off (default: the model's, else 0.05).
    #[arg(long)]
    min_p: Option<f32>,
    /// Repetition penalty, 1 = off (default: the model's, else 1).
    #[arg(long)]
    repeat_penalty: Option<f32>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stop when the text contains this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
}

impl SamplingArgs {
    /// Flags win; unset ones come from the model's recommended sampling, else ours.
    fn params(&self, ignore_eos: bool, model: &LoadedModel) -> GenerationParams {
        let base = model.default_sampling().cloned().unwrap_or_default();
        GenerationParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(base.temperature),
                top_k: self.top_k.unwrap_or(base.top_k),
                top_p: self.top_p.unwrap_or(base.top_p),
                min_p: self.min_p.unwrap_or(base.min_p),
                repeat_penalty: self.repeat_penalty.unwrap_or(base.repeat_penalty),
                repeat_last_n: 64,
                seed: self.seed,
            },
            stop_strings: self.stop.clone(),
            ignore_eos,
        }
    }
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// One message to answer (otherwise: interactive).
    #[arg(long)]
    prompt: Option<String>,
    /// System prompt (folded into the first user turn for models without a system role).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to continue (BOS is added when the model uses one).
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    prompt: Option<String>,
    /// Token ids to continue, fed as they are (no BOS added), e.g. "2 818 5279".
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Keep generating past end-of-sequence tokens: exactly --max-tokens tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Write the logits of the prompt's last position to FILE (little-endian f32),
    /// to compare devices or builds number by number.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// UTF-8 text file to score.
    #[arg(long)]
    text: PathBuf,
    /// Window size in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Use only the first N tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
}

#[derive(Args)]
struct InfoArgs {
    /// A .gguf file, an HF model folder, or a repository id in the HF cache.
    model: String,
    /// Context length for the memory estimate (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens per prefill run.
    #[arg(long, default_value_t = 512)]
    pp: usize,
    /// Tokens per decode run.
    #[arg(long, default_value_t = 128)]
    tg: usize,
    /// Repetitions.
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

fn main() {
    let cli = Cli::parse();
    let device = match &cli.command {
        Command::Chat(a) => Some(a.model.device),
        Command::Generate(a) => Some(a.model.device),
        Command::Perplexity(a) => Some(a.model.device),
        Command::Bench(a) => Some(a.model.device),
        Command::Compare(a) => Some(a.device),
        _ => None,
    };
    if let Some(d) = device {
        if let Err(e) = gpu::hand_over(d) {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
    let result = match cli.command {
        Command::Chat(a) => chat(a),
        Command::Generate(a) => generate(a),
        Command::Perplexity(a) => run_perplexity(a),
        Command::Info(a) => run_info(a),
        Command::Bench(a) => run_bench(a),
        Command::Convert(a) => convert::run(a),
        Command::Pull(a) => pull::run(a),
        Command::List(a) => library::list(a),
        Command::Import(a) => library::import(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Synth(a) => synth::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A MODEL argument: a path, or a repository id resolved through the HF cache.
pub(crate) fn model_path(s: &str) -> Result<PathBuf> {
    Ok(unicorn_engine::hub::resolve_model(s)?)
}

fn load(m: &ModelArgs) -> Result<LoadedModel> {
    if m.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    unicorn_engine::set_threads(m.threads);
    let opts = LoadOptions {
        tokenizer_json: m.tokenizer.clone(),
        device: m.device,
    };
    let path = model_path(&m.model)?;
    // Ctrl-C here exits (nothing is written); a bar shows the weights coming in.
    let bar = bytes_bar(m.json, 0);
    bar.set_message("loading");
    let shown = bar.clone();
    let model = LoadedModel::load_with_progress(
        &path,
        &opts,
        Box::new(move |done, total| {
            shown.set_length(total);
            shown.set_position(done);
            true
        }),
    )
    .with_context(|| format!("loading {}", m.model));
    bar.finish_and_clear();
    let model = model?;

    gpu::say_placement(&model, m.json);
    Ok(model)
}

fn install_ctrl_c() -> Result<()> {
    ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            CANCEL.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")
}

/// Marks long work (convert, pull) as cancellable for its lifetime: Ctrl-C then sets
/// the cancel flag, which the work's progress callback reads, instead of exiting.
pub(crate) struct Cancellable;

impl Cancellable {
    pub(crate) fn start() -> Result<Self> {
        install_ctrl_c()?;
        CANCEL.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        Ok(Self)
    }
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        GENERATING.store(false, Ordering::SeqCst);
    }
}

/// A byte-progress bar (bytes, rate, ETA, a message), hidden when printing JSON.
pub(crate) fn bytes_bar(json: bool, total: u64) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .expect("static template"),
    )
}

/// Whether Ctrl-C was pressed during cancellable work.
pub(crate) fn cancel_requested() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

/// Runs one generation, streaming tokens to stdout (text or JSON lines).
fn stream_reply(
    json: bool,
    run: impl FnOnce(&mut dyn FnMut(&TokenEvent) -> bool) -> unicorn_engine::Result<Reply>,
) -> Result<Reply> {
    CANCEL.store(false, Ordering::SeqCst);
    GENERATING.store(true, Ordering::SeqCst);
    let mut out = std::io::stdout().lock();
    let mut sink = |ev: &TokenEvent| -> bool {
        let ok = if json {
            writeln!(
                out,
                "{}",
                json!({"event": "token", "id": ev.id, "text": ev.text})
            )
        } else {
            write!(out, "{}", ev.text)
        };
        let _ = out.flush();
        ok.is_ok() && !CANCEL.load(Ordering::SeqCst)
    };
    let reply = run(&mut sink);
    GENERATING.store(false, Ordering::SeqCst);
    Ok(reply?)
}

fn print_done(json: bool, reply: &Reply) {
    let s = &reply.stats;
    if json {
        println!(
            "{}",
            json!({
                "event": "done",
                "prompt_tokens": s.prompt_tokens,
                "prefill_tokens": s.prefill_tokens,
                "generated_tokens": s.generated_tokens,
                "token_ids": reply.token_ids,
                "text": reply.text,
                "stop_reason": reply.stop_reason,
                "ttft_ms": s.ttft_ms,
                "prefill_tok_s": s.prefill_tok_s,
                "decode_tok_s": s.decode_tok_s,
                "weights_bytes": s.weights_bytes,
                "kv_cache_bytes": s.kv_cache_bytes,
                "rss_bytes": s.rss_bytes,
                "peak_rss_bytes": s.peak_rss_bytes,
                "device": s.device,
                "vram_bytes": s.vram_bytes,
            })
        );
    } else {
        println!();
        eprintln!(
            "[{} prompt tokens ({} computed) · TTFT {:.0} ms · prefill {:.1} tok/s · {} tokens at {:.1} tok/s · {:?} · weights {} · KV cache {} · RSS {}]",
            s.prompt_tokens,
            s.prefill_tokens,
            s.ttft_ms,
            s.prefill_tok_s,
            s.generated_tokens,
            s.decode_tok_s,
            reply.stop_reason,
            human_bytes(s.weights_bytes as f64),
            human_bytes(s.kv_cache_bytes as f64),
            human_bytes(s.rss_bytes as f64),
        );
    }
}

fn chat(a: ChatArgs) -> Result<()> {
    let model = load(&a.model)?;
    let json = a.model.json;
    let params = a.sampling.params(false, &model);
    params.sampling.validate().map_err(anyhow::Error::msg)?;
    if !model.has_chat_template() {
        eprintln!(
            "note: {} has no chat template; this is plain text completion of your messages",
            a.model.model
        );
    }
    let mut session = model.chat_session();
    let first_turn = |system: &Option<String>, text: String| {
        let mut m = Vec::new();
        if let Some(s) = system {
            m.push(Message::system(s.clone()));
        }
        m.push(Message::user(text));
        m
    };
    if let Some(p) = &a.prompt {
        let msgs = first_turn(&a.system, p.clone());
        install_ctrl_c()?;
        let reply = stream_reply(json, |sink| session.send(&msgs, &params, sink))?;
        print_done(json, &reply);
        return Ok(());
    }
    install_ctrl_c()?;
    eprintln!(
        "Chatting with {} ({}). /reset starts over, /exit or Ctrl-D quits, Ctrl-C stops a reply.",
        a.model.model,
        model.config().architecture()
    );
    let stdin = std::io::stdin();
    let mut first = true;
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                session.reset();
                first = true;
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        let msgs = if first {
            first_turn(&a.system, line)
        } else {
            vec![Message::user(line)]
        };
        first = false;
        match stream_reply(json, |sink| session.send(&msgs, &params, sink)) {
            Ok(reply) => print_done(json, &reply),
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    let model = load(&a.model)?;
    let ids: Vec<u32> = match (&a.prompt, &a.prompt_ids) {
        (_, Some(s)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<u32>()
                    .with_context(|| format!("--prompt-ids: `{t}` is not a token id"))
            })
            .collect::<Result<_>>()?,
        (Some(p), None) => model.tokenizer()?.encode_with_bos(p)?,
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    let vocab = model.config().vocab_size() as u32;
    if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
        bail!("--prompt-ids: token id {bad} is outside the vocabulary (size {vocab})");
    }
    if let Some(out) = &a.logits_out {
        if ids.is_empty() {
            bail!("--logits-out needs a prompt");
        }
        let mut cache = model.model().new_cache();
        let logits = model.model().forward(&ids, &mut cache, ids.len() - 1)?;
        let v: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    install_ctrl_c()?;
    let params = a.sampling.params(a.ignore_eos, &model);
    let reply = stream_reply(a.model.json, |sink| model.generate(&ids, &params, sink))?;
    print_done(a.model.json, &reply);
    Ok(())
}

fn run_perplexity(a: PerplexityArgs) -> Result<()> {
    let model = load(&a.model)?;
    let text = std::fs::read_to_string(&a.text)
        .with_context(|| format!("reading {}", a.text.display()))?;
    let json = a.model.json;
    let r =
        perplexity::perplexity_of_text(&model, &text, a.ctx, a.max_tokens, &mut |done, total| {
            if !json {
                eprint!("\rwindow {done}/{total}");
            }
            true
        })?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        eprintln!();
        println!(
            "perplexity {:.4} (mean NLL {:.4}) over {} scored tokens: {} windows of {} tokens, second half of each scored (llama-perplexity's definition)",
            r.perplexity, r.nll_mean, r.tokens_scored, r.chunks, r.ctx
        );
    }
    Ok(())
}

fn run_info(a: InfoArgs) -> Result<()> {
    let i = info::inspect(&model_path(&a.model)?, a.ctx)?;
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
        "  context        {} tokens, KV cache {} per token",
        i.context_length,
        human_bytes(i.kv_bytes_per_token as f64)
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

fn run_bench(a: BenchArgs) -> Result<()> {
    let model = load(&a.model)?;
    let json = a.model.json;
    let opts = bench::BenchOptions {
        pp: a.pp,
        tg: a.tg,
        reps: a.reps,
    };
    let r = bench::run(&model, opts, &mut |label| {
        if !json {
            eprint!("\r{label:<30}");
        }
    })?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    eprintln!("\r{:<30}", "");
    println!(
        "model      {} ({}) on {}, {} threads, loaded in {:.2} s",
        r.model, r.architecture, r.device, r.threads, r.load_s
    );
    if let Some(p) = &r.pp {
        println!(
            "pp{:<8} {:>9.1} ± {:.1} tok/s",
            p.tokens, p.mean_tok_s, p.sd_tok_s
        );
    }
    if let Some(t) = &r.tg {
        println!(
            "tg{:<8} {:>9.1} ± {:.1} tok/s",
            t.tokens, t.mean_tok_s, t.sd_tok_s
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

pub(crate) fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

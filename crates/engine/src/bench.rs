//! `llama-bench`-style measurements (prefill and decode throughput, mean and standard
//! deviation over repetitions) plus load time, peak memory, and a memory-bandwidth
//! roofline: decoding one token must read every weight once, so measured bandwidth
//! divided by bytes read per token bounds decode speed from above.

use crate::error::{Error, Result};
use crate::session::LoadedModel;
use crate::stats::{mean_sd, peak_rss_bytes, rss_bytes};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Prompt tokens per prefill run (0 = skip).
    pub pp: usize,
    /// Tokens per decode run (0 = skip).
    pub tg: usize,
    /// Repetitions of each.
    pub reps: usize,
    /// Tokens already in the cache before each run (llama-bench's `-d`): prefill
    /// and decode measured at this depth. The filling is not timed.
    pub depth: usize,
}

/// Throughput of one kind of run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Tokens per run.
    pub tokens: usize,
    /// Mean tokens per second.
    pub mean_tok_s: f64,
    /// Standard deviation of tokens per second.
    pub sd_tok_s: f64,
    /// Each repetition's tokens per second.
    pub samples: Vec<f64>,
}

impl Throughput {
    /// The mean and standard deviation of runs of `tokens` tokens each.
    fn of(tokens: usize, samples: Vec<f64>) -> Self {
        let (m, sd) = mean_sd(&samples);
        Self {
            tokens,
            mean_tok_s: m,
            sd_tok_s: sd,
            samples,
        }
    }
}

/// Everything `unicorn bench` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Model file.
    pub model: String,
    /// Architecture.
    pub architecture: String,
    /// Worker threads.
    pub threads: usize,
    /// Tokens in the cache when each run started.
    pub depth: usize,
    /// Seconds to load the model.
    pub load_s: f64,
    /// Bytes of weights held.
    pub weights_bytes: usize,
    /// Bytes read per decoded token (weights, plus the KV cache at the mean decode position).
    pub bytes_per_token: usize,
    /// Prefill.
    pub pp: Option<Throughput>,
    /// Decode.
    pub tg: Option<Throughput>,
    /// Measured read bandwidth of main memory, bytes per second.
    pub memory_bandwidth_bytes_s: f64,
    /// Upper bound on decode speed from bandwidth: bandwidth / bytes per token.
    pub roofline_tok_s: f64,
    /// Achieved decode speed as a percentage of the bound.
    pub roofline_pct: f64,
    /// Resident memory after the runs (before the bandwidth test).
    pub rss_bytes: u64,
    /// Peak resident memory of the process during load and runs (Linux), if known.
    pub peak_rss_bytes: Option<u64>,
    /// Where it ran: `cpu`, `cuda:0`, `metal`.
    pub device: String,
    /// GPU memory in use on that device after the runs (NVML), on a GPU.
    pub vram_bytes: Option<u64>,
    /// How the KV cache held keys and values.
    pub kv_type: crate::attention::KvType,
    /// How the output head ran.
    pub head_type: crate::models::HeadType,
}

/// Runs the benchmark. `progress(label)` is called before each run.
pub fn run(
    model: &LoadedModel,
    opts: BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let ctx = model.config().context_length();
    if opts.reps == 0 || opts.depth + opts.pp.max(opts.tg) + 1 >= ctx {
        return Err(Error::Invalid(format!(
            "bench needs reps > 0 and depth + pp and depth + tg below the context ({ctx})"
        )));
    }
    let vocab = model.config().vocab_size() as u64;
    // Fixed pseudo-random tokens, like llama-bench's.
    let random = |n: usize, salt: u64| -> Vec<u32> {
        (0..n as u64)
            .map(|i| (((i + salt) * 2_654_435_761 + 12_345) % vocab.max(1)) as u32)
            .collect()
    };
    let prompt = random(opts.pp.max(1), 0);
    let context = random(opts.depth, 1 << 20);
    // A cache holding `depth` tokens already (untimed).
    let filled = || -> Result<crate::attention::KvCache> {
        let mut cache = model.model().new_cache();
        if !context.is_empty() {
            model
                .model()
                .forward(&context, &mut cache, context.len() - 1)?;
        }
        Ok(cache)
    };
    progress("warm-up");
    {
        let mut cache = model.model().new_cache();
        let n = prompt.len().min(16);
        model.model().forward(&prompt[..n], &mut cache, n - 1)?;
        model.model().forward(&prompt[..1], &mut cache, 0)?;
    }
    let mut pp_samples = Vec::new();
    let mut tg_samples = Vec::new();
    for r in 0..opts.reps {
        if opts.pp > 0 {
            progress(&format!("pp{} run {}/{}", opts.pp, r + 1, opts.reps));
            let mut cache = filled()?;
            let t = Instant::now();
            model
                .model()
                .forward(&prompt, &mut cache, prompt.len() - 1)?;
            pp_samples.push(opts.pp as f64 / t.elapsed().as_secs_f64());
        }
        if opts.tg > 0 {
            progress(&format!("tg{} run {}/{}", opts.tg, r + 1, opts.reps));
            let mut cache = filled()?;
            let mut tok = prompt[0];
            let t = Instant::now();
            for _ in 0..opts.tg {
                let l = model.model().forward(&[tok], &mut cache, 0)?;
                tok = l.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
            }
            tg_samples.push(opts.tg as f64 / t.elapsed().as_secs_f64());
        }
    }
    // Read before the bandwidth test, whose buffer is not the model's memory.
    let (rss, peak) = (rss_bytes(), peak_rss_bytes());
    let vram_bytes = crate::device::vram_used(model.placement());
    progress("memory bandwidth");
    // Decode reads the weights from where they live: the card's memory on a GPU.
    let bw = if model.device().is_cpu() {
        memory_bandwidth()
    } else {
        device_bandwidth(model.device())?
    };
    let wb = model.model().weight_bytes();
    let kv_read = model
        .config()
        .kv_bytes_per_position(model.model().kv_type())
        * (opts.depth + opts.tg / 2);
    let bytes_per_token = wb.read_per_token + kv_read;
    let roofline = bw / bytes_per_token as f64;
    let summarize = Throughput::of;
    let tg = (opts.tg > 0).then(|| summarize(opts.tg, tg_samples));
    let roofline_pct = tg
        .as_ref()
        .map(|t| 100.0 * t.mean_tok_s / roofline)
        .unwrap_or(0.0);
    Ok(BenchReport {
        model: model.path().display().to_string(),
        architecture: model.config().architecture().to_string(),
        threads: crate::pool::threads(),
        kv_type: model.model().kv_type(),
        head_type: model.model().head_type(),
        depth: opts.depth,
        load_s: model.load_time().as_secs_f64(),
        weights_bytes: wb.total,
        bytes_per_token,
        pp: (opts.pp > 0).then(|| summarize(opts.pp, pp_samples)),
        tg,
        memory_bandwidth_bytes_s: bw,
        roofline_tok_s: roofline,
        roofline_pct,
        rss_bytes: rss,
        peak_rss_bytes: peak,
        device: model.placement().label.clone(),
        vram_bytes,
    })
}

/// Decode with a draft model against decode alone ([`crate::speculative`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DraftBench {
    /// The draft's file.
    pub draft_model: String,
    /// Decode alone, through the generation loop (sampling and detokenization
    /// included), greedy.
    pub alone: Throughput,
    /// The same with the draft proposing.
    pub drafted: Throughput,
    /// `drafted / alone`, measured.
    pub speedup: f64,
    /// Accepted proposals over all proposals.
    pub acceptance_rate: f64,
    /// Whether every run's ids with the draft were the ids without it.
    pub identical: bool,
}

/// Measures decode of `tg` greedy tokens with and without `draft` (`draft_tokens`:
/// the fewest and most proposals a step), alternating runs, `reps` of each. The prompt is
/// a request rendered by the chat template when the model has one (acceptance
/// depends on the text), else `pp` pseudo-random ids.
pub fn draft(
    model: &LoadedModel,
    draft: std::sync::Arc<LoadedModel>,
    draft_tokens: (usize, usize),
    opts: BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<DraftBench> {
    use crate::session::GenerationParams;
    use crate::speculative::Draft;
    if opts.tg == 0 || opts.reps == 0 {
        return Err(Error::Invalid(
            "a draft bench needs --tg and --reps above 0".into(),
        ));
    }
    let prompt = if model.has_chat_template() {
        let m = crate::template::Message::user(
            "Write a short story about a robot who learns to paint, in five paragraphs.",
        );
        model.render_chat(&[m])?
    } else {
        let vocab = model.config().vocab_size() as u64;
        (0..opts.pp.max(16) as u64)
            .map(|i| ((i * 2_654_435_761 + 12_345) % vocab.max(1)) as u32)
            .collect()
    };
    let mut params = GenerationParams::greedy(opts.tg);
    params.ignore_eos = true;
    let (mut alone, mut drafted) = (Vec::new(), Vec::new());
    let (mut proposed, mut accepted, mut identical) = (0usize, 0usize, true);
    for r in 0..opts.reps {
        progress(&format!("tg{} alone {}/{}", opts.tg, r + 1, opts.reps));
        let a = model
            .chat_session()
            .complete(&prompt, &params, &mut |_| true)?;
        alone.push(a.stats.decode_tok_s);
        progress(&format!("tg{} with draft {}/{}", opts.tg, r + 1, opts.reps));
        let mut s = model.chat_session();
        let (min, max) = draft_tokens;
        s.set_draft(Some(Draft::with_min(model, draft.clone(), max, min)?));
        let d = s.complete(&prompt, &params, &mut |_| true)?;
        drafted.push(d.stats.decode_tok_s);
        if let Some(st) = &d.stats.draft {
            proposed += st.drafted;
            accepted += st.accepted;
        }
        identical &= a.token_ids == d.token_ids;
    }
    let (alone, drafted) = (
        Throughput::of(opts.tg, alone),
        Throughput::of(opts.tg, drafted),
    );
    Ok(DraftBench {
        draft_model: draft.path().display().to_string(),
        speedup: drafted.mean_tok_s / alone.mean_tok_s.max(1e-9),
        acceptance_rate: accepted as f64 / proposed.max(1) as f64,
        identical,
        alone,
        drafted,
    })
}

/// Bandwidth of a GPU's memory in bytes per second: the best of several passes that
/// read a 1 GiB tensor and write its successor.
pub fn device_bandwidth(device: &candle_core::Device) -> Result<f64> {
    const N: usize = 1 << 28;
    let x = candle_core::Tensor::zeros(N, candle_core::DType::F32, device)?;
    let mut best = 0f64;
    for _ in 0..5 {
        device.synchronize()?;
        let t = Instant::now();
        let y = (&x + 1.0)?;
        device.synchronize()?;
        best = best.max(2.0 * (N * 4) as f64 / t.elapsed().as_secs_f64());
        drop(y);
    }
    Ok(best)
}

/// Read bandwidth of main memory in bytes per second: the best of several parallel
/// passes over a buffer far larger than any cache, with the worker pool the model uses.
pub fn memory_bandwidth() -> f64 {
    const BYTES: usize = 512 << 20;
    let buf: Vec<u64> = (0..BYTES / 8).into_par_iter().map(|i| i as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        best = best.max(BYTES as f64 / t.elapsed().as_secs_f64());
    }
    best
}

#[cfg(test)]
mod tests {
    /// The GPU measurement's method, run on the CPU: a plausible figure.
    #[test]
    fn device_bandwidth_measures_on_any_device() {
        let bw = super::device_bandwidth(&candle_core::Device::Cpu).unwrap();
        assert!(bw > 1e9 && bw < 1e13, "{bw}");
    }
}

//! "Will it fit": the resident memory a model will take with N tokens of context,
//! computed from its header before anything is loaded, and compared with what the
//! machine has free. The terms follow how the engine actually allocates:
//!
//! - weights: GGUF block-quantized tensors stay packed; GGUF float tensors are held
//!   in F32; HF matrices stay in their stored F16/BF16/F32 and HF vectors become F32;
//! - KV cache: F32 keys and values in power-of-two buffers, sliding-window layers
//!   only about their window ([`KvCache::capacity_for`]);
//! - activations: the live tensors of one forward pass over a prompt of
//!   `min(N, 512)` tokens (a longer prompt costs more: mostly its attention scores);
//! - tokenizer and metadata: per-entry costs measured on this engine (see the
//!   constants), since a 262k-entry vocabulary is not small, and building it from
//!   GGUF scores briefly takes twice its final size;
//! - baseline: what the process holds before loading (the caller measures it).
//!
//! The estimate is the higher of the two peaks: loading (weights + tokenizer being
//! built) and serving (weights + tokenizer + KV cache + activations). It is an
//! estimate and says so; `tests/` checks it against measured peak RSS.

use crate::attention::{KvCache, KvType};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::models::Config;
use crate::source::Source;
use candle_core::quantized::GgmlDType;
use serde::Serialize;

/// Prompt length the activation term assumes.
pub const PROMPT_TOKENS: usize = 512;
/// Resident bytes per vocabulary entry of a tokenizer built from GGUF metadata, the
/// parsed header included: (after loading, while building). Measured with
/// `unicorn generate` on SmolLM2's 49k GPT-2 BPE and Gemma 3's 262k SentencePiece.
const GGUF_BPE_PER_ENTRY: (u64, u64) = (490, 500);
const GGUF_SPM_PER_ENTRY: (u64, u64) = (515, 1040);
/// Resident bytes per byte of `tokenizer.json` once parsed (measured 7.5 on Gemma 3's).
const TOKENIZER_JSON_FACTOR: u64 = 8;

/// The estimate and its parts, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// Context length the estimate is for.
    pub ctx: usize,
    /// Weights as held in memory.
    pub weights_bytes: u64,
    /// KV cache with `ctx` positions.
    pub kv_cache_bytes: u64,
    /// Live tensors of one forward pass over a prompt of `min(ctx, 512)` tokens.
    pub activation_bytes: u64,
    /// Tokenizer and parsed metadata.
    pub tokenizer_bytes: u64,
    /// Peak while loading: weights plus the tokenizer being built.
    pub load_peak_bytes: u64,
    /// The process before loading (measured by the caller).
    pub baseline_bytes: u64,
    /// Expected peak resident set size: baseline + the higher of the loading peak and
    /// weights + tokenizer + KV cache + activations.
    pub memory_estimate_bytes: u64,
    /// Memory the OS reports available now.
    pub free_ram_bytes: u64,
    /// Whether the estimate fits in the available memory.
    pub fits_in_ram: bool,
    /// Free memory of the first NVIDIA GPU, when the driver reports one.
    pub free_vram_bytes: Option<u64>,
    /// Whether it fits in that GPU's free memory.
    pub fits_in_vram: Option<bool>,
}

/// Weight bytes as the loader will hold them.
pub fn resident_weight_bytes(src: &Source) -> u64 {
    match src {
        Source::Gguf(g) => gguf_weight_bytes(g),
        Source::Hf(h) => h
            .tensor_infos()
            .iter()
            .map(|(_, dtype, shape)| {
                let n: u64 = shape.iter().map(|&d| d as u64).product();
                let size = crate::hf::dtype_bytes(dtype);
                if shape.len() == 1 && size >= 2 {
                    n * 4
                } else {
                    n * size
                }
            })
            .sum(),
    }
}

/// Weight bytes of a GGUF's tensors as the loader will hold them: block-quantized
/// ones packed, float ones as F32.
fn gguf_weight_bytes(g: &GgufFile) -> u64 {
    g.tensor_infos()
        .iter()
        .map(|(_, t, shape)| {
            let n: u64 = shape.iter().map(|&d| d as u64).product();
            match t {
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => n * 4,
                t => n / t.block_size() as u64 * t.type_size() as u64,
            }
        })
        .sum()
}

/// (after loading, peak while building) of a tokenizer built from GGUF metadata.
fn gguf_tokenizer_bytes(g: &GgufFile, cfg: &Config) -> (u64, u64) {
    let (steady, peak) = match g.string_opt("tokenizer.ggml.model").ok().flatten() {
        Some(m) if m == crate::tokenizer::MODEL_SPM => GGUF_SPM_PER_ENTRY,
        Some(_) => GGUF_BPE_PER_ENTRY,
        None => (0, 0),
    };
    let n = cfg.vocab_size() as u64;
    (n * steady, n * peak)
}

/// (after loading, peak while building).
fn tokenizer_bytes(src: &Source, cfg: &Config) -> (u64, u64) {
    match src {
        Source::Gguf(g) => gguf_tokenizer_bytes(g, cfg),
        Source::Hf(h) => {
            let b = std::fs::metadata(h.dir().join("tokenizer.json"))
                .map(|m| m.len() * TOKENIZER_JSON_FACTOR)
                .unwrap_or(0);
            (b, b)
        }
    }
}

/// Estimates the resident memory of serving `src` with `ctx` tokens of context.
/// `baseline_bytes` is the process's resident memory before loading.
pub fn estimate(
    src: &Source,
    ctx: usize,
    kv: KvType,
    baseline_bytes: u64,
) -> Result<MemoryEstimate> {
    estimate_with_weights(src, ctx, kv, baseline_bytes, resident_weight_bytes(src))
}

/// [`estimate`] for a model with `src`'s shape and tokenizer whose weights will take
/// `weights_bytes`: a quantization of `src`, before it is written.
pub fn estimate_with_weights(
    src: &Source,
    ctx: usize,
    kv: KvType,
    baseline_bytes: u64,
    weights_bytes: u64,
) -> Result<MemoryEstimate> {
    let cfg = Config::from_source(src)?;
    Ok(formula(
        &cfg,
        tokenizer_bytes(src, &cfg),
        ctx,
        kv,
        baseline_bytes,
        weights_bytes,
    ))
}

/// [`estimate`] from the headers of a GGUF model not downloaded yet (fetched with
/// range requests: [`crate::gguf::GgufFile::from_prefix`]), in one file or split in
/// parts (`-00001-of-0000N.gguf`, in order). One file is checked as [`estimate`]
/// checks it; split parts give the configuration from the first part's metadata and
/// the weights of all parts' tensors.
pub fn estimate_gguf(
    mut parts: Vec<GgufFile>,
    ctx: usize,
    kv: KvType,
    baseline_bytes: u64,
) -> Result<MemoryEstimate> {
    if parts.len() == 1 {
        let src = Source::Gguf(parts.remove(0));
        return estimate(&src, ctx, kv, baseline_bytes);
    }
    let first = parts
        .first()
        .ok_or_else(|| crate::Error::Invalid("no GGUF header to estimate from".into()))?;
    let cfg = Config::from_gguf(first)?;
    let weights_bytes = parts.iter().map(gguf_weight_bytes).sum();
    Ok(formula(
        &cfg,
        gguf_tokenizer_bytes(first, &cfg),
        ctx,
        kv,
        baseline_bytes,
        weights_bytes,
    ))
}

/// The estimate's one formula (see the module's notes), from the configuration, the
/// tokenizer's (after loading, peak while building) bytes and the weights' bytes.
fn formula(
    cfg: &Config,
    (tokenizer_bytes, tokenizer_peak): (u64, u64),
    ctx: usize,
    kv: KvType,
    baseline_bytes: u64,
    weights_bytes: u64,
) -> MemoryEstimate {
    let (h, heads, kv_heads, hd, ff) = cfg.shape();
    let prompt = ctx.min(PROMPT_TOKENS);
    let per_position = 2 * kv_heads * kv.row_bytes(hd);
    let kv_cache_bytes: u64 = cfg
        .layer_windows()
        .iter()
        .map(|&w| (KvCache::capacity_for(w, prompt, ctx) * per_position) as u64)
        .sum();
    let q_out = heads * hd;
    let kv_out = kv_heads * hd;
    let cap = KvCache::capacity_for(None, prompt, prompt);
    let per_token = 4 * h + 2 * q_out + 4 * kv_out + 4 * ff;
    let activation_bytes = (4 * prompt * per_token
        + 4 * 2 * heads * prompt * cap
        // Logits and the sampler's working copies.
        + 4 * 4 * cfg.vocab_size()) as u64;
    let load_peak_bytes = weights_bytes + tokenizer_peak;
    let serving = weights_bytes + tokenizer_bytes + kv_cache_bytes + activation_bytes;
    let total = baseline_bytes + load_peak_bytes.max(serving);
    let free_ram_bytes = crate::stats::available_memory();
    // The first GPU, the one `--device auto` takes.
    let free_vram = crate::device::gpus()
        .ok()
        .and_then(|g| g.first().map(|g| g.free_bytes));
    MemoryEstimate {
        ctx,
        weights_bytes,
        kv_cache_bytes,
        activation_bytes,
        tokenizer_bytes,
        load_peak_bytes,
        baseline_bytes,
        memory_estimate_bytes: total,
        free_ram_bytes,
        fits_in_ram: total <= free_ram_bytes,
        free_vram_bytes: free_vram,
        fits_in_vram: free_vram.map(|f| total <= f),
    }
}

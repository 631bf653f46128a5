//! What a model file or folder holds, read from its headers alone (no weights are
//! loaded), and whether it will fit in memory.

use crate::error::{Error, Result};
use crate::formats::ggml_type_name;
use crate::memory::MemoryEstimate;
use crate::models::Config;
use crate::source::Source;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Tensors of one storage type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeStat {
    /// Storage type (`Q4_K`, `F32`, ...).
    pub r#type: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Number of weights.
    pub parameters: u64,
    /// Bytes they take.
    pub bytes: u64,
}

/// A summary of a model file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The file or folder.
    pub path: String,
    /// `gguf` or `safetensors` (an HF folder).
    pub format: String,
    /// Size on disk (a folder: its model files).
    pub file_bytes: u64,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, if set.
    pub name: Option<String>,
    /// Total number of weights.
    pub parameters: u64,
    /// Bytes of all tensors.
    pub tensor_bytes: u64,
    /// Average bits per weight over all tensors.
    pub bits_per_weight: f64,
    /// Per storage type.
    pub tensor_types: Vec<TypeStat>,
    /// Trained context length.
    pub context_length: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// MLP width.
    pub feed_forward: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Which layers attend globally, which through a window.
    pub layer_pattern: String,
    /// KV-cache bytes per token of context, with the cache as `kv_type`.
    pub kv_bytes_per_token: usize,
    /// The KV cache type the figures assume.
    pub kv_type: crate::attention::KvType,
    /// `tokenizer.ggml.model`, or `tokenizer.json` for a folder that has one.
    pub tokenizer: Option<String>,
    /// Whether a chat template is embedded.
    pub chat_template: bool,
    /// Estimated resident memory with `memory.ctx` tokens of context.
    pub memory_estimate_bytes: u64,
    /// The estimate's parts and whether it fits.
    pub memory: MemoryEstimate,
}

/// Reads the summary of a `.gguf` file or HF folder, with a memory estimate for `ctx`
/// tokens of context (default: the trained context, at most 4096) and the default
/// KV cache.
pub fn inspect(path: &Path, ctx: Option<usize>) -> Result<ModelInfo> {
    inspect_kv(path, ctx, crate::attention::KvType::default())
}

/// [`inspect`] with the KV cache held as `kv`.
pub fn inspect_kv(
    path: &Path,
    ctx: Option<usize>,
    kv: crate::attention::KvType,
) -> Result<ModelInfo> {
    let baseline = crate::stats::rss_bytes();
    let src = Source::open(path)?;
    let cfg = Config::from_source(&src)?;
    let mut by_type: BTreeMap<String, TypeStat> = BTreeMap::new();
    let (mut params, mut bytes) = (0u64, 0u64);
    let mut add = |name: String, n: u64, b: u64| {
        let e = by_type.entry(name.clone()).or_insert(TypeStat {
            r#type: name,
            tensors: 0,
            parameters: 0,
            bytes: 0,
        });
        e.tensors += 1;
        e.parameters += n;
        e.bytes += b;
        params += n;
        bytes += b;
    };
    let (format, file_bytes, name, tokenizer, chat_template) = match &src {
        Source::Gguf(g) => {
            for (_, dtype, shape) in g.tensor_infos() {
                let n: u64 = shape.iter().map(|&d| d as u64).product();
                let b = n / dtype.block_size() as u64 * dtype.type_size() as u64;
                add(ggml_type_name(dtype).to_string(), n, b);
            }
            let file_bytes = std::fs::metadata(path)
                .map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .len();
            (
                "gguf",
                file_bytes,
                g.string_opt("general.name")?,
                g.string_opt("tokenizer.ggml.model")?,
                g.string_opt("tokenizer.chat_template")?,
            )
        }
        Source::Hf(h) => {
            for (_, dtype, shape) in h.tensor_infos() {
                let n: u64 = shape.iter().map(|&d| d as u64).product();
                add(dtype.to_uppercase(), n, n * crate::hf::dtype_bytes(&dtype));
            }
            let files = crate::hf::tokenizer_files::read(h.dir(), h.config().json())?;
            (
                "safetensors",
                h.tensor_bytes(),
                h.config().json()["_name_or_path"]
                    .as_str()
                    .map(str::to_string),
                files
                    .tokenizer
                    .is_some()
                    .then(|| "tokenizer.json".to_string()),
                files.chat_template,
            )
        }
    };
    // Loading parses the template; so does `info`, to refuse what loading refuses.
    if let Some(t) = &chat_template {
        crate::template::ChatTemplate::new(t, &path.display().to_string(), false)?;
    }
    let chat_template = chat_template.is_some();
    let ctx = ctx.unwrap_or_else(|| cfg.context_length().min(4096));
    let memory = crate::memory::estimate(&src, ctx, kv, baseline)?;
    let (hidden_size, heads, kv_heads, head_dim, feed_forward) = cfg.shape();
    let mut tensor_types: Vec<TypeStat> = by_type.into_values().collect();
    tensor_types.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    Ok(ModelInfo {
        path: path.display().to_string(),
        format: format.to_string(),
        file_bytes,
        architecture: cfg.architecture().to_string(),
        name,
        parameters: params,
        tensor_bytes: bytes,
        bits_per_weight: if params > 0 {
            bytes as f64 * 8.0 / params as f64
        } else {
            0.0
        },
        tensor_types,
        context_length: cfg.context_length(),
        layers: cfg.num_layers(),
        hidden_size,
        heads,
        kv_heads,
        head_dim,
        feed_forward,
        vocab_size: cfg.vocab_size(),
        layer_pattern: cfg.layer_pattern(),
        kv_bytes_per_token: cfg.kv_bytes_per_position(kv),
        kv_type: kv,
        tokenizer,
        chat_template,
        memory_estimate_bytes: memory.memory_estimate_bytes,
        memory,
    })
}

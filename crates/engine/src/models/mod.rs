//! Model architectures, one file each, behind one closed enum.

pub mod gemma3;
pub mod llama;

use crate::attention::KvCache;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::source::Source;
use crate::weight::Weight;
use candle_core::{Device, Tensor};
use std::path::Path;

/// Architectures we implement, as GGUF's `general.architecture` spells them.
pub const SUPPORTED: &str = "llama, qwen2, qwen3, gemma3";

/// A loaded model of any supported architecture.
pub enum Model {
    /// The llama family (`llama`, `mistral`, `qwen2`, `qwen3`).
    Llama(llama::Llama),
    /// `gemma3`.
    Gemma3(gemma3::Gemma3),
}

impl Model {
    /// Loads the model stored in an open GGUF file or HF folder.
    pub fn load(src: &Source, device: &Device) -> Result<Self> {
        match src.architecture()?.as_str() {
            "llama" | "mistral" | "qwen2" | "qwen3" => {
                Ok(Self::Llama(llama::Llama::load(src, device)?))
            }
            "gemma3" => Ok(Self::Gemma3(gemma3::Gemma3::load(src, device)?)),
            other => Err(Error::UnsupportedArchitecture {
                path: src.path().to_path_buf(),
                arch: other.to_string(),
                supported: SUPPORTED,
            }),
        }
    }

    /// Runs `ids` after what the cache holds and returns the logits of positions
    /// `logits_from ..` of `ids`: `[ids.len() - logits_from, vocab]`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache, logits_from: usize) -> Result<Tensor> {
        if ids.is_empty() || logits_from >= ids.len() {
            return Err(Error::Invalid(format!(
                "forward pass over {} tokens cannot return logits from position {logits_from}",
                ids.len()
            )));
        }
        match self {
            Self::Llama(m) => m.forward(ids, cache, logits_from),
            Self::Gemma3(m) => m.forward(ids, cache, logits_from),
        }
    }

    /// A fresh, empty cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config().layer_windows())
    }

    /// The hyper-parameters.
    pub fn config(&self) -> Config {
        match self {
            Self::Llama(m) => Config::Llama(m.config().clone()),
            Self::Gemma3(m) => Config::Gemma3(m.config().clone()),
        }
    }

    /// Weight bytes held and read per decoded token.
    pub fn weight_bytes(&self) -> WeightBytes {
        match self {
            Self::Llama(m) => m.weight_bytes(),
            Self::Gemma3(m) => m.weight_bytes(),
        }
    }
}

/// The hyper-parameters of any supported architecture, readable without loading weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Config {
    /// The llama family.
    Llama(llama::Config),
    /// `gemma3`.
    Gemma3(gemma3::Config),
}

impl Config {
    /// Reads the configuration from GGUF metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        match g.architecture()?.as_str() {
            "llama" | "qwen2" | "qwen3" => Ok(Self::Llama(llama::Config::from_gguf(g)?)),
            "gemma3" => Ok(Self::Gemma3(gemma3::Config::from_gguf(g)?)),
            other => Err(Error::UnsupportedArchitecture {
                path: g.path().to_path_buf(),
                arch: other.to_string(),
                supported: SUPPORTED,
            }),
        }
    }

    /// Reads the configuration from a GGUF file or an HF folder's `config.json`.
    pub fn from_source(src: &Source) -> Result<Self> {
        match src {
            Source::Gguf(g) => Self::from_gguf(g),
            Source::Hf(h) if h.arch() == "gemma3" => {
                Ok(Self::Gemma3(gemma3::Config::from_hf(h.config())?))
            }
            Source::Hf(_) => Ok(Self::Llama(llama::Config::from_source(src)?)),
        }
    }

    /// The engine's architecture name (`llama`, `mistral`, `qwen2`, `qwen3`, `gemma3`).
    pub fn architecture(&self) -> &'static str {
        match self {
            Self::Llama(c) => c.family.name(),
            Self::Gemma3(_) => "gemma3",
        }
    }

    /// The architecture's GGUF metadata (`general.architecture` and `{arch}.*`).
    pub fn gguf_metadata(&self) -> Vec<(String, candle_core::quantized::gguf_file::Value)> {
        match self {
            Self::Llama(c) => c.gguf_metadata(),
            Self::Gemma3(c) => c.gguf_metadata(),
        }
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        match self {
            Self::Llama(c) => c.num_hidden_layers,
            Self::Gemma3(c) => c.num_hidden_layers,
        }
    }

    /// Trained context length.
    pub fn context_length(&self) -> usize {
        match self {
            Self::Llama(c) => c.max_position_embeddings,
            Self::Gemma3(c) => c.max_position_embeddings,
        }
    }

    /// Vocabulary size (rows of the output projection).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Llama(c) => c.vocab_size,
            Self::Gemma3(c) => c.vocab_size,
        }
    }

    /// (hidden, heads, kv heads, head dim, feed-forward width).
    pub fn shape(&self) -> (usize, usize, usize, usize, usize) {
        match self {
            Self::Llama(c) => (
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                c.intermediate_size,
            ),
            Self::Gemma3(c) => (
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                c.intermediate_size,
            ),
        }
    }

    /// Per layer: the attention window of a sliding-window layer, `None` for a global one.
    pub fn layer_windows(&self) -> Vec<Option<usize>> {
        match self {
            Self::Llama(c) => vec![c.sliding_window; c.num_hidden_layers],
            Self::Gemma3(c) => c
                .sliding_layers
                .iter()
                .map(|&s| s.then_some(c.sliding_window))
                .collect(),
        }
    }

    /// Bytes of keys and values one cached position takes over all layers (F32 cache).
    pub fn kv_bytes_per_position(&self) -> usize {
        let (_, _, kv, hd, _) = self.shape();
        self.num_layers() * 2 * kv * hd * 4
    }

    /// One line describing which layers attend globally and which through a window.
    pub fn layer_pattern(&self) -> String {
        match self {
            Self::Llama(c) => format!(
                "{} layers, all global (rope base {}, linear scaling {})",
                c.num_hidden_layers, c.rope_theta, c.rope_scale
            ),
            Self::Gemma3(c) => {
                let global: Vec<String> = c
                    .sliding_layers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !**s)
                    .map(|(i, _)| i.to_string())
                    .collect();
                format!(
                    "{} layers: {} sliding (window {}, rope base {}), global at [{}] (rope base {}, linear scaling {})",
                    c.num_hidden_layers,
                    c.num_hidden_layers - global.len(),
                    c.sliding_window,
                    c.rope_local_base_freq,
                    global.join(", "),
                    c.rope_theta,
                    c.rope_scaling_factor
                )
            }
        }
    }
}

/// How many bytes the weights hold, and how many a decode step reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WeightBytes {
    /// All loaded weights.
    pub total: usize,
    /// Read from memory per decoded token: every matrix once, but only one row of an
    /// embedding table that is not also the output projection.
    pub read_per_token: usize,
}

impl WeightBytes {
    pub(crate) fn add_matrix(&mut self, w: &Weight) {
        self.total += w.bytes();
        self.read_per_token += w.bytes();
    }

    pub(crate) fn add_vector(&mut self, t: &Tensor) {
        let b = t.elem_count() * t.dtype().size_in_bytes();
        self.total += b;
        self.read_per_token += b;
    }

    pub(crate) fn add_embedding_and_output(&mut self, embd: &Weight, output: &Weight) {
        let tied = match (embd, output) {
            (Weight::Gguf(a), Weight::Gguf(b)) => std::sync::Arc::ptr_eq(a, b),
            (Weight::Dense(a), Weight::Dense(b)) => a.id() == b.id(),
            _ => false,
        };
        let (rows, _) = embd.dims();
        self.total += embd.bytes();
        self.read_per_token += embd.bytes() / rows.max(1);
        if !tied {
            self.add_matrix(output);
        } else {
            self.read_per_token += output.bytes();
        }
    }
}

/// The hyper-parameters every architecture writes to GGUF the same way.
pub(crate) struct GgufCommon<'a> {
    pub arch: &'a str,
    pub context: usize,
    pub hidden: usize,
    pub layers: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Linear rope scaling (1 = none, and then nothing is written).
    pub rope_scale: f64,
}

impl GgufCommon<'_> {
    /// `general.architecture` and the `{arch}.*` keys shared by all architectures.
    pub(crate) fn metadata(&self) -> Vec<(String, candle_core::quantized::gguf_file::Value)> {
        use candle_core::quantized::gguf_file::Value;
        let k = |s: &str| format!("{}.{s}", self.arch);
        let u = |x: usize| Value::U32(x as u32);
        let mut m = vec![
            (
                "general.architecture".to_string(),
                Value::String(self.arch.into()),
            ),
            (k("context_length"), u(self.context)),
            (k("embedding_length"), u(self.hidden)),
            (k("block_count"), u(self.layers)),
            (k("feed_forward_length"), u(self.ffn)),
            (k("attention.head_count"), u(self.heads)),
            (k("attention.head_count_kv"), u(self.kv_heads)),
            (k("attention.key_length"), u(self.head_dim)),
            (k("attention.value_length"), u(self.head_dim)),
            (
                k("attention.layer_norm_rms_epsilon"),
                Value::F32(self.rms_norm_eps as f32),
            ),
            (k("rope.freq_base"), Value::F32(self.rope_theta as f32)),
        ];
        if self.rope_scale != 1.0 {
            m.push((k("rope.scaling.type"), Value::String("linear".into())));
            m.push((k("rope.scaling.factor"), Value::F32(self.rope_scale as f32)));
        }
        m
    }
}

pub(crate) fn check_heads(path: &Path, heads: usize, kv: usize, head_dim: usize) -> Result<()> {
    if heads == 0
        || kv == 0
        || head_dim == 0
        || !heads.is_multiple_of(kv)
        || !head_dim.is_multiple_of(2)
    {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: format!(
                "inconsistent attention shape: {heads} heads, {kv} kv heads, head dim {head_dim}"
            ),
        });
    }
    Ok(())
}

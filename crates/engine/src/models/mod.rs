//! Model architectures. Everything the engine knows about one architecture lives in
//! its own file: how its configuration reads and writes (HF `config.json` and GGUF
//! metadata, both ways), its tensor names, the values llama.cpp stores differently
//! from transformers, its tensor inventory (and so its parameter count), the public
//! shapes `unicorn synth` builds, and the forward pass. Every other part of the
//! engine (loading, conversion, quantization, synthesis, `info`) asks the
//! [`REGISTRY`], so adding an architecture is one file and one line there.
//!
//! `llama.rs` holds the llama family (Llama, Mistral, Qwen 2, Qwen 3: one forward
//! pass that follows the tensors present); `gemma3.rs` holds Gemma 3, and
//! `siglip.rs` its vision tower and projector (`mmproj.rs` writes them as
//! llama.cpp's mmproj files).

pub mod gemma3;
pub mod llama;
pub mod mmproj;
pub mod siglip;

use crate::attention::{attend, attend_blocks, KvCache, KvType, Rope, RopeScaling};
use crate::error::{Error, Result};
use crate::formats::Weight;
use crate::gguf::GgufFile;
use crate::hf::config::HfConfig;
use crate::source::Source;
use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Tensor};
use std::cell::{Cell, RefCell};
use std::path::Path;
use unicorn_common::{Meter, Progress};

/// Every architecture the engine implements. Lookups take the first match, so a GGUF
/// `llama` file is read as Llama, not Mistral (llama.cpp stores both as `llama`).
pub static REGISTRY: &[&Architecture] = &[
    &llama::LLAMA,
    &llama::MISTRAL,
    &llama::QWEN2,
    &llama::QWEN3,
    &gemma3::GEMMA3,
];

/// A model's tensors: GGUF names and row-major shapes.
pub type Tensors = Vec<(String, Vec<usize>)>;

/// One architecture, described by its file: a static table of facts and functions.
pub struct Architecture {
    /// The engine's name (`qwen2`).
    pub name: &'static str,
    /// `general.architecture` of its GGUF files (llama.cpp stores Mistral as `llama`).
    pub gguf_name: &'static str,
    /// `architectures[0]` and `model_type` values of the HF configs it reads; the first
    /// is the class written to `config.json`.
    pub hf_names: &'static [&'static str],
    /// Per-block tensors besides [`crate::hf::names`]' common ones: (GGUF suffix, HF
    /// suffix after `model.layers.N.`).
    pub block_tensors: &'static [(&'static str, &'static str)],
    /// Reads the configuration from `config.json`.
    pub from_hf: fn(&'static Architecture, &HfConfig) -> Result<Config>,
    /// Reads the configuration from GGUF metadata.
    pub from_gguf: fn(&'static Architecture, &GgufFile) -> Result<Config>,
    /// The `{arch}.*` GGUF metadata llama.cpp reads.
    pub to_gguf: fn(&Config) -> Vec<(String, Value)>,
    /// The `config.json` transformers loads (`dtype`: `float32`, `bfloat16`, ...).
    pub to_hf: fn(&Config, &str) -> serde_json::Value,
    /// How GGUF stores a tensor (by GGUF name) differently from transformers.
    pub stored: fn(&Config, &str) -> Stored,
    /// The tensors a model of this configuration has: GGUF names and shapes.
    pub tensors: fn(&Config) -> Tensors,
    /// Public models whose shapes `unicorn synth` builds.
    pub shapes: &'static [Shape],
    /// Loads the weights.
    pub load: fn(&Config, &Loader) -> Result<Box<dyn Forward>>,
    /// Its chat templates have no system role: the system prompt goes into the first
    /// user turn.
    pub folds_system_prompt: bool,
}

impl std::fmt::Debug for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Architecture {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A public model's shape: `unicorn synth --shape NAME`.
pub struct Shape {
    /// The name on the command line (`4b`).
    pub name: &'static str,
    /// The model whose text configuration it is.
    pub model: &'static str,
    /// That configuration.
    pub config: fn() -> Config,
}

/// How GGUF stores a tensor's values relative to transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// As transformers does.
    Same,
    /// `1 + w` (Gemma's norm scales; transformers stores `w` and adds 1 when it runs).
    PlusOne,
    /// Each of this many heads' rows permuted from rotate-half order to interleaved
    /// pairs (llama.cpp's converter does this to `llama` q/k projections).
    PermutedHeads(usize),
}

/// The architecture HF `config.json` names (`architectures[0]`, else `model_type`).
pub fn from_hf_name(name: &str) -> Option<&'static Architecture> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.hf_names.contains(&name))
}

/// The architecture a GGUF file's `general.architecture` names.
pub fn from_gguf_name(name: &str) -> Option<&'static Architecture> {
    REGISTRY.iter().copied().find(|a| a.gguf_name == name)
}

/// The architecture of that engine name (`gemma3`).
pub fn by_name(name: &str) -> Option<&'static Architecture> {
    REGISTRY.iter().copied().find(|a| a.name == name)
}

/// The engine names, for messages: `llama, mistral, qwen2, qwen3, gemma3`.
pub fn supported() -> String {
    let names: Vec<&str> = REGISTRY.iter().map(|a| a.name).collect();
    names.join(", ")
}

/// The HF classes we read, for messages.
pub fn supported_hf() -> String {
    let names: Vec<&str> = REGISTRY.iter().map(|a| a.hf_names[0]).collect();
    names.join(", ")
}

/// The longest context a file may claim (16 Mi positions).
pub const MAX_CONTEXT: usize = 1 << 24;

/// The largest value a size key may hold, by its last name part in either naming
/// (`num_hidden_layers`, `gemma3.block_count`): far beyond any real model, small
/// enough that what is sized by it (per-layer tables, caches) can be allocated. A
/// file may claim anything; this is checked before anything is built from it.
pub fn size_limit(key: &str) -> Option<u64> {
    Some(match key.rsplit('.').next().unwrap_or(key) {
        "num_hidden_layers" | "block_count" | "sliding_window_pattern" => 1024,
        "num_attention_heads" | "num_key_value_heads" | "head_count" | "head_count_kv" => 1024,
        "head_dim" | "key_length" | "value_length" | "dimension_count" => 4096,
        "hidden_size" | "embedding_length" => 1 << 17,
        "intermediate_size" | "feed_forward_length" => 1 << 20,
        "vocab_size" => 1 << 23,
        "max_position_embeddings" | "context_length" | "sliding_window" => MAX_CONTEXT as u64,
        _ => return None,
    })
}

/// A loaded network: the forward pass and what its weights take.
pub trait Forward: Send + Sync {
    /// Runs `t` tokens of each of the `B` sequences of `steps` at its cache's next
    /// positions and returns the logits of positions `logits_from .. t` of each:
    /// `[B, t - logits_from, vocab]`.
    fn forward(&self, steps: &mut Steps<'_, '_>, logits_from: usize) -> Result<Tensor>;
    /// Weight bytes held and read per decoded token.
    fn weight_bytes(&self) -> WeightBytes;
    /// The output head (tied or not), for [`Model::set_head_type`].
    fn output_mut(&mut self) -> &mut Weight;
}

/// How the output head runs: as stored, or re-quantized to Q8_0 at load (the
/// model's files unchanged). A dense head is the largest single read of a decode
/// step (Gemma 3 4B's tied BF16 head: 1.3 of NF4's 2.9 GB per token); Q8_0 halves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum HeadType {
    /// As the model stores it.
    #[default]
    #[serde(rename = "stored")]
    Stored,
    /// A Q8_0 copy of a dense (F32, F16, BF16) head; a quantized head is kept.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl HeadType {
    /// Parses `stored` or `q8_0` (case-insensitive).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "stored" => Ok(Self::Stored),
            "q8_0" => Ok(Self::Q8_0),
            _ => Err(format!("{s}: not an output head type (stored, q8_0)")),
        }
    }
}

impl std::fmt::Display for HeadType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stored => "stored",
            Self::Q8_0 => "q8_0",
        })
    }
}

/// A loaded model of any registered architecture.
pub struct Model {
    config: Config,
    net: Box<dyn Forward>,
    kv: KvType,
    head: HeadType,
    cpu: bool,
}

impl Model {
    /// Loads the model stored in an open GGUF file or HF folder.
    pub fn load(src: &Source, device: &Device) -> Result<Self> {
        Self::load_with_progress(src, device, &mut |_| true)
    }

    /// [`Model::load`], telling `progress` the weight bytes held after each tensor
    /// (out of what [`crate::memory::resident_weight_bytes`] predicts); returning
    /// false cancels with [`Error::Cancelled`].
    pub fn load_with_progress(
        src: &Source,
        device: &Device,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<Self> {
        let config = Config::from_source(src)?;
        let loader = Loader {
            src,
            device,
            progress: RefCell::new(progress),
            meter: Meter::start(),
            done: Cell::new((0, 0)),
            total: crate::memory::resident_weight_bytes(src),
            items: src.tensor_count(),
        };
        let net = (config.arch.load)(&config, &loader)?;
        // What computes on the GPU stays in its type there (f16 and Q8_0 rows are
        // converted by the CPU kernels).
        let cpu = device.is_cpu();
        let kv = match cpu {
            true => KvType::default(),
            false => KvType::F32,
        };
        Ok(Self {
            config,
            net,
            kv,
            head: HeadType::Stored,
            cpu,
        })
    }

    /// Runs `ids` after what the cache holds and returns the logits of positions
    /// `logits_from ..` of `ids`: `[ids.len() - logits_from, vocab]`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache, logits_from: usize) -> Result<Tensor> {
        let mut caches = [cache];
        self.forward_batch(&[ids], &mut caches, logits_from)?
            .squeeze(0)
            .map_err(Into::into)
    }

    /// One forward pass over several sequences, each on its own cache, with the same
    /// number of new tokens each (continuous batching: every decoding sequence's
    /// next token in one pass, so each weight is read once per step for all of them).
    /// Returns `[B, t - logits_from, vocab]`.
    ///
    /// A sequence's logits do not depend on what else is in the batch: the matmul
    /// kernels take one activation row at a time, or four with results bit-identical
    /// to one (tested in `formats::blocks`), and choose the tiled prefill kernels by
    /// the tokens per sequence, not by the rows in the batch; attention, norms and
    /// rope are per row.
    pub fn forward_batch(
        &self,
        ids: &[&[u32]],
        caches: &mut [&mut KvCache],
        logits_from: usize,
    ) -> Result<Tensor> {
        let t = ids.first().map_or(0, |s| s.len());
        if t == 0 || logits_from >= t || ids.iter().any(|s| s.len() != t) {
            return Err(Error::Invalid(format!(
                "a forward pass needs the same, non-zero number of tokens in every \
                 sequence, and logits from one of them (got lengths {:?}, logits from {logits_from})",
                ids.iter().map(|s| s.len()).collect::<Vec<_>>()
            )));
        }
        if ids.len() != caches.len() {
            return Err(Error::Invalid(format!(
                "{} sequences with {} caches",
                ids.len(),
                caches.len()
            )));
        }
        let mut steps = Steps {
            ids,
            caches,
            t,
            images: &[],
            images_placed: Cell::new(false),
        };
        self.net.forward(&mut steps, logits_from)
    }

    /// [`Model::forward`] with images: each [`ImageSpan`] replaces the embeddings of
    /// its positions of `ids` with an image's features (rows of the model's hidden
    /// size, from [`siglip::VisionTower::encode`]), and those positions attend to each
    /// other both ways. Decode steps after it are ordinary [`Model::forward`] calls.
    pub fn forward_with_images(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        logits_from: usize,
        images: &[ImageSpan<'_>],
    ) -> Result<Tensor> {
        if images.is_empty() {
            return self.forward(ids, cache, logits_from);
        }
        let t = ids.len();
        if t == 0 || logits_from >= t {
            return Err(Error::Invalid(format!(
                "a forward pass needs tokens and logits from one of them (got {t} tokens, logits from {logits_from})"
            )));
        }
        let mut end = 0;
        for s in images {
            let (rows, width) = s.features.dims2()?;
            if s.at < end || rows == 0 || s.at + rows > t || width != self.config.hidden_size {
                return Err(Error::Invalid(format!(
                    "image features [{rows}, {width}] at token {} do not fit a prompt of {t} tokens \
                     and hidden size {} (spans in order, not overlapping)",
                    s.at, self.config.hidden_size
                )));
            }
            end = s.at + rows;
        }
        let mut caches = [cache];
        let mut steps = Steps {
            ids: &[ids],
            caches: &mut caches,
            t,
            images,
            images_placed: Cell::new(false),
        };
        let logits = self.net.forward(&mut steps, logits_from)?;
        if !steps.images_placed.get() {
            return Err(Error::Invalid(format!(
                "{} models take no image features",
                self.config.arch.name
            )));
        }
        Ok(logits.squeeze(0)?)
    }

    /// A fresh, empty cache for this model, of its [`Model::kv_type`].
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config.layer_windows, self.kv)
    }

    /// How its caches hold keys and values.
    pub fn kv_type(&self) -> KvType {
        self.kv
    }

    /// Makes later caches on the CPU hold keys and values as `kv` (refused where the
    /// heads do not fit the type). A model on a GPU keeps an f32 cache whatever is
    /// asked: the converting kernels are the CPU's; [`Model::kv_type`] says which.
    pub fn set_kv_type(&mut self, kv: KvType) -> Result<()> {
        if let Some(why) = kv.unsupported(self.config.head_dim) {
            return Err(Error::Invalid(why));
        }
        if self.cpu {
            self.kv = kv;
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the output head as `head` says: [`HeadType::Q8_0`] replaces a dense head
    /// on the CPU with a Q8_0 copy (a tied embedding keeps its stored table for
    /// lookups). Returns whether the head changed.
    pub fn set_head_type(&mut self, head: HeadType) -> Result<bool> {
        if head == HeadType::Stored || !self.cpu {
            return Ok(false);
        }
        let out = self.net.output_mut();
        let Weight::Dense(w) = out else {
            return Ok(false);
        };
        let q = crate::formats::q8_0::quantize_matrix(w)?;
        *out = Weight::Gguf(std::sync::Arc::new(q));
        self.head = head;
        Ok(true)
    }

    /// How the output head runs: [`HeadType::Q8_0`] only where a dense head was
    /// re-quantized.
    pub fn head_type(&self) -> HeadType {
        self.head
    }

    /// Weight bytes held and read per decoded token.
    pub fn weight_bytes(&self) -> WeightBytes {
        self.net.weight_bytes()
    }
}

/// What an architecture's `load` reads its tensors through: the source (by GGUF
/// names), the device, and the load's progress, told after each tensor.
pub struct Loader<'a> {
    src: &'a Source,
    device: &'a Device,
    progress: RefCell<&'a mut dyn FnMut(&Progress) -> bool>,
    meter: Meter,
    /// (tensors, bytes) loaded so far.
    done: Cell<(usize, u64)>,
    total: u64,
    items: usize,
}

impl Loader<'_> {
    /// Counts a loaded tensor; the progress callback may cancel.
    fn loaded(&self, name: &str, bytes: u64) -> Result<()> {
        let (n, b) = self.done.get();
        let done = (n + 1, (b + bytes).min(self.total));
        self.done.set(done);
        let p = self.meter.at(name, done.0, self.items, done.1, self.total);
        if (self.progress.borrow_mut())(&p) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }

    /// A matrix `[out, in]` by GGUF name.
    pub fn weight(&self, name: &str, shape: (usize, usize)) -> Result<Weight> {
        let w = self.src.weight(name, shape, self.device)?;
        self.loaded(name, w.bytes() as u64)?;
        Ok(w)
    }

    /// A vector in F32 by GGUF name.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let v = self.src.vector(name, len, self.device)?;
        self.loaded(name, len as u64 * 4)?;
        Ok(v)
    }

    /// Whether the tensor (GGUF name) is stored.
    pub fn has(&self, name: &str) -> bool {
        self.src.has_tensor(name)
    }

    /// Whether the tensors are in transformers' layout (an HF folder).
    pub fn is_hf(&self) -> bool {
        self.src.is_hf()
    }

    /// The rope of a layer kind, with a [`RopeScaling::Stored`] model's divisors read
    /// from its [`crate::attention::ROPE_FREQS`] tensor.
    pub fn rope(&self, base: f64, dim: usize, neox: bool, scaling: &RopeScaling) -> Result<Rope> {
        use crate::attention::ROPE_FREQS;
        let stored = match scaling {
            RopeScaling::Stored => Some(
                self.src
                    .vector(ROPE_FREQS, dim / 2, &Device::Cpu)?
                    .to_vec1::<f32>()
                    .map_err(|e| self.tensor_err(ROPE_FREQS, e.to_string()))?,
            ),
            _ => None,
        };
        Rope::new(base, dim, neox, scaling, stored.as_deref())
            .map_err(|m| self.tensor_err(ROPE_FREQS, m))
    }

    fn tensor_err(&self, tensor: &str, message: String) -> Error {
        Error::Tensor {
            path: self.src.path().to_path_buf(),
            tensor: tensor.to_string(),
            message,
        }
    }
}

/// The hyper-parameters of any registered architecture, validated, readable without
/// loading weights. Each architecture file reads and writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The architecture.
    pub arch: &'static Architecture,
    /// Residual width (`embedding_length`).
    pub hidden_size: usize,
    /// MLP width (`feed_forward_length`).
    pub intermediate_size: usize,
    /// Transformer blocks (`block_count`).
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Vocabulary size: rows of the embedding and of the output projection.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Trained context length.
    pub max_position_embeddings: usize,
    /// Rope base of global layers.
    pub rope_theta: f64,
    /// Rope scaling of global layers.
    pub rope_scaling: RopeScaling,
    /// Rope base of sliding-window layers, which have no scaling (Gemma 3); `None`:
    /// they use the global rope.
    pub rope_local_theta: Option<f64>,
    /// Attention scores are multiplied by `query_pre_attn_scalar ^ -0.5` (head_dim,
    /// except where the architecture says otherwise).
    pub query_pre_attn_scalar: f64,
    /// Per layer: the window of a sliding-window layer (the token itself included),
    /// `None` for a global one.
    pub layer_windows: Vec<Option<usize>>,
    /// The output projection is the embedding (no `lm_head.weight`).
    pub tied_embeddings: bool,
    /// q/k/v projections have biases (Qwen 2).
    pub attention_bias: bool,
    /// Per-head RMSNorms on q and k (Qwen 3, Gemma 3).
    pub qk_norm: bool,
    /// Beginning-of-sequence id, when the source names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids the source names.
    pub eos_token_ids: Vec<u32>,
}

impl Config {
    /// Reads the configuration from GGUF metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let name = g.architecture()?;
        let arch = from_gguf_name(&name).ok_or_else(|| Error::UnsupportedArchitecture {
            path: g.path().to_path_buf(),
            arch: name.clone(),
            supported: supported(),
        })?;
        let c = (arch.from_gguf)(arch, g)?;
        c.check(g.path())?;
        Ok(c)
    }

    /// Reads the configuration from `config.json` (its architecture from the file).
    pub fn from_hf(c: &HfConfig) -> Result<Self> {
        let name = c.architecture()?;
        let arch = from_hf_name(&name).ok_or_else(|| Error::UnsupportedArchitecture {
            path: c.path().to_path_buf(),
            arch: name.clone(),
            supported: supported_hf(),
        })?;
        let cfg = (arch.from_hf)(arch, c)?;
        cfg.check(c.path())?;
        Ok(cfg)
    }

    /// Reads the configuration from a GGUF file or an HF folder's `config.json`, and
    /// checks that the source holds every tensor it implies, in the shape it implies:
    /// every command (`info` and `import` as much as `generate`) refuses what loading
    /// would refuse, from the headers alone.
    pub fn from_source(src: &Source) -> Result<Self> {
        let c = match src {
            Source::Gguf(g) => Self::from_gguf(g)?,
            Source::Hf(h) => Self::from_hf(h.config())?,
        };
        for (name, want) in c.tensors() {
            let err = |message: String| {
                let (path, tensor) = src.whereabouts(&name);
                Error::Tensor {
                    path,
                    tensor,
                    message,
                }
            };
            match src.tensor_shape(&name)? {
                None => return Err(err(format!("missing (a tensor of shape {want:?})"))),
                Some(have) if have != want => {
                    return Err(err(format!(
                        "shape {have:?}, but the configuration implies {want:?}"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(c)
    }

    /// The engine's architecture name (`llama`, `mistral`, `qwen2`, `qwen3`, `gemma3`).
    pub fn architecture(&self) -> &'static str {
        self.arch.name
    }

    /// `general.architecture` and the `{arch}.*` GGUF metadata.
    pub fn gguf_metadata(&self) -> Vec<(String, Value)> {
        (self.arch.to_gguf)(self)
    }

    /// The `config.json` transformers loads, weights in `dtype` (`float32`, ...).
    pub fn to_hf_json(&self, dtype: &str) -> serde_json::Value {
        let mut v = (self.arch.to_hf)(self, dtype);
        v["tie_word_embeddings"] = self.tied_embeddings.into();
        v["torch_dtype"] = dtype.into();
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = b.into();
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => v["eos_token_id"] = (*one).into(),
            many => v["eos_token_id"] = many.into(),
        }
        v
    }

    /// How GGUF stores tensor `gguf_name` relative to transformers.
    pub fn stored(&self, gguf_name: &str) -> Stored {
        (self.arch.stored)(self, gguf_name)
    }

    /// The model's tensors: GGUF names and shapes.
    pub fn tensors(&self) -> Tensors {
        (self.arch.tensors)(self)
    }

    /// Number of weights.
    pub fn parameters(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(_, s)| s.iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        self.num_hidden_layers
    }

    /// Trained context length.
    pub fn context_length(&self) -> usize {
        self.max_position_embeddings
    }

    /// Vocabulary size (rows of the output projection).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// (hidden, heads, kv heads, head dim, feed-forward width).
    pub fn shape(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.intermediate_size,
        )
    }

    /// Per layer: the attention window of a sliding-window layer, `None` for a global one.
    pub fn layer_windows(&self) -> Vec<Option<usize>> {
        self.layer_windows.clone()
    }

    /// Bytes of keys and values one cached position takes over all layers.
    pub fn kv_bytes_per_position(&self, kv: KvType) -> usize {
        self.num_hidden_layers * 2 * self.num_key_value_heads * kv.row_bytes(self.head_dim)
    }

    /// One line describing which layers attend globally and which through a window.
    pub fn layer_pattern(&self) -> String {
        let n = self.num_hidden_layers;
        let global: Vec<String> = (0..n)
            .filter(|&i| self.layer_windows[i].is_none())
            .map(|i| i.to_string())
            .collect();
        let rope = format!(
            "rope base {}, {}",
            self.rope_theta,
            self.rope_scaling.describe()
        );
        match self.layer_windows.iter().flatten().next() {
            None => format!("{n} layers, all global ({rope})"),
            Some(w) if global.is_empty() => {
                format!("{n} layers, all sliding (window {w}, {rope})")
            }
            Some(w) => format!(
                "{n} layers: {} sliding (window {w}, rope base {}), global at [{}] ({rope})",
                n - global.len(),
                self.rope_local_theta.unwrap_or(self.rope_theta),
                global.join(", "),
            ),
        }
    }

    /// Rejects shapes no forward pass can run: empty or inconsistent heads, a window
    /// list of the wrong length.
    fn check(&self, path: &Path) -> Result<()> {
        let (h, heads, kv, hd, ff) = self.shape();
        let bad = |message: String| {
            Err(Error::BadFile {
                path: path.to_path_buf(),
                message,
            })
        };
        if heads == 0 || kv == 0 || hd == 0 || !heads.is_multiple_of(kv) || !hd.is_multiple_of(2) {
            return bad(format!(
                "inconsistent attention shape: {heads} heads, {kv} kv heads, head dim {hd}"
            ));
        }
        if h == 0 || ff == 0 || self.vocab_size == 0 || self.num_hidden_layers == 0 {
            return bad(format!(
                "empty model: hidden {h}, ffn {ff}, vocab {}, {} layers",
                self.vocab_size, self.num_hidden_layers
            ));
        }
        if self.layer_windows.len() != self.num_hidden_layers {
            return bad(format!(
                "{} layer types for {} layers",
                self.layer_windows.len(),
                self.num_hidden_layers
            ));
        }
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            let most = size_limit(key).unwrap_or(u64::MAX);
            if v as u64 > most {
                return bad(format!("{key} {v}: more than {most}, not a real model"));
            }
        }
        if self.layer_windows.iter().flatten().any(|&w| w == 0) {
            return bad("a sliding window of 0 tokens".into());
        }
        let mut positive = vec![
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
            ("local rope theta", self.rope_local_theta.unwrap_or(1.0)),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
        ];
        positive.extend(self.rope_scaling.numbers());
        if let Some((key, v)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return bad(format!("{key} is {v}: expected a positive finite number"));
        }
        if self.rms_norm_eps >= 1.0 {
            return bad(format!(
                "rms_norm_eps is {}: expected below 1",
                self.rms_norm_eps
            ));
        }
        Ok(())
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
            (Weight::Nf4(a), Weight::Nf4(b)) => std::sync::Arc::ptr_eq(a, b),
            #[cfg(feature = "cuda")]
            (Weight::Nf4Cuda(a), Weight::Nf4Cuda(b)) => std::sync::Arc::ptr_eq(a, b),
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

/// The hyper-parameters every architecture writes to GGUF the same way:
/// `general.architecture` and the shared `{arch}.*` keys.
pub(crate) fn gguf_common(c: &Config) -> Vec<(String, Value)> {
    let arch = c.arch.gguf_name;
    let k = |s: &str| format!("{arch}.{s}");
    let u = |x: usize| Value::U32(x as u32);
    let mut m = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (k("context_length"), u(c.max_position_embeddings)),
        (k("embedding_length"), u(c.hidden_size)),
        (k("block_count"), u(c.num_hidden_layers)),
        (k("feed_forward_length"), u(c.intermediate_size)),
        (k("attention.head_count"), u(c.num_attention_heads)),
        (k("attention.head_count_kv"), u(c.num_key_value_heads)),
        (k("attention.key_length"), u(c.head_dim)),
        (k("attention.value_length"), u(c.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps as f32),
        ),
        (k("rope.freq_base"), Value::F32(c.rope_theta as f32)),
    ];
    m.extend(c.rope_scaling.to_gguf(arch));
    m
}

/// The hyper-parameters every architecture reads from GGUF the same way, under
/// `{arch}.`: (hidden, heads, kv heads, key length if stored, layers, ffn).
pub(crate) fn gguf_shape(
    g: &GgufFile,
    arch: &str,
) -> Result<(usize, usize, usize, Option<usize>, usize, usize)> {
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = g.u64(&k("embedding_length"))? as usize;
    let heads = g.u64(&k("attention.head_count"))? as usize;
    let kv = g
        .u64_opt(&k("attention.head_count_kv"))?
        .map_or(heads, |x| x as usize);
    let head_dim = g.u64_opt(&k("attention.key_length"))?.map(|x| x as usize);
    let layers = g.u64(&k("block_count"))? as usize;
    let ffn = g.u64(&k("feed_forward_length"))? as usize;
    Ok((hidden, heads, kv, head_dim, layers, ffn))
}

/// BOS and EOS ids a GGUF's tokenizer metadata names.
pub(crate) fn gguf_special_ids(g: &GgufFile) -> Result<(Option<u32>, Vec<u32>)> {
    let bos = g.u64_opt("tokenizer.ggml.bos_token_id")?.map(|x| x as u32);
    let eos = g
        .u64_opt("tokenizer.ggml.eos_token_id")?
        .map(|x| vec![x as u32])
        .unwrap_or_default();
    Ok((bos, eos))
}

/// BOS and EOS ids `config.json` names.
pub(crate) fn hf_special_ids(c: &HfConfig) -> Result<(Option<u32>, Vec<u32>)> {
    let bos = c.ids("bos_token_id")?.first().copied();
    Ok((bos, c.ids("eos_token_id")?))
}

/// The vocabulary size of a GGUF: its tokenizer's entries, or (a file without one)
/// the embedding's rows.
pub(crate) fn gguf_vocab(g: &GgufFile, arch: &str) -> Result<usize> {
    if let Some(v) = g.u64_opt(&format!("{arch}.vocab_size"))? {
        return Ok(v as usize);
    }
    match g.get("tokenizer.ggml.tokens") {
        Some(_) => Ok(g.strings("tokenizer.ggml.tokens")?.len()),
        None => Ok(g.tensor_location("token_embd.weight")?.2[0]),
    }
}

/// The tensors every architecture here has, in llama.cpp's order: the embedding, per
/// block the attention and MLP projections (plus whatever `extra(layer)` adds), the
/// final norm and, untied, the output projection.
pub(crate) fn common_tensors(c: &Config, block_extra: &[(&str, usize)]) -> Tensors {
    let (h, heads, kv, hd, ff) = c.shape();
    let mut t = vec![("token_embd.weight".to_string(), vec![c.vocab_size, h])];
    for i in 0..c.num_hidden_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        t.push((n("attn_norm.weight"), vec![h]));
        t.push((n("attn_q.weight"), vec![heads * hd, h]));
        t.push((n("attn_k.weight"), vec![kv * hd, h]));
        t.push((n("attn_v.weight"), vec![kv * hd, h]));
        if c.attention_bias {
            t.push((n("attn_q.bias"), vec![heads * hd]));
            t.push((n("attn_k.bias"), vec![kv * hd]));
            t.push((n("attn_v.bias"), vec![kv * hd]));
        }
        if c.qk_norm {
            t.push((n("attn_q_norm.weight"), vec![hd]));
            t.push((n("attn_k_norm.weight"), vec![hd]));
        }
        t.push((n("attn_output.weight"), vec![h, heads * hd]));
        t.push((n("ffn_norm.weight"), vec![h]));
        t.push((n("ffn_gate.weight"), vec![ff, h]));
        t.push((n("ffn_up.weight"), vec![ff, h]));
        t.push((n("ffn_down.weight"), vec![h, ff]));
        for (name, len) in block_extra {
            t.push((n(name), vec![*len]));
        }
    }
    t.push(("output_norm.weight".to_string(), vec![h]));
    if !c.tied_embeddings {
        t.push(("output.weight".to_string(), vec![c.vocab_size, h]));
    }
    t
}

/// The sequences of one forward pass ([`Model::forward_batch`]): `t` new tokens of
/// each, each on its own cache. The architectures run norms and matmuls on all rows
/// at once (`[B, t, hidden]`) and hand the per-sequence parts (rope positions, the
/// cache, attention) to these methods.
pub struct Steps<'a, 'c> {
    ids: &'a [&'a [u32]],
    caches: &'a mut [&'c mut KvCache],
    t: usize,
    /// Image features of a one-sequence pass ([`Model::forward_with_images`]).
    images: &'a [ImageSpan<'a>],
    /// Whether the architecture put them in ([`Steps::place_images`]).
    images_placed: Cell<bool>,
}

/// An image's features in a forward pass: its `[n, hidden]` rows replace the
/// embeddings of new tokens `at .. at + n`, which form one bidirectional block.
#[derive(Debug, Clone, Copy)]
pub struct ImageSpan<'a> {
    /// Index of its first token among the pass's new tokens.
    pub at: usize,
    /// The rows, in the model's hidden size (F32).
    pub features: &'a Tensor,
}

impl Steps<'_, '_> {
    /// Token embeddings of every sequence: `[B, t, hidden]`.
    pub(crate) fn embed(&self, w: &Weight, dev: &Device) -> candle_core::Result<Tensor> {
        let flat: Vec<u32> = self.ids.iter().flat_map(|s| s.iter().copied()).collect();
        let x = w.embedding(&Tensor::from_vec(flat, (self.ids.len(), self.t), dev)?)?;
        x.reshape((self.ids.len(), self.t, x.dim(1)?))
    }

    /// `x` (`[1, t, hidden]`, the scaled token embeddings) with the image rows of
    /// the pass in place of their tokens' embeddings. The features are not scaled:
    /// Gemma 3 multiplies only text embeddings by √hidden.
    pub(crate) fn place_images(&self, x: Tensor) -> candle_core::Result<Tensor> {
        if self.images.is_empty() {
            return Ok(x);
        }
        self.images_placed.set(true);
        let mut parts = Vec::with_capacity(2 * self.images.len() + 1);
        let mut at = 0;
        for s in self.images {
            let n = s.features.dim(0)?;
            if s.at > at {
                parts.push(x.narrow(1, at, s.at - at)?);
            }
            parts.push(s.features.to_dtype(x.dtype())?.unsqueeze(0)?);
            at = s.at + n;
        }
        if at < self.t {
            parts.push(x.narrow(1, at, self.t - at)?);
        }
        Tensor::cat(&parts, 1)
    }

    /// Rope tables at each sequence's positions: `[t, dim/2]` for one sequence (as
    /// candle's rope takes them), `[B, t, dim/2]` for several.
    pub(crate) fn rope_tables(
        &self,
        rope: &Rope,
        dev: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        if self.caches.len() == 1 {
            return rope.tables(self.caches[0].len(), self.t, dev);
        }
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for c in self.caches.iter() {
            let (c, s) = rope.tables(c.len(), self.t, dev)?;
            cos.push(c);
            sin.push(s);
        }
        Ok((Tensor::stack(&cos, 0)?, Tensor::stack(&sin, 0)?))
    }

    /// Appends each sequence's new keys and values (`[B, kv_heads, t, d]`) to layer
    /// `layer` of its cache and attends its queries (`[B, heads, t, d]`, rope
    /// applied) over them: `[B, t, heads * d]`.
    pub(crate) fn attend(
        &mut self,
        layer: usize,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        scale: f64,
        window: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let one = |x: &Tensor, i: usize| -> candle_core::Result<Tensor> {
            match self.ids.len() {
                1 => Ok(x.clone()),
                _ => x.narrow(0, i, 1)?.contiguous(),
            }
        };
        let mut outs = Vec::with_capacity(self.ids.len());
        for i in 0..self.ids.len() {
            let cache = &mut *self.caches[i];
            let start = cache.len();
            let (kc, vc, base) = cache.append(layer, &one(k, i)?, &one(v, i)?)?;
            let q = one(q, i)?;
            outs.push(if self.images.is_empty() {
                attend(&q, &kc, &vc, (start, base), scale, window)?
            } else {
                let blocks: Vec<_> = self
                    .images
                    .iter()
                    .map(|s| start + s.at..start + s.at + s.features.dim(0).unwrap_or(0))
                    .collect();
                attend_blocks(&q, &kc, &vc, (start, base), scale, window, &blocks)?
            });
        }
        match outs.len() {
            1 => Ok(outs.remove(0)),
            _ => Tensor::cat(&outs, 0),
        }
    }

    /// Marks the `t` new positions of every sequence as filled (after the last layer).
    pub(crate) fn advance(&mut self) {
        for c in self.caches.iter_mut() {
            c.advance(self.t);
        }
    }

    /// New tokens per sequence.
    pub(crate) fn t(&self) -> usize {
        self.t
    }
}

/// `[B, t, n * d]` → `[B, n, t, d]`.
pub(crate) fn heads(x: &Tensor, n: usize, d: usize) -> candle_core::Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    x.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()
}

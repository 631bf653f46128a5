//! The llama family: pre-norm blocks with RMSNorm, grouped-query attention with
//! RoPE and a SiLU-gated MLP. Its members differ in small, optional parts, each read
//! from the checkpoint rather than assumed: Qwen 2 adds q/k/v biases, Qwen 3 adds
//! per-head q/k RMSNorms (and head_dim · heads ≠ hidden), Mistral v0.1 a sliding
//! window on every layer.

use crate::attention::{attend, rms_norm, KvCache, Rope};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::hf::config::HfConfig;
use crate::source::Source;
use crate::weight::Weight;
use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Tensor};

/// Which member of the family (for names and defaults only; the forward pass follows
/// the tensors that are present).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama 2/3, SmolLM2.
    Llama,
    /// Mistral.
    Mistral,
    /// Qwen 2 / 2.5.
    Qwen2,
    /// Qwen 3 (dense).
    Qwen3,
}

impl Family {
    /// The architecture name as GGUF spells it (llama.cpp stores Mistral as `llama`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama | Self::Mistral => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// The engine's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// From the engine's name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            _ => return None,
        })
    }

    /// The transformers class name.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// Hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Which member of the family.
    pub family: Family,
    /// `embedding_length`.
    pub hidden_size: usize,
    /// `feed_forward_length`.
    pub intermediate_size: usize,
    /// `block_count`.
    pub num_hidden_layers: usize,
    /// `attention.head_count`.
    pub num_attention_heads: usize,
    /// `attention.head_count_kv`.
    pub num_key_value_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// `attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f64,
    /// `rope.freq_base`.
    pub rope_theta: f64,
    /// Linear rope scaling factor (1 = none).
    pub rope_scale: f64,
    /// Trained context length.
    pub max_position_embeddings: usize,
    /// A window on every layer (Mistral v0.1), the token itself included.
    pub sliding_window: Option<usize>,
}

impl Config {
    /// Reads the hyper-parameters from GGUF metadata (`llama.*`, `qwen2.*`, `qwen3.*`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.architecture()?;
        let family = match arch.as_str() {
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            _ => Family::Llama,
        };
        let a = arch.as_str();
        let hidden_size = g.u64(&format!("{a}.embedding_length"))? as usize;
        let heads = g.u64(&format!("{a}.attention.head_count"))? as usize;
        let kv = g
            .u64_opt(&format!("{a}.attention.head_count_kv"))?
            .map(|x| x as usize)
            .unwrap_or(heads);
        let head_dim = g
            .u64_opt(&format!("{a}.attention.key_length"))?
            .map(|x| x as usize)
            .unwrap_or(hidden_size / heads.max(1));
        let vocab_size = match g.u64_opt(&format!("{a}.vocab_size"))? {
            Some(v) => v as usize,
            None => g.strings("tokenizer.ggml.tokens")?.len(),
        };
        let rope_scale = match g.string_opt(&format!("{a}.rope.scaling.type"))?.as_deref() {
            Some("linear") => g
                .f64_opt(&format!("{a}.rope.scaling.factor"))?
                .unwrap_or(1.0),
            _ => 1.0,
        };
        let cfg = Self {
            family,
            hidden_size,
            intermediate_size: g.u64(&format!("{a}.feed_forward_length"))? as usize,
            num_hidden_layers: g.u64(&format!("{a}.block_count"))? as usize,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            vocab_size,
            rms_norm_eps: g.f64(&format!("{a}.attention.layer_norm_rms_epsilon"))?,
            rope_theta: g
                .f64_opt(&format!("{a}.rope.freq_base"))?
                .unwrap_or(10_000.0),
            rope_scale,
            max_position_embeddings: g.u64_opt(&format!("{a}.context_length"))?.unwrap_or(4096)
                as usize,
            sliding_window: None,
        };
        super::check_heads(g.path(), heads, kv, head_dim)?;
        Ok(cfg)
    }

    /// Reads the hyper-parameters from `config.json`.
    pub fn from_hf(c: &HfConfig, family: Family) -> Result<Self> {
        let hidden_size = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let kv = c.usize_opt("num_key_value_heads")?.unwrap_or(heads);
        let head_dim = c
            .usize_opt("head_dim")?
            .unwrap_or(hidden_size / heads.max(1));
        let (rope_theta, rope_scale) = c.rope(None, 10_000.0)?;
        let sliding_window = match family {
            Family::Mistral => c.usize_opt("sliding_window")?,
            Family::Qwen2 | Family::Qwen3 if c.bool_opt("use_sliding_window")? == Some(true) => {
                return Err(c.err(
                    "use_sliding_window",
                    "Qwen's per-layer sliding window is not supported",
                ))
            }
            _ => None,
        };
        super::check_heads(c.path(), heads, kv, head_dim)?;
        Ok(Self {
            family,
            hidden_size,
            intermediate_size: c.usize("intermediate_size")?,
            num_hidden_layers: c.usize("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            vocab_size: c.usize("vocab_size")?,
            rms_norm_eps: c.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scale,
            max_position_embeddings: c.usize_opt("max_position_embeddings")?.unwrap_or(4096),
            sliding_window,
        })
    }

    /// The `{arch}.*` GGUF metadata llama.cpp reads for these hyper-parameters.
    pub fn gguf_metadata(&self) -> Vec<(String, Value)> {
        let a = self.family.gguf_name();
        let mut m = super::GgufCommon {
            arch: a,
            context: self.max_position_embeddings,
            hidden: self.hidden_size,
            layers: self.num_hidden_layers,
            ffn: self.intermediate_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scale: self.rope_scale,
        }
        .metadata();
        let k = |s: &str| format!("{a}.{s}");
        m.push((k("rope.dimension_count"), Value::U32(self.head_dim as u32)));
        m.push((k("vocab_size"), Value::U32(self.vocab_size as u32)));
        m
    }

    /// The `config.json` transformers needs to load these hyper-parameters.
    pub fn to_hf_json(&self, tied: bool, dtype: &str) -> serde_json::Value {
        let f = self.family;
        let mut v = serde_json::json!({
            "architectures": [f.hf_class()],
            "model_type": f.name(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": if self.rope_scale != 1.0 {
                serde_json::json!({"rope_type": "linear", "factor": self.rope_scale})
            } else {
                serde_json::Value::Null
            },
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "tie_word_embeddings": tied,
            "torch_dtype": dtype,
            "attention_bias": f == Family::Qwen2,
        });
        match f {
            Family::Mistral => v["sliding_window"] = serde_json::json!(self.sliding_window),
            Family::Qwen2 | Family::Qwen3 => v["use_sliding_window"] = false.into(),
            Family::Llama => {}
        }
        v
    }

    /// Reads the hyper-parameters from either kind of source.
    pub fn from_source(src: &Source) -> Result<Self> {
        match src {
            Source::Gguf(g) => Self::from_gguf(g),
            Source::Hf(h) => {
                let family =
                    Family::from_name(h.arch()).ok_or_else(|| Error::UnsupportedArchitecture {
                        path: h.dir().to_path_buf(),
                        arch: h.arch().to_string(),
                        supported: super::SUPPORTED,
                    })?;
                Self::from_hf(h.config(), family)
            }
        }
    }
}

struct Block {
    attn_norm: Tensor,
    attn_q: Weight,
    attn_k: Weight,
    attn_v: Weight,
    /// Qwen 2's q/k/v biases.
    qkv_bias: Option<[Tensor; 3]>,
    /// Qwen 3's per-head q/k norms.
    qk_norm: Option<[Tensor; 2]>,
    attn_output: Weight,
    ffn_norm: Tensor,
    ffn_gate: Weight,
    ffn_up: Weight,
    ffn_down: Weight,
}

/// A loaded model of the llama family.
pub struct Llama {
    cfg: Config,
    token_embd: Weight,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope: Rope,
}

impl Llama {
    /// Loads the weights. GGUF files of `llama` store q/k rows permuted for
    /// interleaved rope pairs; HF checkpoints and GGUF `qwen2`/`qwen3` keep
    /// transformers' order and use NeoX pairs ([`Rope::neox`]).
    pub fn load(src: &Source, device: &Device) -> Result<Self> {
        let cfg = Config::from_source(src)?;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let ff = cfg.intermediate_size;
        let token_embd = src.weight("token_embd.weight", (cfg.vocab_size, h), device)?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qkv_bias = if src.has_tensor(&n("attn_q.bias")) {
                Some([
                    src.vector(&n("attn_q.bias"), q_out, device)?,
                    src.vector(&n("attn_k.bias"), kv_out, device)?,
                    src.vector(&n("attn_v.bias"), kv_out, device)?,
                ])
            } else {
                None
            };
            let qk_norm = if src.has_tensor(&n("attn_q_norm.weight")) {
                Some([
                    src.vector(&n("attn_q_norm.weight"), hd, device)?,
                    src.vector(&n("attn_k_norm.weight"), hd, device)?,
                ])
            } else {
                None
            };
            blocks.push(Block {
                attn_norm: src.vector(&n("attn_norm.weight"), h, device)?,
                attn_q: src.weight(&n("attn_q.weight"), (q_out, h), device)?,
                attn_k: src.weight(&n("attn_k.weight"), (kv_out, h), device)?,
                attn_v: src.weight(&n("attn_v.weight"), (kv_out, h), device)?,
                qkv_bias,
                qk_norm,
                attn_output: src.weight(&n("attn_output.weight"), (h, q_out), device)?,
                ffn_norm: src.vector(&n("ffn_norm.weight"), h, device)?,
                ffn_gate: src.weight(&n("ffn_gate.weight"), (ff, h), device)?,
                ffn_up: src.weight(&n("ffn_up.weight"), (ff, h), device)?,
                ffn_down: src.weight(&n("ffn_down.weight"), (h, ff), device)?,
            });
        }
        let output = if src.has_tensor("output.weight") {
            src.weight("output.weight", (cfg.vocab_size, h), device)?
        } else {
            token_embd.clone()
        };
        let neox = src.is_hf() || cfg.family.gguf_name() != "llama";
        Ok(Self {
            rope: Rope {
                base: cfg.rope_theta,
                linear_scale: cfg.rope_scale,
                dim: hd,
                neox,
            },
            token_embd,
            blocks,
            output_norm: src.vector("output_norm.weight", h, device)?,
            output,
            cfg,
        })
    }

    /// The validated hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Runs `ids` at the cache's next positions and returns the logits of positions
    /// `logits_from ..` of `ids`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache, logits_from: usize) -> Result<Tensor> {
        let dev = self.output_norm.device();
        let t = ids.len();
        let start = cache.len();
        let c = &self.cfg;
        let ids_t = Tensor::new(ids, dev)?;
        let mut x = self.token_embd.embedding(&ids_t)?.unsqueeze(0)?; // [1, t, h]
        let (cos, sin) = self.rope.tables(start, t, dev)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &b.attn_norm, c.rms_norm_eps)?;
            let [mut q, mut k, mut v] = Weight::forward_n([&b.attn_q, &b.attn_k, &b.attn_v], &h)?;
            if let Some([bq, bk, bv]) = &b.qkv_bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            let mut q = heads(&q, c.num_attention_heads, c.head_dim)?;
            let mut k = heads(&k, c.num_key_value_heads, c.head_dim)?;
            let v = heads(&v, c.num_key_value_heads, c.head_dim)?;
            if let Some([nq, nk]) = &b.qk_norm {
                q = rms_norm(&q, nq, c.rms_norm_eps)?;
                k = rms_norm(&k, nk, c.rms_norm_eps)?;
            }
            let q = self.rope.apply(&q, &cos, &sin)?;
            let k = self.rope.apply(&k, &cos, &sin)?;
            let (k, v, base) = cache.append(i, &k, &v)?;
            let a = attend(&q, &k, &v, (start, base), scale, c.sliding_window)?;
            x = (x + b.attn_output.forward(&a)?)?;
            let h = rms_norm(&x, &b.ffn_norm, c.rms_norm_eps)?;
            let [gate, up] = Weight::forward_n([&b.ffn_gate, &b.ffn_up], &h)?;
            let m = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + b.ffn_down.forward(&m)?)?;
        }
        cache.advance(t);
        let x = x.narrow(1, logits_from, t - logits_from)?;
        let x = rms_norm(&x, &self.output_norm, c.rms_norm_eps)?;
        Ok(self.output.forward(&x)?.squeeze(0)?)
    }

    /// Bytes held by the weights, and bytes read from memory to decode one token.
    pub fn weight_bytes(&self) -> super::WeightBytes {
        let mut b = super::WeightBytes::default();
        b.add_vector(&self.output_norm);
        for blk in &self.blocks {
            for w in [&blk.attn_q, &blk.attn_k, &blk.attn_v, &blk.attn_output] {
                b.add_matrix(w);
            }
            for w in [&blk.ffn_gate, &blk.ffn_up, &blk.ffn_down] {
                b.add_matrix(w);
            }
            b.add_vector(&blk.attn_norm);
            b.add_vector(&blk.ffn_norm);
            for v in blk
                .qkv_bias
                .iter()
                .flatten()
                .chain(blk.qk_norm.iter().flatten())
            {
                b.add_vector(v);
            }
        }
        b.add_embedding_and_output(&self.token_embd, &self.output);
        b
    }
}

/// `[1, t, n * d]` → `[1, n, t, d]`.
pub(crate) fn heads(x: &Tensor, n: usize, d: usize) -> candle_core::Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    x.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()
}

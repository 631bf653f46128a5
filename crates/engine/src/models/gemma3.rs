//! Gemma 3 (text), exactly as HF transformers computes it: embedding × √hidden,
//! four RMSNorms per block with (1 + w) (GGUF stores 1 + w already), per-head q/k
//! norms, `query_pre_attn_scalar`, GELU-tanh gated MLP, sliding-window layers with
//! their own rope base, global layers with the linear rope scaling factor (8 on 4B and
//! up), and the output tied to the embedding.

use crate::attention::{attend, rms_norm, KvCache, Rope};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::hf::config::HfConfig;
use crate::models::llama::heads;
use crate::source::Source;
use crate::weight::Weight;
use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Tensor};

/// Hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Per-head dimension (256 on every released size).
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rope base of global layers.
    pub rope_theta: f64,
    /// Rope base of sliding-window layers.
    pub rope_local_base_freq: f64,
    /// Linear rope scaling of global layers only (1 = none, 8 on 4B and up).
    pub rope_scaling_factor: f64,
    /// Attention scores are multiplied by `query_pre_attn_scalar ^ -0.5`.
    pub query_pre_attn_scalar: f64,
    /// Window of sliding layers, the token itself included.
    pub sliding_window: usize,
    /// Per layer: true for sliding-window attention, false for global.
    pub sliding_layers: Vec<bool>,
    /// Trained context length.
    pub max_position_embeddings: usize,
}

impl Config {
    /// Reads the hyper-parameters from GGUF metadata (`gemma3.*`). Values GGUF does not
    /// store are llama.cpp's: local rope base 10 000, every 6th layer global, and the
    /// attention scale from head_dim (hidden / heads on the 62-layer 27B).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let a = "gemma3";
        let k = |s: &str| format!("{a}.{s}");
        let hidden_size = g.u64(&k("embedding_length"))? as usize;
        let heads = g.u64(&k("attention.head_count"))? as usize;
        let kv = g
            .u64_opt(&k("attention.head_count_kv"))?
            .map(|x| x as usize)
            .unwrap_or(heads);
        let head_dim = g.u64_opt(&k("attention.key_length"))?.unwrap_or(256) as usize;
        let n_layers = g.u64(&k("block_count"))? as usize;
        let rope_scaling_factor = match g.string_opt(&k("rope.scaling.type"))?.as_deref() {
            Some("linear") | None => g.f64_opt(&k("rope.scaling.factor"))?.unwrap_or(1.0),
            Some(_) => 1.0,
        };
        // Either a period (every n-th layer global) or, as newer converters write it,
        // one flag per layer (true = sliding).
        let key = k("attention.sliding_window_pattern");
        let sliding_layers: Vec<bool> = match g.get(&key) {
            Some(Value::Array(flags)) => {
                let flags: Vec<bool> = flags
                    .iter()
                    .map(|v| matches!(v, Value::Bool(true)))
                    .collect();
                if flags.len() != n_layers {
                    return Err(Error::Metadata {
                        path: g.path().to_path_buf(),
                        key,
                        message: format!("{} flags for {n_layers} layers", flags.len()),
                    });
                }
                flags
            }
            _ => {
                let period = g.u64_opt(&key)?.unwrap_or(6) as usize;
                (0..n_layers)
                    .map(|i| period == 0 || (i + 1) % period != 0)
                    .collect()
            }
        };
        let query_pre_attn_scalar = if n_layers == 62 {
            (hidden_size / heads.max(1)) as f64
        } else {
            head_dim as f64
        };
        // The vocabulary, or (a file without one) the embedding's rows.
        let vocab_size = match g.get("tokenizer.ggml.tokens") {
            Some(_) => g.strings("tokenizer.ggml.tokens")?.len(),
            None => g.tensor_location("token_embd.weight")?.2[0],
        };
        super::check_heads(g.path(), heads, kv, head_dim)?;
        Ok(Self {
            hidden_size,
            intermediate_size: g.u64(&k("feed_forward_length"))? as usize,
            num_hidden_layers: n_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            vocab_size,
            rms_norm_eps: g
                .f64_opt(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6),
            rope_theta: g.f64_opt(&k("rope.freq_base"))?.unwrap_or(1_000_000.0),
            rope_local_base_freq: 10_000.0,
            rope_scaling_factor,
            query_pre_attn_scalar,
            sliding_window: g.u64_opt(&k("attention.sliding_window"))?.unwrap_or(4096) as usize,
            sliding_layers,
            max_position_embeddings: g.u64_opt(&k("context_length"))?.unwrap_or(32768) as usize,
        })
    }

    /// Reads the hyper-parameters from `config.json` (the top level, or `text_config`
    /// of a multimodal checkpoint). Keys that are absent take Gemma3TextConfig's
    /// defaults, as published multimodal configs list only what differs.
    pub fn from_hf(c: &HfConfig) -> Result<Self> {
        let n_layers = c.usize_opt("num_hidden_layers")?.unwrap_or(26);
        let heads = c.usize_opt("num_attention_heads")?.unwrap_or(8);
        let kv = c.usize_opt("num_key_value_heads")?.unwrap_or(4);
        let head_dim = c.usize_opt("head_dim")?.unwrap_or(256);
        let sliding_layers: Vec<bool> = match c.text("layer_types") {
            Some(serde_json::Value::Array(types)) => {
                let flags: Option<Vec<bool>> = types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Some(true),
                        Some("full_attention") => Some(false),
                        _ => None,
                    })
                    .collect();
                match flags {
                    Some(f) if f.len() == n_layers => f,
                    _ => {
                        return Err(c.err(
                            "layer_types",
                            format!("expected {n_layers} of sliding_attention / full_attention"),
                        ))
                    }
                }
            }
            _ => {
                let period = c.usize_opt("sliding_window_pattern")?.unwrap_or(6);
                (0..n_layers)
                    .map(|i| period == 0 || (i + 1) % period != 0)
                    .collect()
            }
        };
        let (rope_theta, rope_scaling_factor) = c.rope(Some("full_attention"), 1_000_000.0)?;
        let per_type = c
            .text("rope_parameters")
            .is_some_and(|p| p.get("sliding_attention").is_some());
        let rope_local_base_freq = if per_type {
            let (theta, factor) = c.rope(Some("sliding_attention"), 10_000.0)?;
            if factor != 1.0 {
                return Err(c.err(
                    "rope_parameters.sliding_attention",
                    "scaled rope on sliding layers is not supported",
                ));
            }
            theta
        } else {
            c.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0)
        };
        super::check_heads(c.path(), heads, kv, head_dim)?;
        Ok(Self {
            hidden_size: c.usize_opt("hidden_size")?.unwrap_or(2304),
            intermediate_size: c.usize_opt("intermediate_size")?.unwrap_or(9216),
            num_hidden_layers: n_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            vocab_size: c.usize_opt("vocab_size")?.unwrap_or(262_208),
            rms_norm_eps: c.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_local_base_freq,
            rope_scaling_factor,
            query_pre_attn_scalar: c.f64_opt("query_pre_attn_scalar")?.unwrap_or(256.0),
            sliding_window: c.usize_opt("sliding_window")?.unwrap_or(4096),
            sliding_layers,
            max_position_embeddings: c.usize_opt("max_position_embeddings")?.unwrap_or(131_072),
        })
    }

    /// The `gemma3.*` GGUF metadata llama.cpp reads for these hyper-parameters. The
    /// sliding pattern is written per layer only when it is not the default period 6.
    pub fn gguf_metadata(&self) -> Vec<(String, Value)> {
        let mut m = super::GgufCommon {
            arch: "gemma3",
            context: self.max_position_embeddings,
            hidden: self.hidden_size,
            layers: self.num_hidden_layers,
            ffn: self.intermediate_size,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scale: self.rope_scaling_factor,
        }
        .metadata();
        let k = |s: &str| format!("gemma3.{s}");
        m.push((
            k("attention.sliding_window"),
            Value::U32(self.sliding_window as u32),
        ));
        let period6 = self
            .sliding_layers
            .iter()
            .enumerate()
            .all(|(i, &s)| s == ((i + 1) % 6 != 0));
        if !period6 {
            m.push((
                k("attention.sliding_window_pattern"),
                Value::Array(
                    self.sliding_layers
                        .iter()
                        .map(|&s| Value::Bool(s))
                        .collect(),
                ),
            ));
        }
        m
    }

    /// The `config.json` transformers needs to load these hyper-parameters
    /// (`Gemma3ForCausalLM`, explicit `layer_types`).
    pub fn to_hf_json(&self, tied: bool, dtype: &str) -> serde_json::Value {
        let layer_types: Vec<&str> = self
            .sliding_layers
            .iter()
            .map(|&s| {
                if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        serde_json::json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_local_base_freq": self.rope_local_base_freq,
            "rope_scaling": if self.rope_scaling_factor != 1.0 {
                serde_json::json!({"rope_type": "linear", "factor": self.rope_scaling_factor})
            } else {
                serde_json::Value::Null
            },
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "sliding_window": self.sliding_window,
            "layer_types": layer_types,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_activation": "gelu_pytorch_tanh",
            "final_logit_softcapping": null,
            "attn_logit_softcapping": null,
            "tie_word_embeddings": tied,
            "torch_dtype": dtype,
        })
    }

    /// Reads the hyper-parameters from either kind of source.
    pub fn from_source(src: &Source) -> Result<Self> {
        match src {
            Source::Gguf(g) => Self::from_gguf(g),
            Source::Hf(h) => Self::from_hf(h.config()),
        }
    }
}

struct Block {
    attn_norm: Tensor,
    attn_q: Weight,
    attn_k: Weight,
    attn_v: Weight,
    attn_q_norm: Tensor,
    attn_k_norm: Tensor,
    attn_output: Weight,
    post_attention_norm: Tensor,
    ffn_norm: Tensor,
    ffn_gate: Weight,
    ffn_up: Weight,
    ffn_down: Weight,
    post_ffw_norm: Tensor,
}

/// A loaded Gemma 3 text model.
pub struct Gemma3 {
    cfg: Config,
    token_embd: Weight,
    embed_scale: f64,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope_local: Rope,
    rope_global: Rope,
}

impl Gemma3 {
    /// Loads the weights. GGUF norm weights already hold HF's `1 + w`; HF ones hold
    /// `w`, so 1 is added once here and the forward pass uses plain multipliers.
    pub fn load(src: &Source, device: &Device) -> Result<Self> {
        let cfg = Config::from_source(src)?;
        let offset = if src.is_hf() { 1.0 } else { 0.0 };
        let norm = |name: &str, len: usize| -> Result<Tensor> {
            Ok((src.vector(name, len, device)? + offset)?)
        };
        let h = cfg.hidden_size;
        let hd = cfg.head_dim;
        let q_out = cfg.num_attention_heads * hd;
        let kv_out = cfg.num_key_value_heads * hd;
        let ff = cfg.intermediate_size;
        let token_embd = src.weight("token_embd.weight", (cfg.vocab_size, h), device)?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: norm(&n("attn_norm"), h)?,
                attn_q: src.weight(&n("attn_q"), (q_out, h), device)?,
                attn_k: src.weight(&n("attn_k"), (kv_out, h), device)?,
                attn_v: src.weight(&n("attn_v"), (kv_out, h), device)?,
                attn_q_norm: norm(&n("attn_q_norm"), hd)?,
                attn_k_norm: norm(&n("attn_k_norm"), hd)?,
                attn_output: src.weight(&n("attn_output"), (h, q_out), device)?,
                post_attention_norm: norm(&n("post_attention_norm"), h)?,
                ffn_norm: norm(&n("ffn_norm"), h)?,
                ffn_gate: src.weight(&n("ffn_gate"), (ff, h), device)?,
                ffn_up: src.weight(&n("ffn_up"), (ff, h), device)?,
                ffn_down: src.weight(&n("ffn_down"), (h, ff), device)?,
                post_ffw_norm: norm(&n("post_ffw_norm"), h)?,
            });
        }
        let output = if src.has_tensor("output.weight") {
            src.weight("output.weight", (cfg.vocab_size, h), device)?
        } else {
            token_embd.clone()
        };
        Ok(Self {
            // transformers computes √hidden in float32; rounding it differently is measurable.
            embed_scale: (h as f32).sqrt() as f64,
            rope_local: Rope {
                base: cfg.rope_local_base_freq,
                linear_scale: 1.0,
                dim: hd,
                neox: true,
            },
            rope_global: Rope {
                base: cfg.rope_theta,
                linear_scale: cfg.rope_scaling_factor,
                dim: hd,
                neox: true,
            },
            token_embd,
            blocks,
            output_norm: norm("output_norm.weight", h)?,
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
        let c = &self.cfg;
        let t = ids.len();
        let start = cache.len();
        let eps = c.rms_norm_eps;
        let ids_t = Tensor::new(ids, dev)?;
        let mut x = (self.token_embd.embedding(&ids_t)?.unsqueeze(0)? * self.embed_scale)?;
        let local = self.rope_local.tables(start, t, dev)?;
        let global = self.rope_global.tables(start, t, dev)?;
        let scale = c.query_pre_attn_scalar.powf(-0.5);
        for (i, b) in self.blocks.iter().enumerate() {
            let sliding = c.sliding_layers[i];
            let (rope, (cos, sin)) = if sliding {
                (&self.rope_local, &local)
            } else {
                (&self.rope_global, &global)
            };
            let h = rms_norm(&x, &b.attn_norm, eps)?;
            let [q, k, v] = Weight::forward_n([&b.attn_q, &b.attn_k, &b.attn_v], &h)?;
            let q = heads(&q, c.num_attention_heads, c.head_dim)?;
            let k = heads(&k, c.num_key_value_heads, c.head_dim)?;
            let v = heads(&v, c.num_key_value_heads, c.head_dim)?;
            let q = rope.apply(&rms_norm(&q, &b.attn_q_norm, eps)?, cos, sin)?;
            let k = rope.apply(&rms_norm(&k, &b.attn_k_norm, eps)?, cos, sin)?;
            let (k, v, base) = cache.append(i, &k, &v)?;
            let window = sliding.then_some(c.sliding_window);
            let a = attend(&q, &k, &v, (start, base), scale, window)?;
            let a = rms_norm(&b.attn_output.forward(&a)?, &b.post_attention_norm, eps)?;
            x = (x + a)?;
            let h = rms_norm(&x, &b.ffn_norm, eps)?;
            let [gate, up] = Weight::forward_n([&b.ffn_gate, &b.ffn_up], &h)?;
            let m = (gate.gelu()? * up)?;
            let m = rms_norm(&b.ffn_down.forward(&m)?, &b.post_ffw_norm, eps)?;
            x = (x + m)?;
        }
        cache.advance(t);
        let x = x.narrow(1, logits_from, t - logits_from)?;
        let x = rms_norm(&x, &self.output_norm, eps)?;
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
            for v in [
                &blk.attn_norm,
                &blk.attn_q_norm,
                &blk.attn_k_norm,
                &blk.post_attention_norm,
                &blk.ffn_norm,
                &blk.post_ffw_norm,
            ] {
                b.add_vector(v);
            }
        }
        b.add_embedding_and_output(&self.token_embd, &self.output);
        b
    }
}

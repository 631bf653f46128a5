//! Gemma 3 (text), exactly as HF transformers computes it: embedding × √hidden,
//! four RMSNorms per block with (1 + w) (GGUF stores 1 + w already), per-head q/k
//! norms, `query_pre_attn_scalar`, GELU-tanh gated MLP, sliding-window layers with
//! their own rope base, global layers with the linear rope scaling factor (8 on 4B and
//! up), and the output tied to the embedding.

use crate::attention::{attend, rms_norm, KvCache, Rope};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::models::llama::heads;
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
        let vocab_size = g.strings("tokenizer.ggml.tokens")?.len();
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
    /// Loads the weights from a GGUF file (llama.cpp tensor names). GGUF norm weights
    /// already hold HF's `1 + w`, so they are used as plain multipliers.
    pub fn from_gguf(g: &GgufFile, device: &Device) -> Result<Self> {
        let cfg = Config::from_gguf(g)?;
        let h = cfg.hidden_size;
        let hd = cfg.head_dim;
        let q_out = cfg.num_attention_heads * hd;
        let kv_out = cfg.num_key_value_heads * hd;
        let ff = cfg.intermediate_size;
        let token_embd = g.weight("token_embd.weight", (cfg.vocab_size, h), device)?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: g.vector(&n("attn_norm"), h, device)?,
                attn_q: g.weight(&n("attn_q"), (q_out, h), device)?,
                attn_k: g.weight(&n("attn_k"), (kv_out, h), device)?,
                attn_v: g.weight(&n("attn_v"), (kv_out, h), device)?,
                attn_q_norm: g.vector(&n("attn_q_norm"), hd, device)?,
                attn_k_norm: g.vector(&n("attn_k_norm"), hd, device)?,
                attn_output: g.weight(&n("attn_output"), (h, q_out), device)?,
                post_attention_norm: g.vector(&n("post_attention_norm"), h, device)?,
                ffn_norm: g.vector(&n("ffn_norm"), h, device)?,
                ffn_gate: g.weight(&n("ffn_gate"), (ff, h), device)?,
                ffn_up: g.weight(&n("ffn_up"), (ff, h), device)?,
                ffn_down: g.weight(&n("ffn_down"), (h, ff), device)?,
                post_ffw_norm: g.vector(&n("post_ffw_norm"), h, device)?,
            });
        }
        let output = if g.has_tensor("output.weight") {
            g.weight("output.weight", (cfg.vocab_size, h), device)?
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
            output_norm: g.vector("output_norm.weight", h, device)?,
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

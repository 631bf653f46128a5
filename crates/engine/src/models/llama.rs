//! The `llama` architecture (Llama 2/3, SmolLM2, and friends): pre-norm blocks with
//! RMSNorm, grouped-query attention with RoPE, and a SiLU-gated MLP.

use crate::attention::{attend, rms_norm, KvCache, Rope};
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::weight::Weight;
use candle_core::{Device, Tensor};

/// Hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
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
}

impl Config {
    /// Reads the hyper-parameters from GGUF metadata (`llama.*`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let a = "llama";
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
        };
        super::check_heads(g.path(), heads, kv, head_dim)?;
        Ok(cfg)
    }
}

struct Block {
    attn_norm: Tensor,
    attn_q: Weight,
    attn_k: Weight,
    attn_v: Weight,
    attn_output: Weight,
    ffn_norm: Tensor,
    ffn_gate: Weight,
    ffn_up: Weight,
    ffn_down: Weight,
}

/// A loaded llama model.
pub struct Llama {
    cfg: Config,
    token_embd: Weight,
    blocks: Vec<Block>,
    output_norm: Tensor,
    output: Weight,
    rope: Rope,
}

impl Llama {
    /// Loads the weights from a GGUF file (llama.cpp tensor names; q/k rows are stored
    /// permuted for interleaved rope, which [`Rope`] with `neox: false` matches).
    pub fn from_gguf(g: &GgufFile, device: &Device) -> Result<Self> {
        let cfg = Config::from_gguf(g)?;
        let (h, q_out, kv_out) = (
            cfg.hidden_size,
            cfg.num_attention_heads * cfg.head_dim,
            cfg.num_key_value_heads * cfg.head_dim,
        );
        let ff = cfg.intermediate_size;
        let token_embd = g.weight("token_embd.weight", (cfg.vocab_size, h), device)?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: g.vector(&format!("{p}.attn_norm.weight"), h, device)?,
                attn_q: g.weight(&format!("{p}.attn_q.weight"), (q_out, h), device)?,
                attn_k: g.weight(&format!("{p}.attn_k.weight"), (kv_out, h), device)?,
                attn_v: g.weight(&format!("{p}.attn_v.weight"), (kv_out, h), device)?,
                attn_output: g.weight(&format!("{p}.attn_output.weight"), (h, q_out), device)?,
                ffn_norm: g.vector(&format!("{p}.ffn_norm.weight"), h, device)?,
                ffn_gate: g.weight(&format!("{p}.ffn_gate.weight"), (ff, h), device)?,
                ffn_up: g.weight(&format!("{p}.ffn_up.weight"), (ff, h), device)?,
                ffn_down: g.weight(&format!("{p}.ffn_down.weight"), (h, ff), device)?,
            });
        }
        let output = if g.has_tensor("output.weight") {
            g.weight("output.weight", (cfg.vocab_size, h), device)?
        } else {
            token_embd.clone()
        };
        Ok(Self {
            rope: Rope {
                base: cfg.rope_theta,
                linear_scale: cfg.rope_scale,
                dim: cfg.head_dim,
                neox: false,
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
        let t = ids.len();
        let start = cache.len();
        let c = &self.cfg;
        let ids_t = Tensor::new(ids, dev)?;
        let mut x = self.token_embd.embedding(&ids_t)?.unsqueeze(0)?; // [1, t, h]
        let (cos, sin) = self.rope.tables(start, t, dev)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &b.attn_norm, c.rms_norm_eps)?;
            let [q, k, v] = Weight::forward_n([&b.attn_q, &b.attn_k, &b.attn_v], &h)?;
            let q = heads(&q, c.num_attention_heads, c.head_dim)?;
            let k = heads(&k, c.num_key_value_heads, c.head_dim)?;
            let v = heads(&v, c.num_key_value_heads, c.head_dim)?;
            let q = self.rope.apply(&q, &cos, &sin)?;
            let k = self.rope.apply(&k, &cos, &sin)?;
            let (k, v, base) = cache.append(i, &k, &v)?;
            let a = attend(&q, &k, &v, (start, base), scale, None)?;
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

//! The llama family: pre-norm blocks with RMSNorm, grouped-query attention with
//! RoPE and a SiLU-gated MLP. Its members differ in small, optional parts, each read
//! from the checkpoint rather than assumed: Qwen 2 adds q/k/v biases, Qwen 3 adds
//! per-head q/k RMSNorms (and head_dim · heads ≠ hidden), Mistral v0.1 a sliding
//! window on every layer.

use super::{heads, Architecture, Config, Forward, Loader, Shape, Steps, Stored, WeightBytes};
use crate::attention::{rms_norm, Rope, RopeScaling};
use crate::error::Result;
use crate::formats::Weight;
use crate::gguf::GgufFile;
use crate::hf::config::HfConfig;
use candle_core::quantized::gguf_file::Value;
use candle_core::Tensor;

/// Llama 2/3, SmolLM2.
pub static LLAMA: Architecture = Architecture {
    name: "llama",
    gguf_name: "llama",
    hf_names: &["LlamaForCausalLM", "llama"],
    shapes: &[
        Shape {
            name: "135m",
            model: "HuggingFaceTB/SmolLM2-135M",
            config: || smollm2(576, 30, 9, 3, 1536, 100_000.0),
        },
        Shape {
            name: "360m",
            model: "HuggingFaceTB/SmolLM2-360M",
            config: || smollm2(960, 32, 15, 5, 2560, 100_000.0),
        },
        Shape {
            name: "1.7b",
            model: "HuggingFaceTB/SmolLM2-1.7B",
            config: || smollm2(2048, 24, 32, 32, 8192, 130_000.0),
        },
        Shape {
            name: "3.2-1b",
            model: "meta-llama/Llama-3.2-1B-Instruct",
            config: || llama3(2048, 16, 32, 8192, 32.0, true),
        },
        Shape {
            name: "3.2-3b",
            model: "meta-llama/Llama-3.2-3B-Instruct",
            config: || llama3(3072, 28, 24, 8192, 32.0, true),
        },
        Shape {
            name: "3.1-8b",
            model: "meta-llama/Llama-3.1-8B-Instruct",
            config: || llama3(4096, 32, 32, 14_336, 8.0, false),
        },
    ],
    ..FAMILY
};

/// Mistral (v0.1's sliding window on every layer).
pub static MISTRAL: Architecture = Architecture {
    name: "mistral",
    gguf_name: "llama",
    hf_names: &["MistralForCausalLM", "mistral"],
    ..FAMILY
};

/// Qwen 2 / 2.5: q/k/v biases.
pub static QWEN2: Architecture = Architecture {
    name: "qwen2",
    gguf_name: "qwen2",
    hf_names: &["Qwen2ForCausalLM", "qwen2"],
    ..FAMILY
};

/// Qwen 3 (dense): per-head q/k norms, head_dim · heads ≠ hidden.
pub static QWEN3: Architecture = Architecture {
    name: "qwen3",
    gguf_name: "qwen3",
    hf_names: &["Qwen3ForCausalLM", "qwen3"],
    shapes: &[
        Shape {
            name: "0.6b",
            model: "Qwen/Qwen3-0.6B",
            config: || qwen3(1024, 28, 16, 8, 3072, true),
        },
        Shape {
            name: "1.7b",
            model: "Qwen/Qwen3-1.7B",
            config: || qwen3(2048, 28, 16, 8, 6144, true),
        },
        Shape {
            name: "4b",
            model: "Qwen/Qwen3-4B",
            config: || qwen3(2560, 36, 32, 8, 9728, true),
        },
        Shape {
            name: "8b",
            model: "Qwen/Qwen3-8B",
            config: || qwen3(4096, 36, 32, 8, 12_288, false),
        },
        Shape {
            name: "14b",
            model: "Qwen/Qwen3-14B",
            config: || qwen3(5120, 40, 40, 8, 17_408, false),
        },
        Shape {
            name: "32b",
            model: "Qwen/Qwen3-32B",
            config: || qwen3(5120, 64, 64, 8, 25_600, false),
        },
    ],
    ..FAMILY
};

/// What the members share; each names itself and its sources.
const FAMILY: Architecture = Architecture {
    name: "",
    gguf_name: "",
    hf_names: &[],
    // One norm before the MLP, under llama's name for it.
    block_tensors: &[("ffn_norm", "post_attention_layernorm")],
    from_hf,
    from_gguf,
    to_gguf,
    to_hf,
    stored,
    tensors: |c| super::common_tensors(c, &[]),
    shapes: &[],
    load: |c, ld| Ok(Box::new(Llama::load(c, ld)?)),
    folds_system_prompt: false,
};

/// SmolLM2's shapes (the llama shapes we can check against a real file).
fn smollm2(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    ffn: usize,
    theta: f64,
) -> Config {
    Config {
        arch: &LLAMA,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: hidden / heads,
        vocab_size: 49_152,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 8192,
        rope_theta: theta,
        rope_scaling: RopeScaling::None,
        rope_local_theta: None,
        query_pre_attn_scalar: (hidden / heads) as f64,
        layer_windows: vec![None; layers],
        tied_embeddings: true,
        attention_bias: false,
        qk_norm: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// A Llama 3.1 / 3.2 shape: 8 kv heads, vocabulary 128 256, θ 500 000 and Llama 3
/// rope scaling from an original context of 8192 to 131 072.
fn llama3(
    hidden: usize,
    layers: usize,
    heads: usize,
    ffn: usize,
    factor: f64,
    tied: bool,
) -> Config {
    Config {
        arch: &LLAMA,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: 8,
        head_dim: hidden / heads,
        vocab_size: 128_256,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 131_072,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context: 8192,
        },
        rope_local_theta: None,
        query_pre_attn_scalar: (hidden / heads) as f64,
        layer_windows: vec![None; layers],
        tied_embeddings: tied,
        attention_bias: false,
        qk_norm: false,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001, 128_008, 128_009],
    }
}

/// A Qwen 3 shape: head_dim 128, vocabulary 151 936.
fn qwen3(hidden: usize, layers: usize, heads: usize, kv: usize, ffn: usize, tied: bool) -> Config {
    Config {
        arch: &QWEN3,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: 128,
        vocab_size: 151_936,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 40_960,
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::None,
        rope_local_theta: None,
        query_pre_attn_scalar: 128.0,
        layer_windows: vec![None; layers],
        tied_embeddings: tied,
        attention_bias: false,
        qk_norm: true,
        bos_token_id: Some(151_643),
        eos_token_ids: vec![151_645],
    }
}

/// Reads the hyper-parameters from GGUF metadata (`llama.*`, `qwen2.*`, `qwen3.*`).
fn from_gguf(arch: &'static Architecture, g: &GgufFile) -> Result<Config> {
    let a = arch.gguf_name;
    let (hidden, heads, kv, head_dim, layers, ffn) = super::gguf_shape(g, a)?;
    let head_dim = head_dim.unwrap_or(hidden / heads.max(1));
    let (bos_token_id, eos_token_ids) = super::gguf_special_ids(g)?;
    Ok(Config {
        arch,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim,
        vocab_size: super::gguf_vocab(g, a)?,
        rms_norm_eps: g.f64(&format!("{a}.attention.layer_norm_rms_epsilon"))?,
        max_position_embeddings: g.u64_opt(&format!("{a}.context_length"))?.unwrap_or(4096)
            as usize,
        rope_theta: g
            .f64_opt(&format!("{a}.rope.freq_base"))?
            .unwrap_or(10_000.0),
        rope_scaling: RopeScaling::from_gguf(g, a)?,
        rope_local_theta: None,
        query_pre_attn_scalar: head_dim as f64,
        layer_windows: vec![None; layers],
        tied_embeddings: !g.has_tensor("output.weight"),
        attention_bias: g.has_tensor("blk.0.attn_q.bias"),
        qk_norm: g.has_tensor("blk.0.attn_q_norm.weight"),
        bos_token_id,
        eos_token_ids,
    })
}

/// Reads the hyper-parameters from `config.json`.
fn from_hf(arch: &'static Architecture, c: &HfConfig) -> Result<Config> {
    let hidden_size = c.usize("hidden_size")?;
    let heads = c.usize("num_attention_heads")?;
    let kv = c.usize_opt("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = c
        .usize_opt("head_dim")?
        .unwrap_or(hidden_size / heads.max(1));
    let (rope_theta, rope_scaling) = c.rope(None, 10_000.0)?;
    let layers = c.usize("num_hidden_layers")?;
    let window = if std::ptr::eq(arch, &MISTRAL) {
        c.usize_opt("sliding_window")?
    } else if c.bool_opt("use_sliding_window")? == Some(true) {
        return Err(c.err(
            "use_sliding_window",
            "Qwen's per-layer sliding window is not supported",
        ));
    } else {
        None
    };
    let (bos_token_id, eos_token_ids) = super::hf_special_ids(c)?;
    Ok(Config {
        arch,
        hidden_size,
        intermediate_size: c.usize("intermediate_size")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim,
        vocab_size: c.usize("vocab_size")?,
        rms_norm_eps: c.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
        max_position_embeddings: c.usize_opt("max_position_embeddings")?.unwrap_or(4096),
        rope_theta,
        rope_scaling,
        rope_local_theta: None,
        query_pre_attn_scalar: head_dim as f64,
        layer_windows: vec![window; layers],
        // transformers' LlamaConfig, MistralConfig and Qwen configs default to untied.
        tied_embeddings: c.bool_opt("tie_word_embeddings")?.unwrap_or(false),
        // Qwen 2 always has q/k/v biases; Llama's config may ask for them.
        attention_bias: std::ptr::eq(arch, &QWEN2)
            || c.bool_opt("attention_bias")?.unwrap_or(false),
        qk_norm: std::ptr::eq(arch, &QWEN3),
        bos_token_id,
        eos_token_ids,
    })
}

/// The `{arch}.*` GGUF metadata llama.cpp reads for these hyper-parameters.
fn to_gguf(c: &Config) -> Vec<(String, Value)> {
    let mut m = super::gguf_common(c);
    let a = c.arch.gguf_name;
    m.push((
        format!("{a}.rope.dimension_count"),
        Value::U32(c.head_dim as u32),
    ));
    m.push((format!("{a}.vocab_size"), Value::U32(c.vocab_size as u32)));
    m
}

/// The `config.json` transformers needs to load these hyper-parameters.
fn to_hf(c: &Config, _dtype: &str) -> serde_json::Value {
    let mut v = serde_json::json!({
        "architectures": [c.arch.hf_names[0]],
        "model_type": c.arch.name,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling.to_hf(),
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": "silu",
        "attention_bias": c.attention_bias,
    });
    if std::ptr::eq(c.arch, &MISTRAL) {
        v["sliding_window"] = serde_json::json!(c.layer_windows.first().copied().flatten());
    } else if !std::ptr::eq(c.arch, &LLAMA) {
        v["use_sliding_window"] = false.into();
    }
    v
}

/// llama.cpp's converter permutes the q/k rows of `llama` files (Llama, Mistral) for
/// interleaved rope pairs; Qwen files keep transformers' order.
fn stored(c: &Config, gguf_name: &str) -> Stored {
    if c.arch.gguf_name != LLAMA.gguf_name {
        return Stored::Same;
    }
    if gguf_name.ends_with("attn_q.weight") {
        Stored::PermutedHeads(c.num_attention_heads)
    } else if gguf_name.ends_with("attn_k.weight") {
        Stored::PermutedHeads(c.num_key_value_heads)
    } else {
        Stored::Same
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
    fn load(cfg: &Config, ld: &Loader) -> Result<Self> {
        let cfg = cfg.clone();
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let ff = cfg.intermediate_size;
        let token_embd = ld.weight("token_embd.weight", (cfg.vocab_size, h))?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let qkv_bias = if ld.has(&n("attn_q.bias")) {
                Some([
                    ld.vector(&n("attn_q.bias"), q_out)?,
                    ld.vector(&n("attn_k.bias"), kv_out)?,
                    ld.vector(&n("attn_v.bias"), kv_out)?,
                ])
            } else {
                None
            };
            let qk_norm = if ld.has(&n("attn_q_norm.weight")) {
                Some([
                    ld.vector(&n("attn_q_norm.weight"), hd)?,
                    ld.vector(&n("attn_k_norm.weight"), hd)?,
                ])
            } else {
                None
            };
            blocks.push(Block {
                attn_norm: ld.vector(&n("attn_norm.weight"), h)?,
                attn_q: ld.weight(&n("attn_q.weight"), (q_out, h))?,
                attn_k: ld.weight(&n("attn_k.weight"), (kv_out, h))?,
                attn_v: ld.weight(&n("attn_v.weight"), (kv_out, h))?,
                qkv_bias,
                qk_norm,
                attn_output: ld.weight(&n("attn_output.weight"), (h, q_out))?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), h)?,
                ffn_gate: ld.weight(&n("ffn_gate.weight"), (ff, h))?,
                ffn_up: ld.weight(&n("ffn_up.weight"), (ff, h))?,
                ffn_down: ld.weight(&n("ffn_down.weight"), (h, ff))?,
            });
        }
        let output = if ld.has("output.weight") {
            ld.weight("output.weight", (cfg.vocab_size, h))?
        } else {
            token_embd.clone()
        };
        let neox = ld.is_hf() || cfg.stored("blk.0.attn_q.weight") == Stored::Same;
        Ok(Self {
            rope: ld.rope(cfg.rope_theta, hd, neox, &cfg.rope_scaling)?,
            token_embd,
            blocks,
            output_norm: ld.vector("output_norm.weight", h)?,
            output,
            cfg,
        })
    }
}

impl Forward for Llama {
    fn forward(&self, steps: &mut Steps<'_, '_>, logits_from: usize) -> Result<Tensor> {
        let dev = self.output_norm.device();
        let t = steps.t();
        let c = &self.cfg;
        let mut x = steps.embed(&self.token_embd, dev)?; // [B, t, h]
        let (cos, sin) = steps.rope_tables(&self.rope, dev)?;
        let scale = c.query_pre_attn_scalar.powf(-0.5);
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
            let a = steps.attend(i, (&q, &k, &v), scale, c.layer_windows[i])?;
            x = (x + b.attn_output.forward(&a)?)?;
            let h = rms_norm(&x, &b.ffn_norm, c.rms_norm_eps)?;
            let [gate, up] = Weight::forward_n([&b.ffn_gate, &b.ffn_up], &h)?;
            let m = crate::activation::gated(crate::activation::Gate::Silu, &gate, &up)?;
            x = (x + b.ffn_down.forward(&m)?)?;
        }
        steps.advance();
        let x = x.narrow(1, logits_from, t - logits_from)?;
        let x = rms_norm(&x, &self.output_norm, c.rms_norm_eps)?;
        Ok(self.output.forward(&x)?)
    }

    /// Bytes held by the weights, and bytes read from memory to decode one token.
    fn output_mut(&mut self) -> &mut Weight {
        &mut self.output
    }

    fn weight_bytes(&self) -> WeightBytes {
        let mut b = WeightBytes::default();
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

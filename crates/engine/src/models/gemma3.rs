//! Gemma 3 (text), exactly as HF transformers computes it: embedding × √hidden,
//! four RMSNorms per block with (1 + w) (GGUF stores 1 + w already), per-head q/k
//! norms, `query_pre_attn_scalar`, GELU-tanh gated MLP, sliding-window layers with
//! their own rope base, global layers with the linear rope scaling factor (8 on 4B and
//! up), and the output tied to the embedding.

use super::{heads, Architecture, Config, Forward, Loader, Shape, Steps, Stored, WeightBytes};
use crate::attention::{rms_norm, Rope, RopeScaling};
use crate::error::{Error, Result};
use crate::formats::Weight;
use crate::gguf::GgufFile;
use crate::hf::config::HfConfig;
use candle_core::quantized::gguf_file::Value;
use candle_core::Tensor;

/// Gemma 3: text checkpoints, and the text model of multimodal ones.
pub static GEMMA3: Architecture = Architecture {
    name: "gemma3",
    gguf_name: "gemma3",
    hf_names: &[
        "Gemma3ForCausalLM",
        "Gemma3ForConditionalGeneration",
        "gemma3",
        "gemma3_text",
    ],
    // Four norms per block; HF's `post_attention_layernorm` is a different tensor
    // from llama's, and `pre_feedforward_layernorm` is GGUF's `ffn_norm`.
    block_tensors: &[
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
    from_hf,
    from_gguf,
    to_gguf,
    to_hf,
    stored: |_, name| {
        // GGUF stores every Gemma norm scale as 1 + w.
        if name.contains("norm") {
            Stored::PlusOne
        } else {
            Stored::Same
        }
    },
    tensors: |c| {
        let h = c.hidden_size;
        super::common_tensors(
            c,
            &[
                ("post_attention_norm.weight", h),
                ("post_ffw_norm.weight", h),
            ],
        )
    },
    shapes: &[
        Shape {
            name: "270m",
            model: "google/gemma-3-270m",
            config: || gemma3(640, 18, 4, 1, 256, 2048, 262_144, 512, 32_768, 1.0),
        },
        Shape {
            name: "1b",
            model: "google/gemma-3-1b-it",
            config: || gemma3(1152, 26, 4, 1, 256, 6912, 262_144, 512, 32_768, 1.0),
        },
        Shape {
            name: "4b",
            model: "google/gemma-3-4b-it (text)",
            config: || gemma3(2560, 34, 8, 4, 256, 10_240, 262_208, 1024, 131_072, 8.0),
        },
        Shape {
            name: "12b",
            model: "google/gemma-3-12b-it (text)",
            config: || gemma3(3840, 48, 16, 8, 256, 15_360, 262_208, 1024, 131_072, 8.0),
        },
        Shape {
            name: "27b",
            model: "google/gemma-3-27b-it (text)",
            config: || Config {
                // 27B scales queries by 1/sqrt(hidden / heads), not 1/sqrt(head_dim).
                query_pre_attn_scalar: 168.0,
                ..gemma3(5376, 62, 32, 16, 128, 21_504, 262_208, 1024, 131_072, 8.0)
            },
        },
    ],
    load: |c, ld| Ok(Box::new(Gemma3::load(c, ld)?)),
    folds_system_prompt: true,
};

/// A public Gemma 3 text shape: every sixth layer global, the others sliding.
#[allow(clippy::too_many_arguments)]
fn gemma3(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    window: usize,
    context: usize,
    linear_rope: f64,
) -> Config {
    Config {
        arch: &GEMMA3,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim,
        vocab_size: vocab,
        rms_norm_eps: 1e-6,
        max_position_embeddings: context,
        rope_theta: 1_000_000.0,
        rope_scaling: if linear_rope == 1.0 {
            RopeScaling::None
        } else {
            RopeScaling::Linear {
                factor: linear_rope,
            }
        },
        rope_local_theta: Some(10_000.0),
        query_pre_attn_scalar: head_dim as f64,
        layer_windows: period_windows(layers, 6, window),
        tied_embeddings: true,
        attention_bias: false,
        qk_norm: true,
        bos_token_id: Some(2),
        eos_token_ids: vec![1, 106],
    }
}

/// Every `period`-th layer global, the rest sliding (period 0: all sliding).
fn period_windows(layers: usize, period: usize, window: usize) -> Vec<Option<usize>> {
    (0..layers)
        .map(|i| (period == 0 || (i + 1) % period != 0).then_some(window))
        .collect()
}

/// Reads the hyper-parameters from GGUF metadata (`gemma3.*`). Values GGUF does not
/// store are llama.cpp's: local rope base 10 000, every 6th layer global, and the
/// attention scale from head_dim (hidden / heads on the 62-layer 27B).
fn from_gguf(arch: &'static Architecture, g: &GgufFile) -> Result<Config> {
    let a = arch.gguf_name;
    let k = |s: &str| format!("{a}.{s}");
    let (hidden, heads, kv, head_dim, layers, ffn) = super::gguf_shape(g, a)?;
    let head_dim = head_dim.unwrap_or(256);
    let window = g.u64_opt(&k("attention.sliding_window"))?.unwrap_or(4096) as usize;
    // Either a period (every n-th layer global) or, as newer converters write it,
    // one flag per layer (true = sliding).
    let key = k("attention.sliding_window_pattern");
    let layer_windows: Vec<Option<usize>> = match g.get(&key) {
        Some(Value::Array(flags)) => {
            if flags.len() != layers {
                return Err(Error::Metadata {
                    path: g.path().to_path_buf(),
                    key,
                    message: format!("{} flags for {layers} layers", flags.len()),
                });
            }
            flags
                .iter()
                .map(|v| matches!(v, Value::Bool(true)).then_some(window))
                .collect()
        }
        _ => period_windows(layers, g.u64_opt(&key)?.unwrap_or(6) as usize, window),
    };
    let query_pre_attn_scalar = if layers == 62 {
        (hidden / heads.max(1)) as f64
    } else {
        head_dim as f64
    };
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
        rms_norm_eps: g
            .f64_opt(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6),
        max_position_embeddings: g.u64_opt(&k("context_length"))?.unwrap_or(32768) as usize,
        rope_theta: g.f64_opt(&k("rope.freq_base"))?.unwrap_or(1_000_000.0),
        rope_scaling: RopeScaling::from_gguf(g, a)?,
        rope_local_theta: Some(10_000.0),
        query_pre_attn_scalar,
        layer_windows,
        tied_embeddings: !g.has_tensor("output.weight"),
        attention_bias: false,
        qk_norm: true,
        bos_token_id,
        eos_token_ids,
    })
}

/// Reads the hyper-parameters from `config.json` (the top level, or `text_config`
/// of a multimodal checkpoint). Keys that are absent take Gemma3TextConfig's
/// defaults, as published multimodal configs list only what differs.
fn from_hf(arch: &'static Architecture, c: &HfConfig) -> Result<Config> {
    let layers = c.usize_opt("num_hidden_layers")?.unwrap_or(26);
    let head_dim = c.usize_opt("head_dim")?.unwrap_or(256);
    let window = c.usize_opt("sliding_window")?.unwrap_or(4096);
    let layer_windows: Vec<Option<usize>> = match c.text("layer_types") {
        Some(serde_json::Value::Array(types)) => {
            let windows: Option<Vec<Option<usize>>> = types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Some(Some(window)),
                    Some("full_attention") => Some(None),
                    _ => None,
                })
                .collect();
            match windows {
                Some(w) if w.len() == layers => w,
                _ => {
                    return Err(c.err(
                        "layer_types",
                        format!("expected {layers} of sliding_attention / full_attention"),
                    ))
                }
            }
        }
        _ => period_windows(
            layers,
            c.usize_opt("sliding_window_pattern")?.unwrap_or(6),
            window,
        ),
    };
    let (rope_theta, rope_scaling) = c.rope(Some("full_attention"), 1_000_000.0)?;
    let per_type = c
        .text("rope_parameters")
        .is_some_and(|p| p.get("sliding_attention").is_some());
    let rope_local_theta = if per_type {
        let (theta, scaling) = c.rope(Some("sliding_attention"), 10_000.0)?;
        if scaling != RopeScaling::None {
            return Err(c.err(
                "rope_parameters.sliding_attention",
                "scaled rope on sliding layers is not supported",
            ));
        }
        theta
    } else {
        c.f64_opt("rope_local_base_freq")?.unwrap_or(10_000.0)
    };
    let (bos_token_id, eos_token_ids) = super::hf_special_ids(c)?;
    Ok(Config {
        arch,
        hidden_size: c.usize_opt("hidden_size")?.unwrap_or(2304),
        intermediate_size: c.usize_opt("intermediate_size")?.unwrap_or(9216),
        num_hidden_layers: layers,
        num_attention_heads: c.usize_opt("num_attention_heads")?.unwrap_or(8),
        num_key_value_heads: c.usize_opt("num_key_value_heads")?.unwrap_or(4),
        head_dim,
        vocab_size: c.usize_opt("vocab_size")?.unwrap_or(262_208),
        rms_norm_eps: c.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
        max_position_embeddings: c.usize_opt("max_position_embeddings")?.unwrap_or(131_072),
        rope_theta,
        rope_scaling,
        rope_local_theta: Some(rope_local_theta),
        query_pre_attn_scalar: c.f64_opt("query_pre_attn_scalar")?.unwrap_or(256.0),
        layer_windows,
        // Gemma3TextConfig and the multimodal config both default to tied.
        tied_embeddings: c.bool_opt("tie_word_embeddings")?.unwrap_or(true),
        attention_bias: false,
        qk_norm: true,
        bos_token_id,
        eos_token_ids,
    })
}

/// The `gemma3.*` GGUF metadata llama.cpp reads for these hyper-parameters. The
/// sliding pattern is written per layer only when it is not the default period 6.
fn to_gguf(c: &Config) -> Vec<(String, Value)> {
    let mut m = super::gguf_common(c);
    let k = |s: &str| format!("{}.{s}", c.arch.gguf_name);
    let window = c
        .layer_windows
        .iter()
        .flatten()
        .next()
        .copied()
        .unwrap_or(0);
    m.push((k("attention.sliding_window"), Value::U32(window as u32)));
    if c.layer_windows != period_windows(c.num_hidden_layers, 6, window) {
        m.push((
            k("attention.sliding_window_pattern"),
            Value::Array(
                c.layer_windows
                    .iter()
                    .map(|w| Value::Bool(w.is_some()))
                    .collect(),
            ),
        ));
    }
    m
}

/// The `config.json` transformers needs to load these hyper-parameters
/// (`Gemma3ForCausalLM`, explicit `layer_types`).
fn to_hf(c: &Config, _dtype: &str) -> serde_json::Value {
    let layer_types: Vec<&str> = c
        .layer_windows
        .iter()
        .map(|w| match w {
            Some(_) => "sliding_attention",
            None => "full_attention",
        })
        .collect();
    serde_json::json!({
        "architectures": [c.arch.hf_names[0]],
        "model_type": "gemma3_text",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_local_base_freq": c.rope_local_theta.unwrap_or(c.rope_theta),
        "rope_scaling": c.rope_scaling.to_hf(),
        "query_pre_attn_scalar": c.query_pre_attn_scalar,
        "sliding_window": c.layer_windows.iter().flatten().next(),
        "layer_types": layer_types,
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
    })
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
    fn load(cfg: &Config, ld: &Loader) -> Result<Self> {
        let cfg = cfg.clone();
        let offset = if ld.is_hf() { 1.0 } else { 0.0 };
        let norm =
            |name: &str, len: usize| -> Result<Tensor> { Ok((ld.vector(name, len)? + offset)?) };
        let h = cfg.hidden_size;
        let hd = cfg.head_dim;
        let q_out = cfg.num_attention_heads * hd;
        let kv_out = cfg.num_key_value_heads * hd;
        let ff = cfg.intermediate_size;
        let token_embd = ld.weight("token_embd.weight", (cfg.vocab_size, h))?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: norm(&n("attn_norm"), h)?,
                attn_q: ld.weight(&n("attn_q"), (q_out, h))?,
                attn_k: ld.weight(&n("attn_k"), (kv_out, h))?,
                attn_v: ld.weight(&n("attn_v"), (kv_out, h))?,
                attn_q_norm: norm(&n("attn_q_norm"), hd)?,
                attn_k_norm: norm(&n("attn_k_norm"), hd)?,
                attn_output: ld.weight(&n("attn_output"), (h, q_out))?,
                post_attention_norm: norm(&n("post_attention_norm"), h)?,
                ffn_norm: norm(&n("ffn_norm"), h)?,
                ffn_gate: ld.weight(&n("ffn_gate"), (ff, h))?,
                ffn_up: ld.weight(&n("ffn_up"), (ff, h))?,
                ffn_down: ld.weight(&n("ffn_down"), (h, ff))?,
                post_ffw_norm: norm(&n("post_ffw_norm"), h)?,
            });
        }
        let output = if ld.has("output.weight") {
            ld.weight("output.weight", (cfg.vocab_size, h))?
        } else {
            token_embd.clone()
        };
        Ok(Self {
            // transformers computes √hidden in float32; rounding it differently is measurable.
            embed_scale: (h as f32).sqrt() as f64,
            rope_local: ld.rope(
                cfg.rope_local_theta.unwrap_or(cfg.rope_theta),
                hd,
                true,
                &RopeScaling::None,
            )?,
            rope_global: ld.rope(cfg.rope_theta, hd, true, &cfg.rope_scaling)?,
            token_embd,
            blocks,
            output_norm: norm("output_norm.weight", h)?,
            output,
            cfg,
        })
    }
}

impl Forward for Gemma3 {
    fn forward(&self, steps: &mut Steps<'_, '_>, logits_from: usize) -> Result<Tensor> {
        let dev = self.output_norm.device();
        let c = &self.cfg;
        let t = steps.t();
        let eps = c.rms_norm_eps;
        let x = (steps.embed(&self.token_embd, dev)? * self.embed_scale)?; // [B, t, h]
        let mut x = steps.place_images(x)?;
        let local = steps.rope_tables(&self.rope_local, dev)?;
        let global = steps.rope_tables(&self.rope_global, dev)?;
        let scale = c.query_pre_attn_scalar.powf(-0.5);
        for (i, b) in self.blocks.iter().enumerate() {
            let window = c.layer_windows[i];
            let (rope, (cos, sin)) = if window.is_some() {
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
            let a = steps.attend(i, (&q, &k, &v), scale, window)?;
            let a = rms_norm(&b.attn_output.forward(&a)?, &b.post_attention_norm, eps)?;
            x = (x + a)?;
            let h = rms_norm(&x, &b.ffn_norm, eps)?;
            let [gate, up] = Weight::forward_n([&b.ffn_gate, &b.ffn_up], &h)?;
            let m = crate::activation::gated(crate::activation::Gate::GeluTanh, &gate, &up)?;
            let m = rms_norm(&b.ffn_down.forward(&m)?, &b.post_ffw_norm, eps)?;
            x = (x + m)?;
        }
        steps.advance();
        let x = x.narrow(1, logits_from, t - logits_from)?;
        let x = rms_norm(&x, &self.output_norm, eps)?;
        Ok(self.output.forward(&x)?)
    }

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

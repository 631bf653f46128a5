//! Synthetic models: random weights at the exact shapes of public models, written as
//! an HF folder the engine (and transformers) loads. They exist for benchmarks and
//! memory tests where the real weights cannot be downloaded; their text is noise.
//!
//! Weights are uniform with the standard deviation of HF's initialiser (0.02); norm
//! scales are 1 (Gemma stores `scale - 1`, so 0). Each tensor's values depend only on
//! the seed and its name, so a shape written twice is the same model.

use crate::error::{Error, Result};
use crate::hf::writer::{PlannedTensor, SafetensorsWriter};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::path::Path;

/// Standard deviation of the random matrices (transformers' `initializer_range`).
const STD: f32 = 0.02;
/// Largest shard, as `save_pretrained` splits checkpoints.
const SHARD_BYTES: u64 = 5 << 30;

/// Architectures and the public models whose shapes are built in.
pub const SHAPES: &[(&str, &[(&str, &str)])] = &[
    (
        "gemma3",
        &[
            ("270m", "google/gemma-3-270m"),
            ("1b", "google/gemma-3-1b-it"),
            ("4b", "google/gemma-3-4b-it (text)"),
            ("12b", "google/gemma-3-12b-it (text)"),
            ("27b", "google/gemma-3-27b-it (text)"),
        ],
    ),
    (
        "llama",
        &[
            ("135m", "HuggingFaceTB/SmolLM2-135M"),
            ("360m", "HuggingFaceTB/SmolLM2-360M"),
            ("1.7b", "HuggingFaceTB/SmolLM2-1.7B"),
        ],
    ),
    (
        "qwen3",
        &[
            ("0.6b", "Qwen/Qwen3-0.6B"),
            ("1.7b", "Qwen/Qwen3-1.7B"),
            ("4b", "Qwen/Qwen3-4B"),
            ("8b", "Qwen/Qwen3-8B"),
            ("14b", "Qwen/Qwen3-14B"),
            ("32b", "Qwen/Qwen3-32B"),
        ],
    ),
];

/// The text config of the public model `shape` of `arch` (see [`SHAPES`]), or the
/// config in the file `shape` names.
pub fn config(arch: &str, shape: &str) -> Result<Value> {
    let path = Path::new(shape);
    if shape.ends_with(".json") || path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Metadata {
            path: path.to_path_buf(),
            key: "config.json".into(),
            message: e.to_string(),
        })?;
        // A multimodal config's text part is what the engine runs.
        return Ok(match v.get("text_config") {
            Some(t) if v.get("hidden_size").is_none() => text_only(arch, t.clone()),
            _ => v,
        });
    }
    let known = || {
        SHAPES
            .iter()
            .map(|(a, s)| {
                let names: Vec<&str> = s.iter().map(|(n, _)| *n).collect();
                format!("{a}: {}", names.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let c = match (arch, shape.to_ascii_lowercase().as_str()) {
        ("gemma3", "270m") => gemma3(640, 18, 4, 1, 256, 2048, 262_144, 512, 32_768, None),
        ("gemma3", "1b") => gemma3(1152, 26, 4, 1, 256, 6912, 262_144, 512, 32_768, None),
        ("gemma3", "4b") => gemma3(
            2560,
            34,
            8,
            4,
            256,
            10_240,
            262_208,
            1024,
            131_072,
            Some(8.0),
        ),
        ("gemma3", "12b") => gemma3(
            3840,
            48,
            16,
            8,
            256,
            15_360,
            262_208,
            1024,
            131_072,
            Some(8.0),
        ),
        ("gemma3", "27b") => {
            let mut c = gemma3(
                5376,
                62,
                32,
                16,
                128,
                21_504,
                262_208,
                1024,
                131_072,
                Some(8.0),
            );
            // 27B scales queries by 1/sqrt(hidden / heads), not 1/sqrt(head_dim).
            c["query_pre_attn_scalar"] = json!(168);
            c
        }
        ("llama", "135m") => llama(576, 30, 9, 3, 1536, 100_000.0),
        ("llama", "360m") => llama(960, 32, 15, 5, 2560, 100_000.0),
        ("llama", "1.7b") => llama(2048, 24, 32, 32, 8192, 130_000.0),
        ("qwen3", "0.6b") => qwen3(1024, 28, 16, 8, 3072, true),
        ("qwen3", "1.7b") => qwen3(2048, 28, 16, 8, 6144, true),
        ("qwen3", "4b") => qwen3(2560, 36, 32, 8, 9728, true),
        ("qwen3", "8b") => qwen3(4096, 36, 32, 8, 12_288, false),
        ("qwen3", "14b") => qwen3(5120, 40, 40, 8, 17_408, false),
        ("qwen3", "32b") => qwen3(5120, 64, 64, 8, 25_600, false),
        _ => {
            return Err(Error::Invalid(format!(
                "no built-in shape `{shape}` for `{arch}` (known: {}); or give a CONFIG.json",
                known()
            )))
        }
    };
    Ok(c)
}

/// A causal-LM config from a multimodal checkpoint's `text_config`.
fn text_only(arch: &str, mut t: Value) -> Value {
    if arch == "gemma3" {
        t["architectures"] = json!(["Gemma3ForCausalLM"]);
        t["model_type"] = json!("gemma3_text");
    }
    t
}

#[allow(clippy::too_many_arguments)]
fn gemma3(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    window: usize,
    context: usize,
    linear_rope: Option<f64>,
) -> Value {
    let layer_types: Vec<&str> = (0..layers)
        .map(|i| {
            if (i + 1) % 6 == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "sliding_window": window,
        "sliding_window_pattern": 6,
        "layer_types": layer_types,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": linear_rope.map(|f| json!({"rope_type": "linear", "factor": f})),
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
        "attention_bias": false,
        "max_position_embeddings": context,
        "tie_word_embeddings": true,
        "bos_token_id": 2,
        "eos_token_id": [1, 106],
        "pad_token_id": 0,
        "torch_dtype": "bfloat16"
    })
}

fn llama(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    theta: f64,
) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 49_152,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden / heads,
        "hidden_act": "silu",
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": theta,
        "rope_scaling": null,
        "tie_word_embeddings": true,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16"
    })
}

fn qwen3(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    tied: bool,
) -> Value {
    json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": 151_936,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 40_960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_scaling": null,
        "tie_word_embeddings": tied,
        "attention_bias": false,
        "use_sliding_window": false,
        "sliding_window": null,
        "bos_token_id": 151_643,
        "eos_token_id": 151_645,
        "torch_dtype": "bfloat16"
    })
}

/// The tensors a config's model has, HF names, with `dtype` for matrices and
/// embeddings (norm vectors too, as checkpoints store them).
pub fn plan(config: &Value, dtype: &'static str) -> Result<Vec<PlannedTensor>> {
    let get = |k: &str| -> Result<usize> {
        config[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| Error::Invalid(format!("config: `{k}` is missing or not a number")))
    };
    let model_type = config["model_type"].as_str().unwrap_or_default();
    let (h, layers, heads, kv) = (
        get("hidden_size")?,
        get("num_hidden_layers")?,
        get("num_attention_heads")?,
        get("num_key_value_heads")?,
    );
    let (ffn, vocab) = (get("intermediate_size")?, get("vocab_size")?);
    let hd = config["head_dim"]
        .as_u64()
        .map_or(h / heads, |v| v as usize);
    let gemma = model_type.starts_with("gemma3");
    let qk_norm = gemma || model_type == "qwen3";
    let t = |name: String, shape: Vec<usize>| PlannedTensor { name, dtype, shape };
    let mut p = vec![t("model.embed_tokens.weight".into(), vec![vocab, h])];
    for i in 0..layers {
        let n = |s: &str| format!("model.layers.{i}.{s}");
        p.push(t(n("input_layernorm.weight"), vec![h]));
        p.push(t(n("post_attention_layernorm.weight"), vec![h]));
        if gemma {
            p.push(t(n("pre_feedforward_layernorm.weight"), vec![h]));
            p.push(t(n("post_feedforward_layernorm.weight"), vec![h]));
        }
        if qk_norm {
            p.push(t(n("self_attn.q_norm.weight"), vec![hd]));
            p.push(t(n("self_attn.k_norm.weight"), vec![hd]));
        }
        p.push(t(n("self_attn.q_proj.weight"), vec![heads * hd, h]));
        p.push(t(n("self_attn.k_proj.weight"), vec![kv * hd, h]));
        p.push(t(n("self_attn.v_proj.weight"), vec![kv * hd, h]));
        p.push(t(n("self_attn.o_proj.weight"), vec![h, heads * hd]));
        p.push(t(n("mlp.gate_proj.weight"), vec![ffn, h]));
        p.push(t(n("mlp.up_proj.weight"), vec![ffn, h]));
        p.push(t(n("mlp.down_proj.weight"), vec![h, ffn]));
    }
    p.push(t("model.norm.weight".into(), vec![h]));
    if !config["tie_word_embeddings"].as_bool().unwrap_or(false) {
        p.push(t("lm_head.weight".into(), vec![vocab, h]));
    }
    Ok(p)
}

/// What [`write`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SynthReport {
    /// Number of weights.
    pub parameters: u64,
    /// Bytes of tensors written.
    pub bytes: u64,
    /// Safetensors files.
    pub shards: usize,
}

/// Writes a random-weight HF folder for `config` to `out` (which must not exist):
/// `config.json` and `model.safetensors` (or shards of at most 5 GiB with their
/// index). `dtype` is `BF16`, `F16` or `F32`. `progress(done, total)` gets bytes and
/// may return false to cancel, which leaves nothing behind.
pub fn write(
    config: &Value,
    dtype: &str,
    seed: u64,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<SynthReport> {
    write_folder(config, dtype, Some(seed), out, progress)
}

/// The folder [`write`] makes, with every tensor described in the safetensors headers
/// but none stored (the files are holes): what
/// [`crate::quantize::quantize_synthetic`] plans from. Not a model to load.
pub fn write_headers(config: &Value, dtype: &str, out: &Path) -> Result<SynthReport> {
    write_folder(config, dtype, None, out, &mut |_, _| true)
}

fn write_folder(
    config: &Value,
    dtype: &str,
    seed: Option<u64>,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<SynthReport> {
    let dtype: &'static str = match dtype.to_ascii_uppercase().as_str() {
        "BF16" => "BF16",
        "F16" => "F16",
        "F32" => "F32",
        other => {
            return Err(Error::Invalid(format!(
                "--dtype {other}: give bf16, f16 or f32"
            )))
        }
    };
    if out.exists() {
        return Err(Error::Invalid(format!(
            "{}: already exists; give a new folder",
            out.display()
        )));
    }
    let plan = plan(config, dtype)?;
    let norm = norm_value(config);
    // Shards in name order, as the writer orders tensors within a file.
    let mut sorted = plan.clone();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut shards: Vec<Vec<PlannedTensor>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in sorted {
        let b = t.bytes() as u64;
        if size > 0 && size + b > SHARD_BYTES {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        shards.last_mut().expect("one shard").push(t);
    }
    let total: u64 = plan.iter().map(|t| t.bytes() as u64).sum();
    let parameters: u64 = plan
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();

    crate::atomic::folder(out, |tmp| {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io { path: p, source }
        };
        let names: Vec<String> = if shards.len() == 1 {
            vec!["model.safetensors".into()]
        } else {
            (1..=shards.len())
                .map(|i| format!("model-{i:05}-of-{:05}.safetensors", shards.len()))
                .collect()
        };
        let mut done = 0u64;
        let mut weight_map = serde_json::Map::new();
        for (shard, name) in shards.iter().zip(&names) {
            let path = tmp.join(name);
            let mut w = SafetensorsWriter::create(&path, shard.clone())?;
            let Some(seed) = seed else {
                for t in w.plan() {
                    weight_map.insert(t.name.clone(), json!(name));
                }
                w.finish_empty()?;
                continue;
            };
            for t in w.plan().to_vec() {
                let data = if t.shape.len() == 1 {
                    constant(t.shape[0], norm, dtype)
                } else {
                    random(&t, seed, dtype)
                };
                w.write_next(&data)?;
                done += data.len() as u64;
                weight_map.insert(t.name.clone(), json!(name));
                if !progress(done, total) {
                    return Err(Error::Cancelled);
                }
            }
            w.finish()?;
        }
        if shards.len() > 1 {
            let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
            let p = tmp.join("model.safetensors.index.json");
            std::fs::write(&p, serde_json::to_vec_pretty(&index).expect("json")).map_err(io(&p))?;
        }
        let mut c = config.clone();
        c["torch_dtype"] = json!(match dtype {
            "BF16" => "bfloat16",
            "F16" => "float16",
            _ => "float32",
        });
        let p = tmp.join("config.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&c).expect("json")).map_err(io(&p))?;
        Ok(SynthReport {
            parameters,
            bytes: total,
            shards: shards.len(),
        })
    })
}

/// `n` copies of `v` in `dtype`'s little-endian bytes.
fn constant(n: usize, v: f32, dtype: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        push(&mut out, v, dtype);
    }
    out
}

fn push(out: &mut Vec<u8>, v: f32, dtype: &str) {
    match dtype {
        "BF16" => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        "F16" => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
        _ => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// Elements per generator stream: chunks of a tensor are made in parallel.
const STREAM: usize = 1 << 16;

/// The random generator of tensor `name`, before dtype rounding: element `i` of the
/// flattened tensor, a pure function of the seed, the name and `i`, so a tensor can
/// be made whole, or row by row where it is consumed ([`values`]).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// splitmix64's output for counter value `state`.
fn mix(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Elements `range` of the flattened random tensor `name`, as f32 after rounding to
/// `dtype` (what reading them back from the written folder gives).
pub fn values(seed: u64, name: &str, dtype: &str, range: std::ops::Range<usize>) -> Vec<f32> {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let h = seed ^ name_hash(name);
    let half_width = STD * 3f32.sqrt();
    let round = |v: f32| match dtype {
        "BF16" => half::bf16::from_f32(v).to_f32(),
        "F16" => half::f16::from_f32(v).to_f32(),
        _ => v,
    };
    let mut out = Vec::with_capacity(range.len());
    out.par_extend(range.into_par_iter().map(|i| {
        let (c, k) = ((i / STREAM) as u64, (i % STREAM) as u64);
        let state = (h ^ c.wrapping_mul(GOLDEN)).wrapping_add((k + 1).wrapping_mul(GOLDEN));
        let u = (mix(state) >> 40) as f32 / (1u64 << 24) as f32;
        round((2.0 * u - 1.0) * half_width)
    }));
    out
}

/// The value every norm scale holds in a synthetic `config` (1; Gemma stores
/// `scale - 1`, so 0).
pub fn norm_value(config: &Value) -> f32 {
    if config["model_type"]
        .as_str()
        .is_some_and(|m| m.starts_with("gemma3"))
    {
        0.0
    } else {
        1.0
    }
}

/// Uniform values with standard deviation [`STD`], as `dtype`'s little-endian bytes.
fn random(t: &PlannedTensor, seed: u64, dtype: &str) -> Vec<u8> {
    let n: usize = t.shape.iter().product();
    let mut out = Vec::with_capacity(n * crate::hf::dtype_bytes(dtype) as usize);
    for v in values(seed, &t.name, dtype, 0..n) {
        push(&mut out, v, dtype);
    }
    out
}

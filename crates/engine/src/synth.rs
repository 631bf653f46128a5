//! Synthetic models: random weights at the exact shapes of public models, written as
//! an HF folder the engine (and transformers) loads. They exist for benchmarks and
//! memory tests where the real weights cannot be downloaded; their text is noise.
//!
//! Weights are uniform with the standard deviation of HF's initialiser (0.02); norm
//! scales are 1 (Gemma stores `scale - 1`, so 0). Each tensor's values depend only on
//! the seed and its name, so a shape written twice is the same model.

use crate::error::{Error, Result};
use crate::hf::config::HfConfig;
use crate::hf::names;
use crate::hf::writer::{PlannedTensor, SafetensorsWriter};
use crate::models::{Config, Stored, REGISTRY};
use rayon::prelude::*;
use serde_json::json;
use std::path::Path;
use unicorn_common::{atomic, Meter, Progress};

/// Standard deviation of the random matrices (transformers' `initializer_range`).
const STD: f32 = 0.02;
/// Largest shard, as `save_pretrained` splits checkpoints.
const SHARD_BYTES: u64 = 5 << 30;

/// The built-in shapes, for messages: `gemma3: 270m, 1b, ...; llama: ...`.
pub fn known_shapes() -> String {
    REGISTRY
        .iter()
        .filter(|a| !a.shapes.is_empty())
        .map(|a| {
            let names: Vec<&str> = a.shapes.iter().map(|s| s.name).collect();
            format!("{}: {}", a.name, names.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The text configuration of the public model `shape` of `arch` (see each
/// architecture's shapes), or of the `config.json` that `shape` names (a multimodal
/// config's text part).
pub fn config(arch: &str, shape: &str) -> Result<Config> {
    let path = Path::new(shape);
    if shape.ends_with(".json") || path.is_file() {
        let c = Config::from_hf(&HfConfig::open(path)?)?;
        if c.arch.name != arch {
            return Err(Error::Invalid(format!(
                "{}: a `{}` config, not `{arch}`",
                path.display(),
                c.arch.name
            )));
        }
        return Ok(c);
    }
    let known = crate::models::by_name(arch)
        .and_then(|a| a.shapes.iter().find(|s| s.name.eq_ignore_ascii_case(shape)));
    match known {
        Some(s) => Ok((s.config)()),
        None => Err(Error::Invalid(format!(
            "no built-in shape `{shape}` for `{arch}` (known: {}); or give a CONFIG.json",
            known_shapes()
        ))),
    }
}

/// The tensors `config`'s model has, HF names, all in `dtype` (norm vectors too, as
/// checkpoints store them).
pub fn plan(config: &Config, dtype: &'static str) -> Vec<PlannedTensor> {
    config
        .tensors()
        .into_iter()
        .map(|(name, shape)| PlannedTensor {
            name: names::gguf_to_hf(config.arch, &name)
                .expect("every architecture's tensors have transformers names"),
            dtype,
            shape,
        })
        .collect()
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
/// index). `dtype` is `BF16`, `F16` or `F32`. `progress` is told the bytes written
/// (item: the tensor) and may return false to cancel, which leaves nothing behind.
pub fn write(
    config: &Config,
    dtype: &str,
    seed: u64,
    out: &Path,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<SynthReport> {
    write_with(config, dtype, seed, None, out, progress)
}

/// [`write`], shipping a real tokenizer with the model (see [`TokenizerFiles`]).
pub fn write_with(
    config: &Config,
    dtype: &str,
    seed: u64,
    tokenizer: Option<&TokenizerFiles>,
    out: &Path,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<SynthReport> {
    write_folder(config, dtype, Some(seed), tokenizer, out, progress)
}

/// A real tokenizer (Gemma 3's, from the test assets) for a synthetic model: with
/// it the model takes text prompts and chat templates, and its GGUF carries the
/// vocabulary llama.cpp needs. The weights stay random, so the text it writes is
/// noise; what it measures is speed and memory at the real vocabulary.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    json: std::path::PathBuf,
    config: Option<std::path::PathBuf>,
}

impl TokenizerFiles {
    /// Checks that `json` is a tokenizer and `tokenizer_config` (bos/eos tokens, chat
    /// template) is JSON. Its size may differ from the shape's vocabulary, as real
    /// checkpoints' do: GGUF outputs pad or trim it to the embedding's rows.
    pub fn check(json: &Path, tokenizer_config: Option<&Path>) -> Result<Self> {
        crate::tokenizer::Tokenizer::from_file(json, None, None, None)?;
        if let Some(c) = tokenizer_config {
            let bytes = crate::source::read_regular(c, 64 << 20)?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: not JSON: {e}", c.display())))?;
        }
        Ok(Self {
            json: json.to_path_buf(),
            config: tokenizer_config.map(Path::to_path_buf),
        })
    }

    fn copy_into(&self, dir: &Path) -> Result<()> {
        let files = [
            (Some(&self.json), "tokenizer.json"),
            (self.config.as_ref(), "tokenizer_config.json"),
        ];
        for (src, name) in files {
            if let Some(src) = src {
                std::fs::copy(src, dir.join(name)).map_err(|source| Error::Io {
                    path: src.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// The folder [`write`] makes, with every tensor described in the safetensors headers
/// but none stored (the files are holes): what
/// [`crate::quantize::quantize_synthetic`] plans from. Not a model to load.
pub fn write_headers(
    config: &Config,
    dtype: &str,
    tokenizer: Option<&TokenizerFiles>,
    out: &Path,
) -> Result<SynthReport> {
    write_folder(config, dtype, None, tokenizer, out, &mut |_| true)
}

fn write_folder(
    config: &Config,
    dtype: &str,
    seed: Option<u64>,
    tokenizer: Option<&TokenizerFiles>,
    out: &Path,
    progress: &mut dyn FnMut(&Progress) -> bool,
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
    atomic::check_target(out, atomic::Kind::Folder, false, None)?;
    let plan = plan(config, dtype);
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

    let meter = Meter::start();
    let n_tensors = plan.len();
    atomic::folder(out, |tmp| {
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
        let mut index = 0;
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
                    constant(t.shape[0], vector_value(config, &t.name), dtype)
                } else {
                    random(&t, seed, dtype)
                };
                w.write_next(&data)?;
                done += data.len() as u64;
                index += 1;
                weight_map.insert(t.name.clone(), json!(name));
                if !progress(&meter.at(&t.name, index, n_tensors, done, total)) {
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
        let c = config.to_hf_json(match dtype {
            "BF16" => "bfloat16",
            "F16" => "float16",
            _ => "float32",
        });
        let p = tmp.join("config.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&c).expect("json")).map_err(io(&p))?;
        if let Some(t) = tokenizer {
            t.copy_into(tmp)?;
        }
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

/// Appends `v` in `dtype`'s (`BF16`, `F16`, `F32`) little-endian bytes, as the
/// synthetic folder stores it.
pub(crate) fn push(out: &mut Vec<u8>, v: f32, dtype: &str) {
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

/// The value every element of vector `hf_name` holds in a synthetic model, as the
/// folder stores it: norm scales are 1 (Gemma stores `scale - 1`, so 0), biases 0.
pub fn vector_value(config: &Config, hf_name: &str) -> f32 {
    let gguf = names::hf_to_gguf(config.arch, hf_name).unwrap_or_default();
    if !gguf.contains("norm") {
        return 0.0;
    }
    match config.stored(&gguf) {
        Stored::PlusOne => 0.0,
        _ => 1.0,
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

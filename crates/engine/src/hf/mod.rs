//! Hugging Face model folders: `config.json`, one `model.safetensors` or shards listed
//! in `model.safetensors.index.json` (memory-mapped), and the tokenizer files. Tensors
//! are looked up by their text-model name whichever key layout the checkpoint uses:
//! `model.*` (CausalLM), `language_model.model.*` (published multimodal checkpoints)
//! or `model.language_model.*` (transformers 5); vision tensors are never read.

pub mod config;
pub mod names;
pub mod tokenizer_files;
pub mod writer;

use crate::error::{Error, Result};
use crate::weight::Weight;
use candle_core::{DType, Device, Tensor};
use config::HfConfig;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Architectures we load from `config.json`, and the engine's name for each.
pub const ARCHITECTURES: &[(&str, &str)] = &[
    ("Gemma3ForCausalLM", "gemma3"),
    ("Gemma3ForConditionalGeneration", "gemma3"),
    ("gemma3", "gemma3"),
    ("gemma3_text", "gemma3"),
    ("LlamaForCausalLM", "llama"),
    ("MistralForCausalLM", "mistral"),
    ("Qwen2ForCausalLM", "qwen2"),
    ("Qwen3ForCausalLM", "qwen3"),
];

const SUPPORTED: &str = "Gemma3ForCausalLM, Gemma3ForConditionalGeneration, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

/// Bytes per element of a safetensors dtype name (`F32`, `BF16`, `U8`, ...).
pub fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

/// The safetensors name of a float dtype (`BF16`, `F16`; anything else is kept as
/// `F32`).
pub fn float_dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        _ => "F32",
    }
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    stored_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// An open HF model folder.
pub struct HfFolder {
    dir: PathBuf,
    config: HfConfig,
    arch: &'static str,
    shards: Vec<Shard>,
    tensors: HashMap<String, Entry>,
}

/// The text-model name of a stored key, or `None` for keys outside the text model.
fn canonical(stored: &str) -> Option<String> {
    for (prefix, to) in [
        ("language_model.model.", "model."),
        ("model.language_model.", "model."),
        ("language_model.lm_head.", "lm_head."),
    ] {
        if let Some(rest) = stored.strip_prefix(prefix) {
            return Some(format!("{to}{rest}"));
        }
    }
    if stored.starts_with("vision_tower.")
        || stored.starts_with("multi_modal_projector.")
        || stored.starts_with("model.vision_tower.")
        || stored.starts_with("model.multi_modal_projector.")
    {
        return None;
    }
    Some(stored.to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl HfFolder {
    /// Whether `dir` looks like an HF model folder (has `config.json`).
    pub fn is_folder(dir: &Path) -> bool {
        dir.is_dir() && dir.join("config.json").is_file()
    }

    /// Opens the folder: parses `config.json` and every shard header.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::BadFile {
                path: dir.to_path_buf(),
                message: "not a folder".into(),
            });
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(Error::BadFile {
                path: dir.to_path_buf(),
                message: "not a model folder: it has no config.json".into(),
            });
        }
        let config = HfConfig::open(&cfg_path)?;
        let name = config.architecture()?;
        let arch = ARCHITECTURES
            .iter()
            .find(|(hf, _)| *hf == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| Error::UnsupportedArchitecture {
                path: cfg_path.clone(),
                arch: name.clone(),
                supported: SUPPORTED,
            })?;
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (files, weight_map) = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(io(&index_path))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadFile {
                path: index_path.clone(),
                message: format!("not valid JSON: {e}"),
            })?;
            let map = v["weight_map"].as_object().ok_or_else(|| Error::Metadata {
                path: index_path.clone(),
                key: "weight_map".into(),
                message: "missing or not an object".into(),
            })?;
            let mut files: Vec<String> = Vec::new();
            let mut wm = HashMap::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Tensor {
                    path: index_path.clone(),
                    tensor: tensor.clone(),
                    message: "shard name is not a string".into(),
                })?;
                if file.contains('/') || file.contains("..") {
                    return Err(Error::Tensor {
                        path: index_path.clone(),
                        tensor: tensor.clone(),
                        message: format!("shard `{file}` is outside the folder"),
                    });
                }
                if !files.iter().any(|f| f == file) {
                    files.push(file.to_string());
                }
                wm.insert(tensor.clone(), file.to_string());
            }
            files.sort();
            (files, Some(wm))
        } else if single.is_file() {
            (vec!["model.safetensors".to_string()], None)
        } else {
            return Err(Error::BadFile {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json".into(),
            });
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut tensors = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let path = dir.join(f);
            if !path.is_file() {
                return Err(Error::BadFile {
                    path: path.clone(),
                    message: "shard listed in model.safetensors.index.json is missing".into(),
                });
            }
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the map is read-only; a file truncated under us is the user's
            // doing and would fault like any other I/O error on a mapped file.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let (n, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::BadFile {
                path: path.clone(),
                message: format!("not a readable safetensors file: {e}"),
            })?;
            for (stored, info) in meta.tensors() {
                if let Some(wm) = &weight_map {
                    if wm.get(&stored).map(String::as_str) != Some(f.as_str()) {
                        continue;
                    }
                }
                let Some(name) = canonical(&stored) else {
                    continue;
                };
                tensors.insert(
                    name,
                    Entry {
                        shard: i,
                        stored_name: stored.clone(),
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range: info.data_offsets,
                    },
                );
            }
            shards.push(Shard {
                path,
                mmap,
                data_start: 8 + n,
            });
        }
        if let Some(wm) = &weight_map {
            for (tensor, file) in wm {
                let found = canonical(tensor)
                    .map(|c| tensors.get(&c).is_some_and(|e| e.stored_name == *tensor))
                    .unwrap_or(true);
                if !found {
                    return Err(Error::Tensor {
                        path: dir.join(file),
                        tensor: tensor.clone(),
                        message: "listed in model.safetensors.index.json but not in the shard"
                            .into(),
                    });
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            arch,
            shards,
            tensors,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &HfConfig {
        &self.config
    }

    /// The engine's architecture name (`gemma3`, `llama`, `mistral`, `qwen2`, `qwen3`).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// Whether the text model stores a tensor under this (text-model) HF name.
    pub fn has(&self, hf_name: &str) -> bool {
        self.tensors.contains_key(hf_name)
    }

    /// Text-model tensors: (HF name, storage dtype, shape), sorted by name.
    pub fn tensor_infos(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut v: Vec<_> = self
            .tensors
            .iter()
            .map(|(n, e)| (n.clone(), format!("{:?}", e.dtype), e.shape.clone()))
            .collect();
        v.sort();
        v
    }

    /// Bytes of all text-model tensors.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|e| (e.range.1 - e.range.0) as u64)
            .sum()
    }

    fn entry(&self, hf_name: &str) -> Result<&Entry> {
        self.tensors.get(hf_name).ok_or_else(|| Error::Tensor {
            path: self.dir.clone(),
            tensor: hf_name.to_string(),
            message: "missing from the checkpoint".into(),
        })
    }

    fn tensor_err(&self, e: &Entry, message: impl Into<String>) -> Error {
        Error::Tensor {
            path: self.shards[e.shard].path.clone(),
            tensor: e.stored_name.clone(),
            message: message.into(),
        }
    }

    /// The raw bytes, dtype and shape of a tensor, checked to be a finite float.
    pub fn raw(&self, hf_name: &str) -> Result<(&[u8], DType, &[usize])> {
        let (bytes, dtype, shape) = self.raw_unchecked(hf_name)?;
        if let Some(i) = first_non_finite(bytes, dtype) {
            let e = self.entry(hf_name)?;
            return Err(self.tensor_err(e, format!("element {i} is NaN or infinite")));
        }
        Ok((bytes, dtype, shape))
    }

    /// [`HfFolder::raw`] without the scan for NaN, for callers that check the values
    /// they convert anyway.
    pub fn raw_unchecked(&self, hf_name: &str) -> Result<(&[u8], DType, &[usize])> {
        let e = self.entry(hf_name)?;
        let dtype = match e.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(self.tensor_err(
                    e,
                    format!("dtype {other:?} is not supported (F32, F16 or BF16)"),
                ))
            }
        };
        let s = &self.shards[e.shard];
        let bytes = &s.mmap[s.data_start + e.range.0..s.data_start + e.range.1];
        Ok((bytes, dtype, &e.shape))
    }

    fn checked(&self, hf_name: &str, want: &[usize]) -> Result<(&[u8], DType)> {
        let (bytes, dtype, shape) = self.raw(hf_name)?;
        if shape != want {
            let e = self.entry(hf_name)?;
            return Err(self.tensor_err(
                e,
                format!("shape {shape:?}, expected {want:?} from config.json"),
            ));
        }
        Ok((bytes, dtype))
    }

    /// Where a tensor's data is: (shard file, absolute byte offset, dtype, shape), for
    /// readers that stream it with positioned reads instead of touching the map
    /// (mapped pages count as the process's resident memory).
    pub fn tensor_location(&self, hf_name: &str) -> Result<(&Path, u64, DType, &[usize])> {
        let (_, dtype, _) = self.raw_unchecked(hf_name)?;
        let e = self.entry(hf_name)?;
        let s = &self.shards[e.shard];
        Ok((&s.path, (s.data_start + e.range.0) as u64, dtype, &e.shape))
    }

    /// A matrix `[out, in]`, kept in its stored precision (F32, F16 or BF16, or
    /// bitsandbytes NF4 kept packed); matmuls on it accumulate in F32.
    pub fn weight(&self, hf_name: &str, shape: (usize, usize), device: &Device) -> Result<Weight> {
        if self
            .tensors
            .get(hf_name)
            .is_some_and(|e| e.dtype == Dtype::U8)
            && self.has(&format!("{hf_name}.absmax"))
        {
            let w = self.nf4_weight(hf_name, shape)?;
            return match (&w, device.is_cpu()) {
                // No GPU NF4 kernel yet: on a GPU the matrix is held in BF16.
                (Weight::Nf4(m), false) => {
                    let mut dense = vec![0f32; shape.0 * shape.1];
                    for (r, row) in dense.chunks_exact_mut(shape.1).enumerate() {
                        m.dequantize_row(r, row);
                    }
                    let t = Tensor::from_vec(dense, (shape.0, shape.1), device)?;
                    Ok(Weight::Dense(t.to_dtype(candle_core::DType::BF16)?))
                }
                _ => Ok(w),
            };
        }
        let (bytes, dtype) = self.checked(hf_name, &[shape.0, shape.1])?;
        let t = Tensor::from_raw_buffer(bytes, dtype, &[shape.0, shape.1], device)?;
        Ok(Weight::Dense(t))
    }

    /// Bytes of a tensor of any dtype, with its dtype and shape.
    fn any_bytes(&self, hf_name: &str) -> Result<(&[u8], Dtype, &[usize])> {
        let e = self.entry(hf_name)?;
        let s = &self.shards[e.shard];
        Ok((
            &s.mmap[s.data_start + e.range.0..s.data_start + e.range.1],
            e.dtype,
            &e.shape,
        ))
    }

    fn f32s(&self, hf_name: &str) -> Result<Vec<f32>> {
        let (b, d, _) = self.any_bytes(hf_name)?;
        if d != Dtype::F32 {
            let e = self.entry(hf_name)?;
            return Err(self.tensor_err(e, format!("dtype {d:?}, expected F32")));
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A bitsandbytes NF4 matrix: packed codes, the block scales (double quantization
    /// resolved with the stored maps), checked against the quant state's shape.
    fn nf4_weight(&self, hf_name: &str, shape: (usize, usize)) -> Result<Weight> {
        let e = self.entry(hf_name)?;
        let bad = |m: String| self.tensor_err(e, m);
        let state_name = format!("{hf_name}.quant_state.bitsandbytes__nf4");
        if !self.has(&state_name) {
            let fp4 = format!("{hf_name}.quant_state.bitsandbytes__fp4");
            return Err(bad(if self.has(&fp4) {
                "FP4 (bitsandbytes) is not supported, only NF4".into()
            } else {
                "4-bit weight without a bitsandbytes quant state".into()
            }));
        }
        let (state, _, _) = self.any_bytes(&state_name)?;
        let state: serde_json::Value = serde_json::from_slice(state)
            .map_err(|err| bad(format!("quant state is not JSON: {err}")))?;
        let blocksize = state["blocksize"].as_u64().unwrap_or(64) as usize;
        let want = [shape.0, shape.1];
        let stored: Vec<usize> = state["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_default();
        if stored != want {
            return Err(bad(format!(
                "shape {stored:?}, expected {want:?} from config.json"
            )));
        }
        if self.f32s(&format!("{hf_name}.quant_map"))? != crate::nf4::NF4 {
            return Err(bad("quant_map is not the NF4 table".into()));
        }
        let n = shape.0 * shape.1;
        let blocks = n.div_ceil(blocksize.max(1));
        let (packed, _, _) = self.any_bytes(hf_name)?;
        if packed.len() != n.div_ceil(2) {
            return Err(bad(format!(
                "{} packed bytes for {n} weights",
                packed.len()
            )));
        }
        let absmax_name = format!("{hf_name}.absmax");
        let (absmax, adtype, _) = self.any_bytes(&absmax_name)?;
        let scales: Vec<f32> = match adtype {
            Dtype::U8 => {
                let map = self.f32s(&format!("{hf_name}.nested_quant_map"))?;
                let nested = self.f32s(&format!("{hf_name}.nested_absmax"))?;
                let nb = state["nested_blocksize"].as_u64().unwrap_or(256) as usize;
                let offset = state["nested_offset"].as_f64().unwrap_or(0.0) as f32;
                if map.len() != 256 || nested.len() != blocks.div_ceil(nb.max(1)) {
                    return Err(bad("nested quantization tables have the wrong size".into()));
                }
                absmax
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| map[c as usize] * nested[i / nb] + offset)
                    .collect()
            }
            Dtype::F32 => self.f32s(&absmax_name)?,
            d => return Err(bad(format!("absmax dtype {d:?}"))),
        };
        if scales.len() != blocks {
            return Err(bad(format!(
                "{} block scales for {blocks} blocks",
                scales.len()
            )));
        }
        if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
            return Err(bad(format!("block scale {i} is NaN or infinite")));
        }
        Ok(Weight::Nf4(std::sync::Arc::new(crate::nf4::Nf4Matrix {
            rows: shape.0,
            cols: shape.1,
            blocksize,
            packed: packed.to_vec(),
            scales,
        })))
    }

    /// A vector (norm weight, bias) in F32.
    pub fn vector(&self, hf_name: &str, len: usize, device: &Device) -> Result<Tensor> {
        let (bytes, dtype) = self.checked(hf_name, &[len])?;
        Ok(Tensor::from_raw_buffer(bytes, dtype, &[len], device)?.to_dtype(DType::F32)?)
    }
}

/// Index of the first NaN or infinity, checking the exponent bits only.
fn first_non_finite(bytes: &[u8], dtype: DType) -> Option<usize> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 20;
    let find = |bytes: &[u8]| -> Option<usize> {
        match dtype {
            DType::F32 => bytes.chunks_exact(4).position(|b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000
            }),
            DType::BF16 => bytes
                .chunks_exact(2)
                .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
            _ => bytes
                .chunks_exact(2)
                .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
        }
    };
    let elem = dtype.size_in_bytes();
    bytes
        .par_chunks(CHUNK)
        .enumerate()
        .filter_map(|(c, b)| find(b).map(|i| c * CHUNK / elem + i))
        .min()
}

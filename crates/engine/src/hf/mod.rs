//! Hugging Face model folders: `config.json`, one `model.safetensors` or shards listed
//! in `model.safetensors.index.json` (memory-mapped), and the tokenizer files. Tensors
//! are looked up by their text-model name whichever key layout the checkpoint uses:
//! `model.*` (CausalLM), `language_model.model.*` (published multimodal checkpoints)
//! or `model.language_model.*` (transformers 5). A multimodal checkpoint's vision
//! tower and projector are kept apart, under one spelling of their names
//! ([`vision_name`]), for the vision loader only.

pub mod config;
pub mod names;
pub mod tokenizer_files;
pub mod writer;

use crate::error::{Error, Result};
use crate::formats::Weight;
use crate::models::Architecture;
use candle_core::{DType, Device, Tensor};
use config::HfConfig;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

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

/// Where a stored tensor is.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    shard: usize,
    stored_name: String,
    pub(crate) dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// An open HF model folder.
pub struct HfFolder {
    dir: PathBuf,
    config: HfConfig,
    arch: &'static Architecture,
    shards: Vec<Shard>,
    tensors: HashMap<String, Entry>,
    /// Vision tower and projector tensors, by [`vision_name`].
    vision: HashMap<String, Entry>,
    /// The byte ranges (shard, start, end) most recently handed out, oldest first;
    /// see [`HfFolder::mapped`].
    recent: std::sync::Mutex<std::collections::VecDeque<(usize, usize, usize)>>,
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
    if vision_name(stored).is_some() {
        return None;
    }
    Some(stored.to_string())
}

/// The name a vision tower or projector tensor is known by, whichever layout stored
/// it: `vision_tower.*` (transformers' `save_pretrained`), `vision_tower.vision_model.*`
/// (published checkpoints) or `model.vision_tower.*` (transformers 5), and
/// `multi_modal_projector.*`; `None` for other keys.
pub fn vision_name(stored: &str) -> Option<String> {
    let s = stored.strip_prefix("model.").unwrap_or(stored);
    if let Some(rest) = s.strip_prefix("vision_tower.") {
        let rest = rest.strip_prefix("vision_model.").unwrap_or(rest);
        return Some(format!("vision_tower.{rest}"));
    }
    s.starts_with("multi_modal_projector.")
        .then(|| s.to_string())
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
        let arch =
            crate::models::from_hf_name(&name).ok_or_else(|| Error::UnsupportedArchitecture {
                path: cfg_path.clone(),
                arch: name.clone(),
                supported: crate::models::supported_hf(),
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
        let mut vision = HashMap::new();
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
                let entry = Entry {
                    shard: i,
                    stored_name: stored.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: info.data_offsets,
                };
                if let Some(name) = canonical(&stored) {
                    tensors.insert(name, entry);
                } else if let Some(name) = vision_name(&stored) {
                    vision.insert(name, entry);
                }
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
            vision,
            recent: Default::default(),
        })
    }

    /// A tensor's bytes in the mapping. Loading copies every tensor out of the
    /// mapping, and the file's pages it touched would stay resident (and counted in
    /// RSS) until the folder is dropped: a 2.9 GiB NF4 model peaked at 5.8 GiB. So
    /// the pages of tensors handed out earlier (all but the last few, which a loader
    /// may still be combining) are given back to the kernel. That is safe for a
    /// read-only mapping of a file: a page read again comes back from the file.
    fn mapped(&self, e: &Entry) -> &[u8] {
        const KEEP: usize = 8;
        let s = &self.shards[e.shard];
        let (start, end) = (s.data_start + e.range.0, s.data_start + e.range.1);
        if let Ok(mut recent) = self.recent.lock() {
            if !recent.contains(&(e.shard, start, end)) {
                recent.push_back((e.shard, start, end));
                while recent.len() > KEEP {
                    let Some((shard, a, b)) = recent.pop_front() else {
                        break;
                    };
                    // SAFETY: the mapping is read-only and never written through, so
                    // dropping its pages loses nothing; slices into it stay valid.
                    // Failure only leaves the pages resident.
                    let _ = unsafe {
                        self.shards[shard].mmap.unchecked_advise_range(
                            memmap2::UncheckedAdvice::DontNeed,
                            a,
                            b - a,
                        )
                    };
                }
            }
        }
        &s.mmap[start..end]
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &HfConfig {
        &self.config
    }

    /// The architecture `config.json` names.
    pub fn arch(&self) -> &'static Architecture {
        self.arch
    }

    /// Whether the text model stores a tensor under this (text-model) HF name.
    pub fn has(&self, hf_name: &str) -> bool {
        self.tensors.contains_key(hf_name)
    }

    /// A text-model tensor, else a vision one ([`vision_name`]).
    fn lookup(&self, name: &str) -> Option<&Entry> {
        self.tensors.get(name).or_else(|| self.vision.get(name))
    }

    /// Whether the folder stores a vision tower or projector tensor of this
    /// [`vision_name`].
    pub fn has_vision(&self, name: &str) -> bool {
        self.vision.contains_key(name)
    }

    /// Vision tower and projector tensors: ([`vision_name`], storage dtype, shape),
    /// sorted by name.
    pub fn vision_tensor_infos(&self) -> Vec<(String, String, Vec<usize>)> {
        let mut v: Vec<_> = self
            .vision
            .iter()
            .map(|(n, e)| (n.clone(), format!("{:?}", e.dtype), e.shape.clone()))
            .collect();
        v.sort();
        v
    }

    /// The shape of the matrix or vector `hf_name` holds (for a bitsandbytes 4-bit
    /// matrix, the shape its quant state records, not the packed bytes'); `None`
    /// when the folder lacks it.
    pub fn logical_shape(&self, hf_name: &str) -> Result<Option<Vec<usize>>> {
        let Some(e) = self.lookup(hf_name) else {
            return Ok(None);
        };
        if !crate::formats::nf4::load::is_nf4(self, hf_name) {
            return Ok(Some(e.shape.clone()));
        }
        crate::formats::nf4::load::shape(self, hf_name).map(Some)
    }

    /// Where tensor `hf_name` is stored: its shard and its name there (the folder and
    /// `hf_name` when it is absent), for errors that point at it.
    pub fn whereabouts(&self, hf_name: &str) -> (PathBuf, String) {
        match self.lookup(hf_name) {
            Some(e) => (self.shards[e.shard].path.clone(), e.stored_name.clone()),
            None => (self.dir.clone(), hf_name.to_string()),
        }
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

    pub(crate) fn entry(&self, hf_name: &str) -> Result<&Entry> {
        self.lookup(hf_name).ok_or_else(|| Error::Tensor {
            path: self.dir.clone(),
            tensor: hf_name.to_string(),
            message: "missing from the checkpoint".into(),
        })
    }

    pub(crate) fn tensor_err(&self, e: &Entry, message: impl Into<String>) -> Error {
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
        Ok((self.mapped(e), dtype, &e.shape))
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
        if crate::formats::nf4::load::is_nf4(self, hf_name) {
            return crate::formats::nf4::load::weight(self, hf_name, shape, device);
        }
        let (bytes, dtype) = self.checked(hf_name, &[shape.0, shape.1])?;
        let t = Tensor::from_raw_buffer(bytes, dtype, &[shape.0, shape.1], device)?;
        Ok(Weight::Dense(t))
    }

    /// Bytes of a tensor of any dtype, with its dtype and shape.
    pub(crate) fn any_bytes(&self, hf_name: &str) -> Result<(&[u8], Dtype, &[usize])> {
        let e = self.entry(hf_name)?;
        Ok((self.mapped(e), e.dtype, &e.shape))
    }

    /// An F32 tensor's values.
    pub(crate) fn f32s(&self, hf_name: &str) -> Result<Vec<f32>> {
        let (b, d, _) = self.any_bytes(hf_name)?;
        if d != Dtype::F32 {
            let e = self.entry(hf_name)?;
            return Err(self.tensor_err(e, format!("dtype {d:?}, expected F32")));
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Streams a stored tensor's bytes to `sink` in pieces of at most `chunk` bytes
    /// (whole elements), through positioned reads rather than the mapping, so only
    /// the piece in hand is resident however large the model; each piece is checked
    /// for NaN and infinity first. For exporters that must stay flat at 27B.
    pub fn read_tensor_chunks(
        &self,
        hf_name: &str,
        chunk: usize,
        sink: &mut dyn FnMut(&[u8], DType) -> Result<()>,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let (path, start, dtype, _) = self.tensor_location(hf_name)?;
        let e = self.entry(hf_name)?;
        let len = e.range.1 - e.range.0;
        let elem = dtype.size_in_bytes();
        let chunk = (chunk / elem).max(1) * elem;
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut buf = vec![0u8; chunk.min(len)];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            file.read_exact_at(&mut buf[..n], start + done as u64)
                .map_err(|source| Error::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if let Some(i) = first_non_finite(&buf[..n], dtype) {
                let at = done / elem + i;
                return Err(self.tensor_err(e, format!("element {at} is NaN or infinite")));
            }
            sink(&buf[..n], dtype)?;
            done += n;
        }
        Ok(())
    }

    /// A stored tensor in F32 (flattened), read as [`HfFolder::read_tensor_chunks`]
    /// does: only this tensor is resident.
    pub fn read_tensor_f32(&self, hf_name: &str) -> Result<Vec<f32>> {
        let e = self.entry(hf_name)?;
        let mut out = Vec::with_capacity(e.shape.iter().product());
        self.read_tensor_chunks(hf_name, 16 << 20, &mut |bytes, dtype| {
            extend_f32(&mut out, bytes, dtype);
            Ok(())
        })?;
        Ok(out)
    }

    /// A vector (norm weight, bias) in F32.
    pub fn vector(&self, hf_name: &str, len: usize, device: &Device) -> Result<Tensor> {
        let (bytes, dtype) = self.checked(hf_name, &[len])?;
        Ok(Tensor::from_raw_buffer(bytes, dtype, &[len], device)?.to_dtype(DType::F32)?)
    }
}

/// Appends little-endian F32, BF16 or F16 `bytes` to `out` as f32.
pub fn extend_f32(out: &mut Vec<f32>, bytes: &[u8], dtype: DType) {
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
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

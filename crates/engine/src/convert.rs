//! GGUF → HF folder: dequantized weights under transformers' names, with llama.cpp's
//! storage conventions undone (q/k rows of `llama` un-permuted back to rotate-half
//! order, Gemma's stored `1 + w` norms back to `w`), plus `config.json`,
//! `tokenizer.json` built from the GGUF vocabulary, `tokenizer_config.json` with the
//! chat template and `generation_config.json`. Tensors stream one at a time into a
//! temporary folder that is renamed into place only when complete ([`crate::atomic`]).

use crate::attention::{RopeScaling, ROPE_FREQS};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::hf::names;
use crate::hf::writer::{PlannedTensor, SafetensorsWriter};
use crate::models::{siglip, Config, Stored};
use crate::tokenizer::Tokenizer;
use crate::vision::preprocess::Preprocess;
use crate::vision::{Mmproj, Vision};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};
use unicorn_common::{atomic, Meter, Progress};

/// Precision of the written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutDType {
    /// float32: exact dequantization.
    F32,
    /// bfloat16: half the size, rounded.
    Bf16,
}

impl OutDType {
    fn safetensors_name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::Bf16 => "BF16",
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::Bf16 => "bfloat16",
        }
    }
}

/// What a finished conversion wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    /// The output folder.
    pub out: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of model.safetensors.
    pub weight_bytes: u64,
    /// Files in the folder.
    pub files: Vec<String>,
    /// The llama.cpp mmproj whose vision tower the folder took (a multimodal
    /// `Gemma3ForConditionalGeneration` folder), when one sat beside the GGUF.
    pub mmproj: Option<PathBuf>,
}

/// Writes the HF folder for `gguf` at `out`. An existing `out` is replaced only with
/// `force`. `progress` returning false cancels and removes everything written.
pub fn gguf_to_hf(
    gguf: &Path,
    out: &Path,
    dtype: OutDType,
    force: bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<ConvertReport> {
    atomic::check_target(out, atomic::Kind::Folder, force, Some(gguf))?;
    let g = GgufFile::open(gguf)?;
    let config = Config::from_gguf(&g)?;
    // A GGUF without tokenizer metadata still converts; the folder then runs from ids.
    let tokenizer = match g.get("tokenizer.ggml.model") {
        Some(_) => Some(Tokenizer::from_gguf(&g)?),
        None => None,
    };
    // The vision tower goes in too when its mmproj sits beside the GGUF, as the
    // engine loads it: the folder is then the multimodal checkpoint transformers
    // writes (published layout), text model under `language_model.`.
    let vision = match Vision::find_mmproj(gguf, &config)? {
        Some(p) => Some((Mmproj::open(&p, &config, tokenizer.as_ref())?, p)),
        None => None,
    };
    let mut report = atomic::folder(out, |tmp| {
        write_folder(
            &g,
            &config,
            tokenizer.as_ref(),
            vision.as_ref().map(|(m, _)| m),
            tmp,
            dtype,
            progress,
        )
    })?;
    report.out = out.to_path_buf();
    report.mmproj = vision.map(|(_, p)| p);
    Ok(report)
}

/// llama.cpp's converter permutes q/k rows of each head from rotate-half order to
/// interleaved pairs; this is the inverse.
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// Where a tensor of the folder comes from.
enum From {
    /// The GGUF's tensor of this name.
    Text(String),
    /// The mmproj's tensor of this name.
    Vision(String),
}

fn write_folder(
    g: &GgufFile,
    config: &Config,
    tokenizer: Option<&Tokenizer>,
    vision: Option<&Mmproj>,
    dir: &Path,
    dtype: OutDType,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<ConvertReport> {
    let mut plan = Vec::new();
    let mut sources = std::collections::HashMap::new();
    // Norms and biases stay F32: they are tiny and their precision matters.
    let stored_as = |shape: &[usize]| match shape.len() {
        1 => "F32",
        _ => dtype.safetensors_name(),
    };
    for (name, _, shape) in g.tensor_infos() {
        // Llama 3's rope divisors become `rope_scaling` in config.json.
        if name == ROPE_FREQS {
            continue;
        }
        let Some(hf) = names::gguf_to_hf(config.arch, &name) else {
            return Err(Error::Tensor {
                path: g.path().to_path_buf(),
                tensor: name,
                message: "no transformers counterpart for this tensor".into(),
            });
        };
        let hf = match vision {
            Some(_) => format!("language_model.{hf}"),
            None => hf,
        };
        plan.push(PlannedTensor {
            name: hf.clone(),
            dtype: stored_as(&shape),
            shape: shape.clone(),
        });
        sources.insert(hf, From::Text(name));
    }
    for (name, shape) in vision.map(|v| v.cfg.tensors()).unwrap_or_default() {
        let hf = siglip::published_name(&name).ok_or_else(|| Error::Tensor {
            path: g.path().to_path_buf(),
            tensor: name.clone(),
            message: "no transformers name for this vision tensor".into(),
        })?;
        plan.push(PlannedTensor {
            name: hf.clone(),
            dtype: stored_as(&shape),
            shape,
        });
        sources.insert(hf, From::Vision(name));
    }
    let st_path = dir.join("model.safetensors");
    let mut w = SafetensorsWriter::create(&st_path, plan)?;
    let plan = w.plan().to_vec();
    let bytes_total: u64 = plan.iter().map(|t| t.bytes() as u64).sum();
    let mut bytes_done = 0u64;
    let meter = Meter::start();
    for (i, t) in plan.iter().enumerate() {
        let (file, gname) = match &sources[&t.name] {
            From::Text(n) => (g.path(), n),
            From::Vision(n) => (vision.map_or(g.path(), |v| v.gguf.path()), n),
        };
        let terr = |e: candle_core::Error| Error::Tensor {
            path: file.to_path_buf(),
            tensor: gname.clone(),
            message: e.to_string(),
        };
        let x = match (&sources[&t.name], vision) {
            (From::Vision(n), Some(v)) => {
                // Checked for non-finite values and shape as the engine loads it.
                let x = siglip::VisionFiles::Mmproj(&v.gguf).f32(n, &t.shape, &Device::Cpu)?;
                match siglip::stored(n) {
                    Stored::PlusOne => (x - 1.0).map_err(terr)?,
                    _ => x,
                }
            }
            _ => {
                let q = g.qtensor(gname, &Device::Cpu)?;
                if let Some(why) = crate::formats::first_non_finite(&q).map_err(terr)? {
                    return Err(Error::Tensor {
                        path: g.path().to_path_buf(),
                        tensor: gname.clone(),
                        message: why,
                    });
                }
                let x = q.dequantize(&Device::Cpu).map_err(terr)?;
                match config.stored(gname) {
                    Stored::Same => x,
                    Stored::PlusOne => (x - 1.0).map_err(terr)?,
                    Stored::PermutedHeads(heads) => unpermute(&x, heads).map_err(terr)?,
                }
            }
        };
        let data = match t.dtype {
            "F32" => bytes_of(
                &x.flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(terr)?,
            ),
            _ => {
                let v = x
                    .to_dtype(DType::BF16)
                    .and_then(|x| x.flatten_all())
                    .and_then(|x| x.to_vec1::<half::bf16>())
                    .map_err(terr)?;
                v.iter().flat_map(|h| h.to_bits().to_le_bytes()).collect()
            }
        };
        w.write_next(&data)?;
        bytes_done += data.len() as u64;
        if !progress(&meter.at(&t.name, i + 1, plan.len(), bytes_done, bytes_total)) {
            return Err(Error::Cancelled);
        }
    }
    w.finish()?;

    let mut config = config.clone();
    if config.rope_scaling == RopeScaling::Stored {
        let factors = g
            .vector(ROPE_FREQS, config.head_dim / 2, &Device::Cpu)?
            .to_vec1::<f32>()
            .map_err(|e| Error::Tensor {
                path: g.path().to_path_buf(),
                tensor: ROPE_FREQS.into(),
                message: e.to_string(),
            })?;
        config.rope_scaling =
            RopeScaling::llama3_from_factors(&factors, config.rope_theta, config.head_dim)
                .ok_or_else(|| Error::Tensor {
                    path: g.path().to_path_buf(),
                    tensor: ROPE_FREQS.into(),
                    message: "per-pair rope factors that no Llama 3 rope_scaling gives: config.json cannot express them".into(),
                })?;
    }
    if let Some(tokenizer) = tokenizer {
        config.bos_token_id = tokenizer.bos_id;
        config.eos_token_ids = tokenizer.eos_id.into_iter().collect();
    }
    let text_json = config.to_hf_json(dtype.torch_name());
    match vision {
        Some(v) => {
            write_json(
                &dir.join("config.json"),
                &v.cfg.to_hf_json(text_json, v.tokens),
            )?;
            write_json(
                &dir.join("preprocessor_config.json"),
                &Preprocess::gemma_json(
                    v.cfg.image_size as u32,
                    v.mean,
                    v.std,
                    v.cfg.tokens_per_image,
                ),
            )?;
        }
        None => write_json(&dir.join("config.json"), &text_json)?,
    }
    if let Some(tokenizer) = tokenizer {
        write_tokenizer_files(g, &config, tokenizer, dir)?;
    }

    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    Ok(ConvertReport {
        out: dir.to_path_buf(),
        tensors: plan.len(),
        weight_bytes: bytes_total,
        files,
        mmproj: None,
    })
}

fn write_tokenizer_files(
    g: &GgufFile,
    config: &Config,
    tokenizer: &Tokenizer,
    dir: &Path,
) -> Result<()> {
    // transformers adds BOS through the tokenizer's post-processor.
    let mut hf_tok = tokenizer.hf().clone();
    if let (true, Some(id)) = (tokenizer.add_bos, tokenizer.bos_id) {
        let bos = tokenizer.bos_token.clone();
        let tp = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single(format!("{bos}:0 $A:0"))
            .and_then(|b| b.try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1")))
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .special_tokens(vec![(bos, id)])
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        hf_tok.with_post_processor(Some(tp));
    }
    let tok_path = dir.join("tokenizer.json");
    hf_tok
        .save(&tok_path, false)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
    let mut tc = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer.bos_id.map(|_| tokenizer.bos_token.clone()),
        "eos_token": tokenizer.eos_id.map(|_| tokenizer.eos_token.clone()),
        "add_bos_token": tokenizer.add_bos,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.context_length(),
    });
    if let Some(t) = g.string_opt("tokenizer.chat_template")? {
        tc["chat_template"] = t.into();
    }
    if let Some(id) = g.u64_opt("tokenizer.ggml.padding_token_id")? {
        if let Some(p) = tokenizer.hf().id_to_token(id as u32) {
            tc["pad_token"] = p.into();
        }
    }
    write_json(&dir.join("tokenizer_config.json"), &tc)?;
    let gen = serde_json::json!({
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
    });
    write_json(&dir.join("generation_config.json"), &gen)
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

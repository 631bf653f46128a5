//! HF folder → HF folder with bitsandbytes NF4 weights, in the layout transformers +
//! bitsandbytes save and load (`.weight` packed U8 `[n/2, 1]`, `.absmax`,
//! `.quant_map`, `.nested_absmax`, `.nested_quant_map`,
//! `.quant_state.bitsandbytes__nf4`, and `quantization_config` in config.json).
//! Linear weights of the text model are quantized; embeddings, norms, biases, the
//! output head and a vision tower and projector are copied unchanged, as
//! transformers' skip list does. One tensor at a time, into a temporary folder that
//! is renamed when complete.

use super::{dynamic_map, Absmax, Nf4, NESTED_BLOCKSIZE, NF4};
use crate::error::{Error, Result};
use crate::hf::writer::{PlannedTensor, SafetensorsWriter};
use crate::hf::HfFolder;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use unicorn_common::{atomic, Meter, Progress};

/// What an NF4 export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Nf4Report {
    /// The output folder.
    pub output: String,
    /// Weights quantized to NF4.
    pub quantized_weights: u64,
    /// Bytes those weights took in the source.
    pub quantized_source_bytes: u64,
    /// Bytes they take now (codes, scales, maps, quant states).
    pub quantized_bytes: u64,
    /// Bits per weight of the quantized tensors, all their statistics included.
    pub bits_per_weight: f64,
    /// Bytes of the source's tensors.
    pub source_bytes: u64,
    /// Bytes of the output's model.safetensors.
    pub output_bytes: u64,
    /// source / output.
    pub ratio: f64,
    /// Wall time.
    pub seconds: f64,
    /// Per quantized tensor: bytes with its statistics, and the error of its
    /// dequantized weights (the GGUF quantizer's report, type `NF4`).
    pub tensors: Vec<crate::quantize::TensorReport>,
    /// What the user should know about what was left as it was.
    pub notes: Vec<String>,
}

/// Whether a tensor is quantized: 2-D linear weights of the text model, not the
/// embedding or output head.
fn quantized(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.starts_with("model.layers.") && name.ends_with("_proj.weight")
}

fn torch_dtype(d: candle_core::DType) -> &'static str {
    match d {
        candle_core::DType::BF16 => "bfloat16",
        candle_core::DType::F16 => "float16",
        _ => "float32",
    }
}

/// Exports `src` to `out` with NF4 weights (`blocksize`, double quantization on or
/// off). `progress` is told the source bytes quantized (item: the tensor); returning
/// false cancels and removes everything.
pub fn export(
    src: &Path,
    out: &Path,
    blocksize: usize,
    double_quant: bool,
    force: bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Nf4Report> {
    export_from(
        src,
        Values::File,
        out,
        blocksize,
        double_quant,
        force,
        progress,
    )
}

/// [`export`] of the random model `unicorn synth` makes with `seed`, from a folder
/// of its headers only ([`crate::synth::write_headers`]): each tensor is generated
/// where it is quantized, so a 27B NF4 needs no 54 GB BF16 folder first. The output
/// is byte for byte what exporting the written folder gives.
pub fn export_synthetic(
    headers: &Path,
    seed: u64,
    out: &Path,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Nf4Report> {
    export_from(
        headers,
        Values::Synthetic(seed),
        out,
        64,
        true,
        false,
        progress,
    )
}

fn export_from(
    src: &Path,
    values: Values,
    out: &Path,
    blocksize: usize,
    double_quant: bool,
    force: bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Nf4Report> {
    let t0 = Instant::now();
    if !(32..=4096).contains(&blocksize) || !blocksize.is_power_of_two() {
        return Err(Error::Invalid(format!(
            "--blocksize {blocksize}: bitsandbytes allows powers of two from 32 to 4096"
        )));
    }
    atomic::check_target(out, atomic::Kind::Folder, force, Some(src))?;
    let h = HfFolder::open(src)?;
    // A synthetic model's vectors take their values from its config.
    let config = match values {
        Values::Synthetic(_) => Some(crate::models::Config::from_hf(h.config())?),
        Values::File => None,
    };
    let mut r = atomic::folder(out, |tmp| {
        let source = Source {
            h: &h,
            values,
            config,
        };
        write(&source, tmp, blocksize, double_quant, progress)
    })?;
    r.output = out.display().to_string();
    r.seconds = t0.elapsed().as_secs_f64();
    Ok(r)
}

/// Where the exporter's tensor values come from.
#[derive(Clone, Copy)]
enum Values {
    /// The folder's files.
    File,
    /// `unicorn synth`'s generator with this seed (the folder holds headers only).
    Synthetic(u64),
}

/// The folder being exported, and where its values come from.
struct Source<'a> {
    h: &'a HfFolder,
    values: Values,
    /// The model's config, for [`Values::Synthetic`].
    config: Option<crate::models::Config>,
}

impl Source<'_> {
    /// The synthetic values of elements `range` of `name` (as stored, rounded to its
    /// dtype), as `unicorn synth` writes them.
    fn synthetic(&self, seed: u64, name: &str, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let (_, _, dtype, shape) = self.h.tensor_location(name)?;
        let dtype = crate::hf::float_dtype_name(dtype);
        Ok(match (&self.config, shape.len()) {
            (Some(cfg), 1) => vec![crate::synth::vector_value(cfg, name); range.len()],
            _ => crate::synth::values(seed, name, dtype, range),
        })
    }

    /// `name`'s stored bytes, in pieces of about `chunk` bytes (whole elements).
    fn chunks(
        &self,
        name: &str,
        chunk: usize,
        sink: &mut dyn FnMut(&[u8], candle_core::DType) -> Result<()>,
    ) -> Result<()> {
        let Values::Synthetic(seed) = self.values else {
            return self.h.read_tensor_chunks(name, chunk, sink);
        };
        let (_, _, dtype, shape) = self.h.tensor_location(name)?;
        let n: usize = shape.iter().product();
        let per = (chunk / dtype.size_in_bytes()).max(1);
        let mut bytes = Vec::new();
        for start in (0..n).step_by(per) {
            let v = self.synthetic(seed, name, start..(start + per).min(n))?;
            bytes.clear();
            let name = crate::hf::float_dtype_name(dtype);
            v.iter()
                .for_each(|&x| crate::synth::push(&mut bytes, x, name));
            sink(&bytes, dtype)?;
        }
        Ok(())
    }

    /// `name`'s values in f32, flattened.
    fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        match self.values {
            Values::File => self.h.read_tensor_f32(name),
            Values::Synthetic(seed) => {
                let n: usize = self.h.tensor_location(name)?.3.iter().product();
                self.synthetic(seed, name, 0..n)
            }
        }
    }
}

/// The output's tensors (quantized ones as packed codes, absmax, maps and quant
/// state, the rest as they are) and the dtype the quantized weights had.
fn plan_tensors(
    h: &HfFolder,
    infos: &[(String, String, Vec<usize>)],
    blocksize: usize,
    double_quant: bool,
    offsets: Option<&std::collections::HashMap<String, f32>>,
) -> Result<(Vec<PlannedTensor>, candle_core::DType)> {
    let mut plan = Vec::new();
    let mut compute = candle_core::DType::F32;
    for (name, dtype, shape) in infos {
        let d = match dtype.as_str() {
            "F32" => candle_core::DType::F32,
            "F16" => candle_core::DType::F16,
            "BF16" => candle_core::DType::BF16,
            other => {
                return Err(Error::Tensor {
                    path: h.dir().to_path_buf(),
                    tensor: name.clone(),
                    message: format!("dtype {other}: NF4 export needs F32, F16 or BF16 weights"),
                })
            }
        };
        if !quantized(name, shape) {
            plan.push(PlannedTensor {
                name: name.clone(),
                dtype: crate::hf::float_dtype_name(d),
                shape: shape.clone(),
            });
            continue;
        }
        compute = d;
        let n: usize = shape.iter().product();
        let blocks = n.div_ceil(blocksize);
        plan.push(PlannedTensor {
            name: name.clone(),
            dtype: "U8",
            shape: vec![n.div_ceil(2), 1],
        });
        plan.push(PlannedTensor {
            name: format!("{name}.quant_map"),
            dtype: "F32",
            shape: vec![16],
        });
        // The offset's digits set the state's length: exact once the offsets are
        // known, 0.0 for a prediction.
        let offset =
            double_quant.then(|| offsets.and_then(|o| o.get(name)).copied().unwrap_or(0.0));
        plan.push(PlannedTensor {
            name: format!("{name}.quant_state.bitsandbytes__nf4"),
            dtype: "U8",
            shape: vec![quant_state(shape, blocksize, d, offset).len()],
        });
        if double_quant {
            plan.push(PlannedTensor {
                name: format!("{name}.absmax"),
                dtype: "U8",
                shape: vec![blocks],
            });
            plan.push(PlannedTensor {
                name: format!("{name}.nested_absmax"),
                dtype: "F32",
                shape: vec![blocks.div_ceil(NESTED_BLOCKSIZE)],
            });
            plan.push(PlannedTensor {
                name: format!("{name}.nested_quant_map"),
                dtype: "F32",
                shape: vec![256],
            });
        } else {
            plan.push(PlannedTensor {
                name: format!("{name}.absmax"),
                dtype: "F32",
                shape: vec![blocks],
            });
        }
    }
    Ok((plan, compute))
}

/// What [`export`] of `src` will write, from the same plan, before reading any
/// weight. Exact up to the quant states' JSON, whose offset digits vary by a few
/// bytes; `bits_per_weight` is of the quantized weights.
pub fn predict(
    src: &Path,
    blocksize: usize,
    double_quant: bool,
) -> Result<crate::quantize::Prediction> {
    let h = HfFolder::open(src)?;
    // The text model's tensors, then a vision tower's (copied as they are).
    let mut infos = h.tensor_infos();
    infos.extend(h.vision_tensor_infos());
    let (plan, _) = plan_tensors(&h, &infos, blocksize, double_quant, None)?;
    let size = |t: &PlannedTensor| {
        t.shape.iter().product::<usize>() as u64
            * if t.dtype == "F32" {
                4
            } else if t.dtype == "U8" {
                1
            } else {
                2
            }
    };
    let source: u64 = infos
        .iter()
        .map(|(_, d, s)| s.iter().product::<usize>() as u64 * if d == "F32" { 4 } else { 2 })
        .sum();
    let kept: std::collections::HashSet<&str> = infos
        .iter()
        .filter(|(n, _, s)| !quantized(n, s))
        .map(|(n, _, _)| n.as_str())
        .collect();
    // The plan writes the offset as 0.0; a real one has up to 17 significant digits.
    let offset_digits = |t: &PlannedTensor| {
        if double_quant && t.name.ends_with("bitsandbytes__nf4") {
            15
        } else {
            0
        }
    };
    let output: u64 = plan.iter().map(|t| size(t) + offset_digits(t)).sum();
    let quantized_out: u64 = plan
        .iter()
        .filter(|t| !kept.contains(t.name.as_str()))
        .map(|t| size(t) + offset_digits(t))
        .sum();
    let quantized_weights: u64 = infos
        .iter()
        .filter(|(n, _, s)| quantized(n, s))
        .map(|(_, _, s)| s.iter().product::<usize>() as u64)
        .sum();
    // The loader keeps NF4 codes packed with one f32 scale per block, other matrices
    // as stored, and vectors in F32.
    let resident: u64 = infos
        .iter()
        .map(|(n, d, s)| {
            let count = s.iter().product::<usize>() as u64;
            if quantized(n, s) {
                count / 2 + count.div_ceil(blocksize as u64) * 4
            } else if s.len() == 1 || d == "F32" {
                count * 4
            } else {
                count * 2
            }
        })
        .sum();
    Ok(crate::quantize::Prediction {
        source_bytes: source,
        tensor_bytes: output,
        bits_per_weight: quantized_out as f64 * 8.0 / quantized_weights.max(1) as f64,
        warnings: Vec::new(),
        resident_weight_bytes: resident,
    })
}

/// Each quantized tensor's double-quantization offset, from its block scales, read
/// in pieces (whole blocks each: 16 MiB of any float type is whole blocks of any
/// power-of-two blocksize up to 4096).
fn scan_offsets(
    src: &Source,
    names: &[&str],
    total_bytes: u64,
    blocksize: usize,
    meter: &Meter,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<std::collections::HashMap<String, f32>> {
    let (mut offsets, mut read) = (std::collections::HashMap::new(), 0u64);
    let mut values = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut absmax = Vec::new();
        src.chunks(name, 16 << 20, &mut |bytes, dtype| {
            values.clear();
            crate::hf::extend_f32(&mut values, bytes, dtype);
            absmax.extend(super::block_absmax(&values, blocksize));
            read += bytes.len() as u64;
            Ok(())
        })?;
        offsets.insert(name.to_string(), super::double_quant_offset(&absmax));
        // The first of two passes over the same bytes: progress runs to half.
        let item = format!("{name} (block scales)");
        if !progress(&meter.at(&item, i + 1, 2 * names.len(), read, 2 * total_bytes)) {
            return Err(Error::Cancelled);
        }
    }
    Ok(offsets)
}

/// The quantized tensor a planned entry belongs to (itself, or the base of one of its
/// statistics), if any, and which part it is.
fn part_of<'a>(
    name: &'a str,
    quantized: &std::collections::HashSet<&str>,
) -> Option<(&'a str, &'a str)> {
    if quantized.contains(name) {
        return Some((name, ""));
    }
    for suffix in [
        ".absmax",
        ".nested_absmax",
        ".nested_quant_map",
        ".quant_map",
        ".quant_state.bitsandbytes__nf4",
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if quantized.contains(base) {
                return Some((base, suffix));
            }
        }
    }
    None
}

/// Streams the output. The header must give every quant state's length, which
/// depends on the digits of its offset (the mean of the tensor's block scales), so
/// with double quantization a first pass reads each tensor in pieces for its block
/// scales alone. Then each tensor is read with positioned reads, quantized, written
/// with its statistics, and dropped. Only one tensor is ever resident: peak memory
/// follows the largest tensor, not the model (a 27B source does not fit in RAM).
fn write(
    src: &Source,
    dir: &Path,
    blocksize: usize,
    double_quant: bool,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<Nf4Report> {
    let h = src.h;
    // The text model's tensors, then a vision tower's (copied as they are).
    let mut infos = h.tensor_infos();
    infos.extend(h.vision_tensor_infos());
    let meter = Meter::start();
    // The quantized tensors, in the source's order, and their source bytes (both
    // passes report progress over them).
    let names: Vec<&str> = infos
        .iter()
        .filter(|(n, _, s)| quantized(n, s))
        .map(|(n, _, _)| n.as_str())
        .collect();
    let total_bytes: u64 = infos
        .iter()
        .filter(|(n, _, s)| quantized(n, s))
        .map(|(_, d, s)| s.iter().product::<usize>() as u64 * crate::hf::dtype_bytes(d))
        .sum();
    let offsets = if double_quant {
        Some(scan_offsets(
            src,
            &names,
            total_bytes,
            blocksize,
            &meter,
            progress,
        )?)
    } else {
        None
    };
    let (plan, compute) = plan_tensors(h, &infos, blocksize, double_quant, offsets.as_ref())?;
    let quantized_names: std::collections::HashSet<&str> = names.iter().copied().collect();
    let shapes: std::collections::HashMap<&str, &Vec<usize>> =
        infos.iter().map(|(n, _, s)| (n.as_str(), s)).collect();
    let total = names.len();
    let (mut done, mut qw, mut qsrc, mut qbytes) = (0, 0u64, 0u64, 0u64);
    let mut tensors = Vec::new();
    let st_path = dir.join("model.safetensors");
    let mut w = SafetensorsWriter::create(&st_path, plan)?;
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    // The tensor being written (its statistics follow it in name order) and its
    // quant state.
    let mut current: Option<(String, Nf4, Vec<u8>)> = None;
    for t in w.plan().to_vec() {
        let Some((base, part)) = part_of(&t.name, &quantized_names) else {
            src.chunks(&t.name, 16 << 20, &mut |bytes, _| w.write_part(bytes))?;
            continue;
        };
        if current.as_ref().map(|c| c.0.as_str()) != Some(base) {
            // The previous tensor goes before the next is read.
            let _ = current.take();
            let shape = shapes[base];
            let x = src.f32s(base)?;
            let dtype = h.tensor_location(base)?.2;
            let q = Nf4::quantize(&x, blocksize, double_quant);
            let offset = match &q.absmax {
                Absmax::Double { offset, .. } => Some(*offset),
                Absmax::Plain(_) => None,
            };
            let state = quant_state(shape, blocksize, dtype, offset);
            let source = x.len() as u64 * dtype.size_in_bytes() as u64;
            qw += x.len() as u64;
            qsrc += source;
            let stored = (q.packed.len() + state.len() + 64) as u64
                + match &q.absmax {
                    Absmax::Plain(a) => a.len() as u64 * 4,
                    Absmax::Double { codes, nested, .. } => {
                        codes.len() as u64 + nested.len() as u64 * 4 + 1024
                    }
                };
            qbytes += stored;
            let (err2, sig2) = q.error_sums(&x);
            tensors.push(crate::quantize::TensorReport::from_sums(
                base, "NF4", shape, stored, err2, sig2,
            ));
            done += 1;
            // With double quantization this is the second pass over the bytes.
            let pass = u64::from(double_quant);
            let (n, of) = (done + pass as usize * total, (1 + pass as usize) * total);
            if !progress(&meter.at(
                base,
                n,
                of,
                qsrc + pass * total_bytes,
                (1 + pass) * total_bytes,
            )) {
                return Err(Error::Cancelled);
            }
            current = Some((base.to_string(), q, state));
        }
        let Some((_, q, state)) = current.as_ref() else {
            unreachable!("set above")
        };
        match part {
            "" => w.write_next(&q.packed)?,
            ".quant_map" => w.write_next(&f32_bytes(&NF4))?,
            ".quant_state.bitsandbytes__nf4" => w.write_next(state)?,
            ".nested_quant_map" => w.write_next(&f32_bytes(&dynamic_map()))?,
            ".nested_absmax" => match &q.absmax {
                Absmax::Double { nested, .. } => w.write_next(&f32_bytes(nested))?,
                Absmax::Plain(_) => unreachable!("planned only with double quantization"),
            },
            _ => match &q.absmax {
                Absmax::Double { codes, .. } => w.write_next(codes)?,
                Absmax::Plain(a) => w.write_next(&f32_bytes(a))?,
            },
        }
    }
    w.finish()?;

    // A vision tower and its projector stay in their dtype, and config.json says so
    // (transformers would otherwise expect them quantized), as a model quantized with
    // `llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"]`.
    let vision = infos
        .iter()
        .any(|(n, _, _)| n.starts_with("vision_tower.") || n.starts_with("multi_modal_projector."));
    let mut notes = Vec::new();
    let skip = if vision {
        notes.push(
            "the vision tower and projector are kept in their source dtype, not NF4 (listed in llm_int8_skip_modules, as transformers does for a model that skips them)".to_string(),
        );
        serde_json::json!(["vision_tower", "multi_modal_projector", "lm_head"])
    } else {
        serde_json::Value::Null
    };
    let mut cfg = h.config().json().clone();
    cfg["quantization_config"] = serde_json::json!({
        "_load_in_4bit": true,
        "_load_in_8bit": false,
        "bnb_4bit_compute_dtype": torch_dtype(compute),
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": double_quant,
        "llm_int8_enable_fp32_cpu_offload": false,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_skip_modules": skip,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": true,
        "load_in_8bit": false,
        "quant_method": "bitsandbytes",
    });
    let cfg_path = dir.join("config.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string_pretty(&cfg).unwrap_or_default() + "\n",
    )
    .map_err(|source| Error::Io {
        path: cfg_path,
        source,
    })?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
        "preprocessor_config.json",
        "processor_config.json",
    ] {
        let p = h.dir().join(f);
        if p.is_file() {
            std::fs::copy(&p, dir.join(f)).map_err(|source| Error::Io { path: p, source })?;
        }
    }
    let source_bytes = h.tensor_bytes();
    let output_bytes = std::fs::metadata(&st_path).map(|m| m.len()).unwrap_or(0);
    Ok(Nf4Report {
        output: PathBuf::from(dir).display().to_string(),
        quantized_weights: qw,
        quantized_source_bytes: qsrc,
        quantized_bytes: qbytes,
        bits_per_weight: qbytes as f64 * 8.0 / qw.max(1) as f64,
        source_bytes,
        output_bytes,
        ratio: source_bytes as f64 / output_bytes.max(1) as f64,
        seconds: 0.0,
        tensors,
        notes,
    })
}

/// The quant-state JSON exactly as bitsandbytes writes it (Python's `json.dumps`
/// spacing and float formatting).
fn quant_state(
    shape: &[usize],
    blocksize: usize,
    dtype: candle_core::DType,
    offset: Option<f32>,
) -> Vec<u8> {
    let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut s = format!(
        "{{\"quant_type\": \"nf4\", \"blocksize\": {blocksize}, \"dtype\": \"{}\", \"shape\": [{}]",
        torch_dtype(dtype),
        shape.join(", ")
    );
    if let Some(o) = offset {
        s.push_str(&format!(
            ", \"nested_blocksize\": {NESTED_BLOCKSIZE}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            python_float(o as f64)
        ));
    }
    s.push('}');
    s.into_bytes()
}

/// Python's `repr` of a float: the shortest digits that round-trip, with `.0` on
/// integral values.
fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    // Shortest round-trip digits either way; Python switches to scientific notation
    // below 1e-4 and from 1e16, with a signed exponent of at least two digits.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if x != 0.0 && !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{x}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr_does() {
        for (x, want) in [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (0.1f32 as f64, "0.10000000149011612"),
            (-1.1754943508222875e-38, "-1.1754943508222875e-38"),
        ] {
            assert_eq!(python_float(x), want);
        }
    }
}

//! What a quantization will write, decided before any weight is read: the output's
//! metadata and one job per tensor with its GGUF name, shape, type (llama.cpp's mixes,
//! [`super::types`]) and how the source stores it.

use super::types::{tensor_type, QuantType, TensorRole};
use crate::attention::ROPE_FREQS;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::hf::names;
use crate::models::{Config, Stored};
use crate::source::Source;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

/// Where a tensor's values come from, and how to bring them into GGUF's layout.
pub(super) struct Job {
    pub gguf_name: String,
    pub shape: Vec<usize>,
    pub out: GgmlDType,
    /// How GGUF stores it differently from the source (`Same` for a GGUF source).
    pub stored: Stored,
    pub source_bytes: u64,
    /// Values the source does not hold but GGUF needs, computed from the
    /// configuration (llama.cpp's `rope_freqs.weight` for Llama 3 rope scaling).
    pub computed: Option<Vec<f32>>,
}

/// What will be written.
pub(super) struct Plan {
    pub metadata: Vec<(String, Value)>,
    pub jobs: Vec<Job>,
    pub warnings: Vec<String>,
}

/// Output metadata and one job per tensor, in llama.cpp's order (embedding, blocks
/// in order, output).
pub(super) fn plan(source: &Source, config: &Config, to: QuantType) -> Result<Plan> {
    let mut warnings = Vec::new();
    let (_, heads, kv_heads, _, _) = config.shape();
    // Jobs with their output type still to choose.
    let mut raw: Vec<Job> = Vec::new();
    let job = |gguf_name: String, shape: Vec<usize>, source_bytes: u64, stored: Stored| Job {
        gguf_name,
        shape,
        out: GgmlDType::F32,
        stored,
        source_bytes,
        computed: None,
    };
    let mut metadata: Vec<(String, Value)>;
    match source {
        Source::Gguf(g) => {
            let mut quantized = 0;
            for (name, t, shape) in g.tensor_infos() {
                let n: u64 = shape.iter().map(|&d| d as u64).product();
                if !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
                    quantized += 1;
                }
                raw.push(job(
                    name,
                    shape,
                    n / t.block_size() as u64 * t.type_size() as u64,
                    // Already in GGUF's layout.
                    Stored::Same,
                ));
            }
            if quantized > 0 {
                warnings.push(format!(
                    "{} of {} tensors in the source are already quantized: re-quantizing adds their error to the new one; quantize from the original weights when you can",
                    quantized,
                    raw.len()
                ));
            }
            metadata = copy_metadata(g)?;
        }
        Source::Hf(h) => {
            for (hf, dtype, shape) in h.tensor_infos() {
                let Some(name) = names::hf_to_gguf(config.arch, &hf) else {
                    continue;
                };
                let elem = if dtype == "F32" { 4 } else { 2 };
                let bytes = shape.iter().product::<usize>() as u64 * elem;
                let stored = config.stored(&name);
                raw.push(job(name, shape, bytes, stored));
            }
            if let Some(f) = config
                .rope_scaling
                .gguf_factors(config.rope_theta, config.head_dim)
            {
                raw.push(Job {
                    computed: Some(f.clone()),
                    ..job(ROPE_FREQS.into(), vec![f.len()], 0, Stored::Same)
                });
            }
            metadata = config.gguf_metadata();
            let files = crate::hf::tokenizer_files::read(h.dir(), h.config().json())?;
            match &files.tokenizer {
                Some(t) => {
                    let path = h.dir().join("tokenizer.json");
                    let (meta, dropped) = t
                        .gguf_metadata(config.vocab_size)
                        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
                    metadata.extend(meta);
                    if !dropped.is_empty() {
                        warnings.push(format!(
                            "{}: {} token(s) with ids past the embedding's {} rows were left out of the vocabulary, as llama.cpp's converter does: {}",
                            path.display(),
                            dropped.len(),
                            config.vocab_size,
                            dropped.iter().take(5).map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                None => warnings.push(
                    "the folder has no tokenizer.json: the GGUF has no vocabulary and llama.cpp will not load it".into(),
                ),
            }
            if let Some(t) = files.chat_template {
                metadata.push(("tokenizer.chat_template".into(), Value::String(t)));
            }
            if let Some(n) = h.config().json()["_name_or_path"].as_str() {
                metadata.push(("general.name".into(), Value::String(n.into())));
            }
        }
    }
    metadata.retain(|(k, _)| k != "general.file_type" && k != "general.quantization_version");
    metadata.push(("general.file_type".into(), Value::U32(to.file_type())));
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    let has_output = raw.iter().any(|r| r.gguf_name == "output.weight");
    let n_layers = config.num_layers();
    let n_gqa = heads / kv_heads.max(1);
    let order = |name: &str| -> (usize, usize, String) {
        match name {
            // llama.cpp's converter writes generated tensors first.
            ROPE_FREQS => (0, 0, String::new()),
            n if n.starts_with("token_embd") => (0, 0, n.to_string()),
            n if n.starts_with("blk.") => {
                let l = n[4..]
                    .split('.')
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                (1, l, n.to_string())
            }
            n => (2, 0, n.to_string()),
        }
    };
    raw.sort_by_key(|r| order(&r.gguf_name));
    let mut fallbacks = 0;
    let jobs: Vec<Job> = raw
        .into_iter()
        .map(|j| {
            let out = tensor_type(
                to,
                TensorRole {
                    name: &j.gguf_name,
                    shape: &j.shape,
                    n_layers,
                    n_gqa,
                    has_output,
                },
            );
            if matches!(
                out,
                GgmlDType::Q5_0
                    | GgmlDType::Q5_1
                    | GgmlDType::Q8_0
                    | GgmlDType::Q4_0
                    | GgmlDType::F16
            ) && !matches!(to, QuantType::Q8_0 | QuantType::Q4_0 | QuantType::F16)
                && j.shape.len() == 2
                && !j.shape[1].is_multiple_of(256)
            {
                fallbacks += 1;
            }
            Job { out, ..j }
        })
        .collect();
    if fallbacks > 0 {
        warnings.push(format!(
            "{fallbacks} tensors have rows not divisible by 256 and use llama.cpp's fallback types (Q5_0 / Q5_1 / Q8_0 / Q4_0)"
        ));
    }
    Ok(Plan {
        metadata,
        jobs,
        warnings,
    })
}

/// Every key of a GGUF except the ones the writer sets itself.
fn copy_metadata(g: &GgufFile) -> Result<Vec<(String, Value)>> {
    let mut keys = g.metadata_keys();
    keys.retain(|k| k != "general.alignment");
    keys.sort();
    Ok(keys
        .into_iter()
        .filter_map(|k| g.get(&k).cloned().map(|v| (k, v)))
        .collect())
}

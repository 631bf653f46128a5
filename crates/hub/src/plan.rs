//! What a repository holds, as choices of what to download: a GGUF repository's
//! quantizations (one choice per quantization, its split parts grouped and checked
//! complete), its vision projectors, and of a safetensors repository only the files
//! the engine reads. Everything here is read from a checked [`Listing`]; nothing is
//! fetched.

use crate::{Error, Gated, Listing, RemoteFile, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// The files of an HF (safetensors) model the engine reads, besides the weight shards:
/// configuration, tokenizer, chat template, and the image processor of a vision model.
pub const ENGINE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "model.safetensors.index.json",
];

/// Most parts of one split GGUF (llama.cpp writes five digits).
const MAX_PARTS: u32 = 9999;

/// The download choices of a repository at one commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// `org/name`.
    pub repo: String,
    /// The commit the choices are for.
    pub commit: String,
    /// Whether the hub asks users to accept a licence first.
    pub gated: Gated,
    /// The licence its tags name.
    pub license: Option<String>,
    /// One choice per GGUF quantization, smallest first.
    pub quants: Vec<Quant>,
    /// Vision projectors (`mmproj*.gguf`), for multimodal GGUF models.
    pub mmproj: Vec<Quant>,
    /// The files the engine reads of an HF model, when the repository holds one.
    pub safetensors: Option<FileSet>,
    /// What was left out and why (an incomplete split set, say), one line each.
    pub notes: Vec<String>,
}

/// One GGUF quantization: one file, or the parts of a split one in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quant {
    /// Unique in the plan: the file's path without `.gguf` and the split suffix.
    pub id: String,
    /// The quantization its name says (`Q4_K_M`, `IQ4_XS`, `BF16`...), upper case;
    /// the id when the name says none.
    pub name: String,
    /// The files, parts in order.
    pub files: Vec<String>,
    /// Bytes of all of them.
    pub size: u64,
    /// Bits per weight typical of the type its name says, before the header is read
    /// ([`crate::fit`] measures it from the header).
    pub bits_per_weight: Option<f64>,
}

/// A set of files with their total size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileSet {
    /// Paths in the repository.
    pub files: Vec<String>,
    /// Bytes of all of them.
    pub size: u64,
    /// Files of the repository left out (other formats, duplicates), and their bytes.
    pub skipped: Vec<String>,
    /// Bytes of the skipped files.
    pub skipped_size: u64,
}

impl Plan {
    /// The quantization a user named: an id exactly, else a name (any case); an
    /// error names the choices when none or several match.
    pub fn quant(&self, wanted: &str) -> Result<&Quant> {
        if let Some(q) = self.quants.iter().find(|q| q.id == wanted) {
            return Ok(q);
        }
        let hits: Vec<&Quant> = self
            .quants
            .iter()
            .filter(|q| q.name.eq_ignore_ascii_case(wanted))
            .collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::Invalid(format!(
                "{}: no quantization `{}`; it holds {}",
                self.repo,
                wanted.escape_debug(),
                self.choices()
            ))),
            many => Err(Error::Invalid(format!(
                "{}: several files are `{wanted}`; name one by its id: {}",
                self.repo,
                many.iter()
                    .map(|q| q.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The vision projector a user named (by file, id or name), or the only one when
    /// `wanted` is empty.
    pub fn projector(&self, wanted: &str) -> Result<&Quant> {
        let hits: Vec<&Quant> = self
            .mmproj
            .iter()
            .filter(|q| {
                wanted.is_empty()
                    || q.id == wanted
                    || q.files.iter().any(|f| f == wanted)
                    || q.name.eq_ignore_ascii_case(wanted)
            })
            .collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] if self.mmproj.is_empty() => Err(Error::Invalid(format!(
                "{}: no vision projector (mmproj*.gguf) in this repository",
                self.repo
            ))),
            _ => Err(Error::Invalid(format!(
                "{}: name one vision projector: {}",
                self.repo,
                self.mmproj
                    .iter()
                    .map(|q| q.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The quantizations, named, for a message: `Q4_K_M (1.2 GB), ...`.
    pub fn choices(&self) -> String {
        if self.quants.is_empty() {
            return "no GGUF quantizations".into();
        }
        self.quants
            .iter()
            .map(|q| format!("{} ({:.2} GB)", q.name, q.size as f64 / 1e9))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The choices `listing` offers.
pub fn plan(listing: &Listing) -> Plan {
    let mut notes = Vec::new();
    let mut singles = Vec::new();
    let mut mmproj = Vec::new();
    // (prefix, count) → parts by index.
    let mut splits: BTreeMap<(String, u32), BTreeMap<u32, &RemoteFile>> = BTreeMap::new();
    for f in listing.files.iter().filter(|f| f.path.ends_with(".gguf")) {
        if is_mmproj(&f.path) {
            mmproj.push(single(f));
            continue;
        }
        match split_part(&f.path) {
            Some((i, n)) => {
                let stem = &f.path[..f.path.len() - SPLIT_SUFFIX_LEN - ".gguf".len()];
                splits
                    .entry((stem.to_string(), n))
                    .or_default()
                    .insert(i, f);
            }
            None => singles.push(single(f)),
        }
    }
    let mut quants = singles;
    for ((id, n), parts) in splits {
        let missing: Vec<String> = (1..=n)
            .filter(|i| !parts.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            notes.push(format!(
                "{id}: part{} {} of {n} missing from the repository; left out",
                if missing.len() == 1 { "" } else { "s" },
                abbreviate(&missing)
            ));
            continue;
        }
        // The engine opens one file: say so before 2 GB of parts come down.
        notes.push(format!(
            "{id}: in {n} parts; the engine loads a GGUF in one file, so merge them after downloading (llama-gguf-split --merge)"
        ));
        let name = quant_name(&id).unwrap_or_else(|| id.clone());
        quants.push(Quant {
            bits_per_weight: typical_bits(&name),
            name,
            files: parts.values().map(|f| f.path.clone()).collect(),
            size: parts.values().map(|f| f.size).sum(),
            id,
        });
    }
    quants.sort_by(|a, b| a.size.cmp(&b.size).then_with(|| a.id.cmp(&b.id)));
    Plan {
        repo: listing.repo.clone(),
        commit: listing.commit.clone(),
        gated: listing.gated,
        license: listing.license.clone(),
        quants,
        mmproj,
        safetensors: safetensors(listing),
        notes,
    }
}

/// A one-file quantization.
fn single(f: &RemoteFile) -> Quant {
    let id = f.path.trim_end_matches(".gguf").to_string();
    let name = quant_name(&id).unwrap_or_else(|| id.clone());
    Quant {
        bits_per_weight: typical_bits(&name),
        name,
        files: vec![f.path.clone()],
        size: f.size,
        id,
    }
}

/// `1, 2, 3, ... 40` for a long list of missing parts.
fn abbreviate(v: &[String]) -> String {
    if v.len() <= 8 {
        v.join(", ")
    } else {
        format!("{}, ... {}", v[..6].join(", "), v[v.len() - 1])
    }
}

/// The files the engine reads of an HF model in `listing` (top-level configuration,
/// tokenizer and safetensors weights), or `None` when it holds no such model.
fn safetensors(listing: &Listing) -> Option<FileSet> {
    let top = |f: &&RemoteFile| !f.path.contains('/');
    let has = |name: &str| listing.files.iter().any(|f| f.path == name);
    let weights: Vec<&RemoteFile> = listing
        .files
        .iter()
        .filter(top)
        .filter(|f| f.path.ends_with(".safetensors"))
        .collect();
    if !has("config.json") || weights.is_empty() {
        return None;
    }
    // Mistral's repositories hold the weights twice: transformers' shards and
    // `consolidated.safetensors` for their own tools.
    let transformers = weights.iter().any(|f| !f.path.starts_with("consolidated"));
    let keep = |f: &RemoteFile| {
        !f.path.contains('/')
            && (ENGINE_FILES.contains(&f.path.as_str())
                || (f.path.ends_with(".safetensors")
                    && !(transformers && f.path.starts_with("consolidated"))))
    };
    let (chosen, skipped): (Vec<&RemoteFile>, Vec<&RemoteFile>) =
        listing.files.iter().partition(|f| keep(f));
    Some(FileSet {
        files: chosen.iter().map(|f| f.path.clone()).collect(),
        size: chosen.iter().map(|f| f.size).sum(),
        skipped: skipped.iter().map(|f| f.path.clone()).collect(),
        skipped_size: skipped.iter().map(|f| f.size).sum(),
    })
}

/// Whether `path` is a vision projector (`mmproj*.gguf`, any case, in any folder).
pub fn is_mmproj(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.to_ascii_lowercase().starts_with("mmproj")
}

/// Bytes of `-00001-of-00003` at the end of a split part's stem.
const SPLIT_SUFFIX_LEN: usize = "-00001-of-00003".len();

/// (part, of how many) of a split GGUF part, `name-00001-of-00003.gguf`; `None` for
/// a file in one piece (or a suffix that numbers no real part: part 0, part 4 of 3).
pub fn split_part(path: &str) -> Option<(u32, u32)> {
    let stem = path.strip_suffix(".gguf")?;
    let suffix = stem.get(stem.len().checked_sub(SPLIT_SUFFIX_LEN)?..)?;
    let b = suffix.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b[r.clone()]
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| suffix[r].parse::<u32>().ok())
            .flatten()
    };
    if b[0] != b'-' || &b[6..10] != b"-of-" {
        return None;
    }
    let (i, n) = (digits(1..6)?, digits(10..15)?);
    (1..=MAX_PARTS).contains(&n).then_some(())?;
    (1..=n).contains(&i).then_some((i, n))
}

/// The quantization a GGUF file's name says (`gemma-3-1b-it-Q4_K_M` → `Q4_K_M`): the
/// last `-` or `.` separated word that is a GGML type or llama.cpp mix name.
pub fn quant_name(stem: &str) -> Option<String> {
    let base = stem.rsplit('/').next().unwrap_or(stem);
    base.split(['-', '.'])
        .rev()
        .map(str::to_ascii_uppercase)
        .find(|w| is_quant_word(w))
}

/// `F16`, `BF16`, `F32`, `FP16`..., or `[I|T]Q<digits>_<parts>` (`Q4_K_M`, `IQ4_XS`,
/// `Q8_0`, `TQ1_0`).
fn is_quant_word(w: &str) -> bool {
    if ["F16", "BF16", "F32", "FP16", "FP32"].contains(&w) {
        return true;
    }
    let rest = w
        .strip_prefix("IQ")
        .or_else(|| w.strip_prefix("TQ"))
        .or_else(|| w.strip_prefix('Q'));
    let Some(rest) = rest else {
        return false;
    };
    let mut parts = rest.split('_');
    let bits = parts.next().unwrap_or("");
    let tail: Vec<&str> = parts.collect();
    !bits.is_empty()
        && bits.len() <= 2
        && bits.bytes().all(|b| b.is_ascii_digit())
        && !tail.is_empty()
        && tail
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Bits per weight typical of a quantization by its name (llama.cpp's figures for
/// its mixes; the block formats' exact sizes), for before a header is read.
pub fn typical_bits(name: &str) -> Option<f64> {
    Some(match name {
        "F32" | "FP32" => 32.0,
        "F16" | "BF16" | "FP16" => 16.0,
        "Q8_0" => 8.5,
        "Q6_K" => 6.56,
        "Q5_1" => 6.0,
        "Q5_K_M" => 5.69,
        "Q5_K_S" | "Q5_K" => 5.54,
        "Q5_0" => 5.5,
        "Q4_1" => 5.0,
        "Q4_K_M" => 4.89,
        "Q4_K_S" | "Q4_K" => 4.58,
        "Q4_0" | "IQ4_NL" => 4.5,
        "IQ4_XS" => 4.25,
        "Q3_K_L" => 4.27,
        "Q3_K_M" | "Q3_K" => 3.91,
        "IQ3_M" => 3.66,
        "Q3_K_S" | "IQ3_S" => 3.44,
        "IQ3_XS" => 3.3,
        "IQ3_XXS" => 3.06,
        "IQ2_M" => 2.7,
        "Q2_K" | "Q2_K_S" => 2.63,
        "IQ2_S" => 2.5,
        "IQ2_XS" => 2.31,
        "IQ2_XXS" => 2.06,
        "IQ1_M" => 1.75,
        "IQ1_S" => 1.56,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing of `files`, sorted as the hub's is after parsing.
    fn listing(files: &[(&str, u64)]) -> Listing {
        let mut files = files.to_vec();
        files.sort();
        Listing {
            repo: "org/m-GGUF".into(),
            commit: "0".repeat(40),
            files: files
                .iter()
                .map(|(p, s)| RemoteFile {
                    path: p.to_string(),
                    size: *s,
                    sha256: None,
                    etag: "1".repeat(40),
                })
                .collect(),
            gated: Gated::No,
            license: None,
        }
    }

    #[test]
    fn quant_names_come_from_file_names() {
        for (stem, want) in [
            ("gemma-3-1b-it-Q4_K_M", Some("Q4_K_M")),
            ("Meta-Llama-3-8B-Instruct.Q8_0", Some("Q8_0")),
            ("Llama-3.2-1B-Instruct-IQ4_XS", Some("IQ4_XS")),
            ("qwen2.5-0.5b-instruct-fp16", Some("FP16")),
            ("ggml-model-bf16", Some("BF16")),
            ("sub/dir/model-q4_0", Some("Q4_0")),
            ("Qwen2-7B-UD-Q4_K_XL", Some("Q4_K_XL")),
            ("Qwen2-7B", None),
            ("model", None),
            ("Q4", None),
        ] {
            assert_eq!(quant_name(stem).as_deref(), want, "{stem}");
        }
        assert_eq!(typical_bits("Q4_K_M"), Some(4.89));
        assert_eq!(typical_bits("Q9_Z"), None);
    }

    #[test]
    fn split_suffixes_are_read_and_bad_ones_are_not_parts() {
        assert_eq!(split_part("a-Q8_0-00002-of-00003.gguf"), Some((2, 3)));
        assert_eq!(split_part("a-Q8_0-00004-of-00003.gguf"), None);
        assert_eq!(split_part("a-00000-of-00003.gguf"), None);
        assert_eq!(split_part("a-00001-of-00000.gguf"), None);
        assert_eq!(split_part("a-0000x-of-00003.gguf"), None);
        assert_eq!(split_part("00001-of-00002.gguf"), None);
        assert_eq!(split_part("é-00001-of-00002.gguf"), Some((1, 2)));
        assert_eq!(split_part("ééééééééé.gguf"), None);
        assert_eq!(split_part("a.gguf"), None);
    }

    #[test]
    fn gguf_repos_group_parts_and_leave_out_incomplete_sets() {
        let l = listing(&[
            ("README.md", 10),
            ("m-Q4_K_M.gguf", 400),
            ("m-Q8_0-00001-of-00002.gguf", 500),
            ("m-Q8_0-00002-of-00002.gguf", 300),
            ("m-F16-00001-of-00003.gguf", 600),
            ("m-F16-00003-of-00003.gguf", 600),
            ("mmproj-m-F16.gguf", 90),
            ("IQ4_XS/m-IQ4_XS.gguf", 350),
        ]);
        let p = plan(&l);
        let ids: Vec<&str> = p.quants.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["IQ4_XS/m-IQ4_XS", "m-Q4_K_M", "m-Q8_0"]);
        let q8 = p.quant("q8_0").unwrap();
        assert_eq!(
            q8.files,
            ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"]
        );
        assert_eq!((q8.size, q8.bits_per_weight), (800, Some(8.5)));
        assert_eq!(p.notes.len(), 2);
        assert!(p.notes[0].contains("m-F16") && p.notes[0].contains("part 2 of 3"));
        assert!(p.notes[1].contains("m-Q8_0: in 2 parts"));
        assert_eq!(p.mmproj.len(), 1);
        assert_eq!(p.projector("").unwrap().files, ["mmproj-m-F16.gguf"]);
        assert!(p.safetensors.is_none());
        let e = p.quant("Q2_K").unwrap_err().to_string();
        assert!(e.contains("Q4_K_M") && e.contains("IQ4_XS"), "{e}");
        assert!(p.quant("F16").is_err(), "an incomplete set is no choice");
    }

    #[test]
    fn safetensors_repos_keep_only_what_the_engine_reads() {
        let l = listing(&[
            ("config.json", 1),
            ("generation_config.json", 1),
            ("tokenizer.json", 5),
            ("tokenizer_config.json", 2),
            ("model-00001-of-00002.safetensors", 100),
            ("model-00002-of-00002.safetensors", 50),
            ("model.safetensors.index.json", 3),
            ("consolidated.safetensors", 150),
            ("pytorch_model.bin", 150),
            ("original/consolidated.00.pth", 150),
            ("original/params.json", 1),
            ("onnx/model.onnx", 150),
            ("flax_model.msgpack", 150),
            ("tf_model.h5", 150),
            ("README.md", 4),
            (".gitattributes", 1),
        ]);
        let s = plan(&l).safetensors.unwrap();
        assert_eq!(
            s.files,
            [
                "config.json",
                "generation_config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json",
                "tokenizer_config.json",
            ]
        );
        assert_eq!(s.size, 162);
        assert!(s
            .skipped
            .contains(&"original/consolidated.00.pth".to_string()));
        assert_eq!(s.skipped_size, 150 * 6 + 4 + 1 + 1);
        // Without transformers' shards, Mistral's consolidated file is the model.
        let l = listing(&[("config.json", 1), ("consolidated.safetensors", 9)]);
        assert_eq!(plan(&l).safetensors.unwrap().size, 10);
        // No config, no model.
        assert!(plan(&listing(&[("model.safetensors", 9)]))
            .safetensors
            .is_none());
    }
}

//! The architecture registry: one file per architecture owns everything about it.
//! Every registered architecture's tiny golden model goes HF → GGUF → HF and runs to
//! the same logits; and no source file outside `models/` names an architecture.

use crate::common::*;
use std::path::Path;
use unicorn_engine::attention::RopeScaling;
use unicorn_engine::convert::{gguf_to_hf, OutDType};
use unicorn_engine::hf::config::HfConfig;
use unicorn_engine::models::{Config, Model, REGISTRY};
use unicorn_engine::quantize::{quantize, types::QuantType};
use unicorn_engine::source::Source;

/// The golden tiny models and the architecture each is.
const TINY: &[(&str, &str)] = &[
    ("llama", "llama"),
    ("qwen2", "qwen2"),
    ("qwen3", "qwen3"),
    ("gemma3_text", "gemma3"),
    ("gemma3_multimodal_layout", "gemma3"),
    ("llama3_rope", "llama"),
    ("qwen2_yarn", "qwen2"),
];

/// A rope scaling as GGUF stores it: its numbers as f32.
fn f32_scaling(s: RopeScaling) -> RopeScaling {
    let r = |x: f64| x as f32 as f64;
    match s {
        RopeScaling::Linear { factor } => RopeScaling::Linear { factor: r(factor) },
        RopeScaling::Yarn {
            factor,
            original_context,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
        } => RopeScaling::Yarn {
            factor: r(factor),
            original_context,
            beta_fast: r(beta_fast),
            beta_slow: r(beta_slow),
            attention_factor: r(attention_factor),
            truncate,
        },
        s => s,
    }
}

fn logits(dir: &Path, input: &[u32]) -> Vec<f32> {
    let m = f32_cache(Model::load(&Source::open(dir).unwrap(), &candle_core::Device::Cpu).unwrap());
    let mut cache = m.new_cache();
    floats(&m.forward(input, &mut cache, 0).unwrap())
}

/// HF → GGUF (F32) → HF (F32): the configuration comes back equal, every tensor
/// comes back bit for bit except Gemma's norms (stored as 1 + w, so w loses the bits
/// below 1's last place), and the logits agree with the original's within 1e-5 and
/// with transformers' within the golden tolerance.
#[test]
fn every_architecture_round_trips_hf_gguf_hf() {
    let d = scratch("roundtrip");
    for &(folder, arch) in TINY {
        let src = tiny(folder);
        let gguf = d.join(format!("{folder}.gguf"));
        quantize(&src, &gguf, QuantType::F32, false, &mut |_| true).unwrap();
        let back = d.join(folder);
        gguf_to_hf(&gguf, &back, OutDType::F32, false, &mut |_| true).unwrap();

        let original = Config::from_hf(&HfConfig::open(&src.join("config.json")).unwrap()).unwrap();
        let again = Config::from_hf(&HfConfig::open(&back.join("config.json")).unwrap()).unwrap();
        assert_eq!(original.arch.name, arch);
        // GGUF stores eps and rope bases as f32.
        let f32s = |c: &Config| Config {
            rms_norm_eps: c.rms_norm_eps as f32 as f64,
            rope_theta: c.rope_theta as f32 as f64,
            rope_scaling: f32_scaling(c.rope_scaling),
            // A GGUF without tokenizer metadata names no special ids.
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            ..c.clone()
        };
        assert_eq!(f32s(&again), f32s(&original), "{folder}: config");

        let (a, b) = (Source::open(&src).unwrap(), Source::open(&back).unwrap());
        let (Source::Hf(a), Source::Hf(b)) = (&a, &b) else {
            unreachable!()
        };
        assert_eq!(a.tensor_infos(), b.tensor_infos(), "{folder}: tensors");
        for (name, _, _) in a.tensor_infos() {
            let (x, y) = (a.raw(&name).unwrap().0, b.raw(&name).unwrap().0);
            if arch == "gemma3" && name.contains("norm") {
                let f = |b: &[u8]| -> Vec<f32> {
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                };
                let err = max_abs_diff(&f(x), &f(y));
                assert!(err <= 2f32.powi(-23), "{folder} {name}: {err}");
            } else {
                assert!(x == y, "{folder} {name}: not bit for bit");
            }
        }

        let gold = golden(&format!("tiny/{folder}/golden.safetensors"));
        let input = ids(&gold["input_ids"]);
        let (l0, l1) = (logits(&src, &input), logits(&back, &input));
        let drift = max_abs_diff(&l0, &l1);
        assert!(drift < 1e-5, "{folder}: round trip moved logits by {drift}");
        let err = max_abs_diff(&l1, &floats(&gold["logits"]));
        assert!(err < logit_tol(folder), "{folder}: {err} from transformers");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// Every registered architecture has a tiny golden model here (a new one must bring
/// one), and the registry's names are unique.
#[test]
fn every_registered_architecture_is_covered() {
    let mut names: Vec<&str> = REGISTRY.iter().map(|a| a.name).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "duplicate architecture names");
    for a in REGISTRY {
        // Mistral is llama's forward pass with a window; its HF/GGUF path is llama's.
        if a.name == "mistral" {
            continue;
        }
        assert!(
            TINY.iter().any(|(_, arch)| *arch == a.name),
            "{}: no tiny golden model round-trips",
            a.name
        );
    }
}

/// Outside `models/`, no source names an architecture: every other part asks the
/// registry. String literals equal to a registered name (engine, GGUF or HF) are
/// refused, except the GGUF tokenizer-kind constants in `tokenizer.rs`, which only
/// look like architecture names. Test code is not checked.
#[test]
fn no_source_outside_models_names_an_architecture() {
    let names: Vec<String> = REGISTRY
        .iter()
        .flat_map(|a| {
            [a.name, a.gguf_name]
                .into_iter()
                .chain(a.hf_names.iter().copied())
                .map(|n| format!("\"{n}\""))
        })
        .collect();
    let root = repo_root();
    let mut offenders = Vec::new();
    let mut stack = vec![root.join("crates"), root.join("src-tauri")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if p.is_dir() {
                let skip =
                    rel.ends_with("/tests") || rel.ends_with("/benches") || rel.contains("models");
                if !skip {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || rel.contains("test") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // Unit tests sit at the end of a file, after `#[cfg(test)]`.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, line) in code.lines().enumerate() {
                let tokenizer_kind = rel.ends_with("tokenizer.rs")
                    && line.trim_start().starts_with("pub const MODEL_")
                    || line.trim_start().starts_with("const PRE_");
                if tokenizer_kind || line.trim_start().starts_with("//") {
                    continue;
                }
                if let Some(n) = names.iter().find(|n| line.contains(n.as_str())) {
                    offenders.push(format!("{rel}:{}: {n}", i + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "architecture names outside models/:\n{}",
        offenders.join("\n")
    );
}

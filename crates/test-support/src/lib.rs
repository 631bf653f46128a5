//! What Unicorn's tests share, in one place: where the fixtures in this repository
//! (`tests/golden`, see its README) and the real test models
//! (`scripts/fetch-test-models`) are, readers for the golden safetensors, scratch
//! folders, a fake Hugging Face Hub ([`fake_hub`]) and a way to run the `unicorn`
//! binary ([`cli`]). Every path resolves inside the checkout or the test-model cache:
//! a clone with nothing beside it passes its tests.

pub mod cli;
pub mod fake_hub;

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// SmolLM2-135M-Instruct Q4_1, the demo model.
pub const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Gemma 3 270M Q4_K_M.
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
/// Gemma 3's real tokenizer.json.
pub const GEMMA_TOKENIZER: &str = "gemma3-tokenizer.json";
/// Public-domain prose for perplexity.
pub const JARGON: &str = "jargon.txt";

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file or folder of the test-model cache (`UNICORN_TEST_MODELS`, default
/// `~/.cache/unicorn/test-models`). A missing one fails the test with instructions,
/// never skips it.
pub fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("UNICORN_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_home().join("unicorn/test-models"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-models first",
        p.display()
    );
    p
}

/// Where scripts/setup installs the Python packages the tests drive (PyPI `gguf`,
/// `openai`, `anthropic`, `jsonschema`), kept out of the system Python.
pub fn python_path() -> PathBuf {
    std::env::var_os("UNICORN_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_home().join("unicorn/python"))
}

/// `XDG_CACHE_HOME`, else `~/.cache`: where scripts/setup and
/// scripts/fetch-test-models keep what they fetch.
pub fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
}

/// The golden reference data, `tests/golden` in this repository.
pub fn golden_dir() -> PathBuf {
    let p = repo_root().join("tests/golden");
    assert!(p.is_dir(), "golden data not found at {}", p.display());
    p
}

/// A path under [`golden_dir`], which must exist.
pub fn golden_path(rel: &str) -> PathBuf {
    let p = golden_dir().join(rel);
    assert!(p.exists(), "golden file {} not found", p.display());
    p
}

/// The tensors of a golden safetensors file.
pub fn golden(rel: &str) -> HashMap<String, Tensor> {
    let p = golden_path(rel);
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A tiny model's folder: `tests/golden/tiny/<arch>`.
pub fn tiny(arch: &str) -> PathBuf {
    golden_path(&format!("tiny/{arch}"))
}

/// The tiny Gemma 3 vision model as a folder that chats: its golden weights and
/// config with the character-level tokenizer and Gemma 3's chat template of
/// `tests/fixtures/tiny-vision-chat`, assembled under `dir` (returned).
pub fn tiny_vision_chat(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-vision-chat");
    std::fs::create_dir_all(&out).unwrap();
    let weights = tiny("gemma3_vision");
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(weights.join(f), out.join(f)).unwrap();
    }
    let fixture = repo_root().join("tests/fixtures/tiny-vision-chat");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(f), out.join(f)).unwrap();
    }
    out
}

/// A tiny model's prompt ids and transformers' 16 greedy ids after it (golden.json).
pub fn tiny_greedy(arch: &str) -> (Vec<u32>, Vec<u64>) {
    let p = golden_path(&format!("tiny/{arch}/golden.json"));
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let list = |key: &str| -> Vec<u64> {
        g[key]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no {key}", p.display()))
            .iter()
            .map(|v| v.as_u64().expect("an id"))
            .collect()
    };
    let input = list("input_ids").into_iter().map(|i| i as u32).collect();
    (input, list("greedy_ids"))
}

/// Token ids of an int64 golden tensor.
pub fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// Values of an f32 tensor.
pub fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// A fresh, empty scratch folder for one test, unique to this process; the test
/// removes it when done (a failure leaves it to look at).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unicorn-test-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in program `dir/name`: a shell script that exits 9 unless its first
/// argument is `arg`, then runs `body` (a CUDA build's probe, played).
#[cfg(unix)]
pub fn stand_in(dir: &Path, name: &str, arg: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("#!/bin/sh\n[ \"$1\" = {arg} ] || exit 9\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// One case of the bad-input corpus (`tests/bad-inputs/cases.json`, written by
/// `scripts/make-bad-inputs`).
#[derive(Debug, Clone)]
pub struct BadInput {
    /// File or folder name in the corpus (or an absolute path: `/dev/zero`).
    pub name: String,
    /// The class of fault, for the report.
    pub class: String,
    /// How it is used: `sound` (must work), `load` (bad headers), `weights` (bad
    /// values), `chat` (a chat turn fails), `fifo` (a pipe made at test time).
    pub kind: String,
    /// What the one error line must say.
    pub want: String,
}

impl BadInput {
    /// Where the case is in the corpus.
    pub fn path(&self) -> PathBuf {
        if self.name.starts_with('/') {
            PathBuf::from(&self.name)
        } else {
            repo_root().join("tests/bad-inputs").join(&self.name)
        }
    }
}

/// Every case of the bad-input corpus.
pub fn bad_inputs() -> Vec<BadInput> {
    let p = repo_root().join("tests/bad-inputs/cases.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| BadInput {
            name: c["name"].as_str().unwrap().into(),
            class: c["class"].as_str().unwrap().into(),
            kind: c["use"].as_str().unwrap().into(),
            want: c["want"].as_str().unwrap().into(),
        })
        .collect()
}

//! Locations of the real test models (scripts/fetch-test-models) and the golden data
//! (../shared/golden), and readers for the golden safetensors.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

pub const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

/// The test-model cache. Missing models are a test failure with instructions, never a skip.
pub fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("UNICORN_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            home.join("unicorn/test-models")
        });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-models first",
        p.display()
    );
    p
}

pub fn golden_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = std::env::var_os("UNICORN_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/golden"));
    assert!(p.exists(), "golden data not found at {}", p.display());
    p
}

pub fn golden(file: &str) -> HashMap<String, Tensor> {
    let p = golden_dir().join(file);
    candle_core::safetensors::load(&p, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

pub fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Logit tolerance of the tiny goldens (golden README): 2e-4 absolute.
pub const LOGIT_TOL: f32 = 2e-4;

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Logits of one no-cache forward pass over the golden's 40 input ids.
pub fn tiny_logits(arch: &str, model: &unicorn_engine::models::Model) -> Vec<f32> {
    let gold = golden(&format!("tiny/{arch}/golden.safetensors"));
    let input = ids(&gold["input_ids"]);
    let mut cache = model.new_cache();
    floats(&model.forward(&input, &mut cache, 0).unwrap())
}

/// A tiny model against its transformers golden: all 40 positions' logits within
/// [`LOGIT_TOL`], then 16 greedy steps through the KV-cache decode path with each
/// step's logits within tolerance and the ids exact.
pub fn check_tiny_golden(arch: &str, model: &unicorn_engine::models::Model) {
    let gold = golden(&format!("tiny/{arch}/golden.safetensors"));
    let input = ids(&gold["input_ids"]);
    let max = max_abs_diff(&tiny_logits(arch, model), &floats(&gold["logits"]));
    assert!(max < LOGIT_TOL, "{arch}: max |Δlogit| {max}");
    let want_ids = ids(&gold["greedy_ids"]);
    let want_step_logits = floats(&gold["greedy_logits"]);
    let vocab = want_step_logits.len() / want_ids.len();
    let mut cache = model.new_cache();
    let mut logits = model.forward(&input, &mut cache, input.len() - 1).unwrap();
    let mut got_ids = Vec::new();
    for step in 0..want_ids.len() {
        let l = floats(&logits);
        let d = max_abs_diff(&l, &want_step_logits[step * vocab..(step + 1) * vocab]);
        assert!(
            d < LOGIT_TOL,
            "{arch}: decode step {step}: max |Δlogit| {d}"
        );
        let next = unicorn_engine::sampler::argmax(&l);
        got_ids.push(next);
        logits = model.forward(&[next], &mut cache, 0).unwrap();
    }
    assert_eq!(got_ids, want_ids, "{arch}: greedy ids");
}

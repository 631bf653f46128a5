//! The tiny random models of tests/golden/tiny loaded as the HF folders they are
//! (config.json + model.safetensors, no tokenizer) and compared with transformers'
//! float32 logits and greedy ids; plus the folder variants users have (transformers
//! 5 configs, multimodal key layout, BF16/F16 weights, shards) and malformed folders.

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use unicorn_engine::models::Model;
use unicorn_engine::source::Source;
use unicorn_engine::LoadedModel;

const ARCHS: [&str; 7] = [
    "llama",
    "gemma3_text",
    "gemma3_multimodal_layout",
    "qwen2",
    "qwen3",
    "llama3_rope",
    "qwen2_yarn",
];

fn tiny(arch: &str) -> PathBuf {
    golden_dir().join("tiny").join(arch)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unicorn-hf-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn load(dir: &Path) -> Model {
    f32_cache(Model::load(&Source::open(dir).unwrap(), &Device::Cpu).unwrap())
}

fn load_err(dir: &Path) -> String {
    match Source::open(dir).and_then(|s| Model::load(&s, &Device::Cpu)) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_tiny_model_matches_transformers_logits_and_greedy_ids() {
    for arch in ARCHS {
        // Through the same entry point as the CLI: no tokenizer files, ids only.
        let m = LoadedModel::load(&tiny(arch), &f32_options()).unwrap();
        assert!(!m.has_tokenizer(), "{arch}");
        assert!(m
            .tokenizer()
            .err()
            .unwrap()
            .to_string()
            .contains("no tokenizer"));
        check_tiny_golden(arch, m.model());
    }
}

/// Mistral is llama with an optional window on every layer: with `sliding_window`
/// null the tiny llama's weights must give the llama golden; with a window of 8 the
/// 40-token logits must change (the window is applied) while the first 8 positions,
/// which the window cannot reach past, stay the same.
#[test]
fn mistral_is_llama_with_an_optional_window() {
    let w = golden("tiny/llama/model.safetensors");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny("llama").join("config.json")).unwrap())
            .unwrap();
    cfg["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    cfg["model_type"] = "mistral".into();
    let dir = scratch("mistral");
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    cfg["sliding_window"] = serde_json::Value::Null;
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    check_tiny_golden("llama", &load(&dir));
    cfg["sliding_window"] = 8.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let windowed = tiny_logits("llama", &load(&dir));
    let full = floats(&golden("tiny/llama/golden.safetensors")["logits"]);
    assert!(max_abs_diff(&windowed[..8 * 512], &full[..8 * 512]) < LOGIT_TOL);
    assert!(max_abs_diff(&windowed, &full) > 0.1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn multimodal_layout_gives_the_text_models_logits_exactly() {
    let text = tiny_logits("gemma3_text", &load(&tiny("gemma3_text")));
    let mm = tiny_logits(
        "gemma3_multimodal_layout",
        &load(&tiny("gemma3_multimodal_layout")),
    );
    assert_eq!(text, mm);
}

/// The same weights under `model.language_model.*`, as transformers 5 saves them.
#[test]
fn transformers5_key_layout_and_config_load_the_same_model() {
    for arch in ARCHS {
        let dir = scratch(&format!("v5-{arch}"));
        std::fs::copy(tiny(arch).join("config.v5.json"), dir.join("config.json")).unwrap();
        let w = golden(&format!("tiny/{arch}/model.safetensors"));
        let w: HashMap<String, Tensor> = w
            .into_iter()
            .map(|(k, v)| {
                let k = match k.strip_prefix("language_model.model.") {
                    Some(rest) => format!("model.language_model.{rest}"),
                    None => k,
                };
                (k, v)
            })
            .collect();
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
        let want = tiny_logits(arch, &load(&tiny(arch)));
        assert_eq!(tiny_logits(arch, &load(&dir)), want, "{arch}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// BF16 and F16 checkpoints run through the half-precision kernel; the result must
/// equal an F32 run on the same (rounded) weights, and stay near the F32 golden.
#[test]
fn bf16_and_f16_weights_compute_in_f32() {
    for arch in ["llama", "gemma3_text", "qwen3"] {
        let w = golden(&format!("tiny/{arch}/model.safetensors"));
        for dtype in [DType::BF16, DType::F16] {
            let half: HashMap<String, Tensor> = w
                .iter()
                .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
                .collect();
            let rounded: HashMap<String, Tensor> = half
                .iter()
                .map(|(k, v)| (k.clone(), v.to_dtype(DType::F32).unwrap()))
                .collect();
            let (dh, df) = (
                scratch(&format!("{arch}-{dtype:?}")),
                scratch(&format!("{arch}-{dtype:?}-f32")),
            );
            for (d, t) in [(&dh, &half), (&df, &rounded)] {
                std::fs::copy(tiny(arch).join("config.json"), d.join("config.json")).unwrap();
                candle_core::safetensors::save(t, d.join("model.safetensors")).unwrap();
            }
            let got = tiny_logits(arch, &load(&dh));
            let want = tiny_logits(arch, &load(&df));
            let d = max_abs_diff(&got, &want);
            assert!(
                d < 1e-4,
                "{arch} {dtype:?}: half kernel vs f32 on the same weights: {d}"
            );
            let gold = floats(&golden(&format!("tiny/{arch}/golden.safetensors"))["logits"]);
            let drift = max_abs_diff(&got, &gold);
            assert!(drift < 1.0, "{arch} {dtype:?}: {drift} from the f32 golden");
            std::fs::remove_dir_all(&dh).ok();
            std::fs::remove_dir_all(&df).ok();
        }
    }
}

fn write_sharded(arch: &str, dir: &Path) -> HashMap<String, String> {
    std::fs::copy(tiny(arch).join("config.json"), dir.join("config.json")).unwrap();
    let w = golden(&format!("tiny/{arch}/model.safetensors"));
    let mut names: Vec<&String> = w.keys().collect();
    names.sort();
    let mut shards = [HashMap::new(), HashMap::new()];
    let mut map = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        let s = i % 2;
        shards[s].insert((*n).clone(), w[*n].clone());
        map.insert(
            (*n).clone(),
            format!("model-0000{}-of-00002.safetensors", s + 1),
        );
    }
    for (s, t) in shards.iter().enumerate() {
        let p = dir.join(format!("model-0000{}-of-00002.safetensors", s + 1));
        candle_core::safetensors::save(t, p).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    map
}

#[test]
fn sharded_checkpoint_equals_single_file() {
    let dir = scratch("sharded");
    write_sharded("qwen2", &dir);
    assert_eq!(
        tiny_logits("qwen2", &load(&dir)),
        tiny_logits("qwen2", &load(&tiny("qwen2")))
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn malformed_folders_are_errors_naming_file_and_tensor() {
    // Missing shard.
    let dir = scratch("missing-shard");
    write_sharded("llama", &dir);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );

    // Bad header: a truncated file.
    let dir = scratch("bad-header");
    std::fs::copy(tiny("llama").join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(tiny("llama").join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("safetensors"),
        "{e}"
    );

    // Shape mismatch, wrong dtype, NaN: one tensor changed each time.
    let w = golden("tiny/llama/model.safetensors");
    let name = "model.layers.1.mlp.up_proj.weight";
    let cases: Vec<(&str, Tensor, &str)> = vec![
        ("shape", w[name].narrow(0, 0, 100).unwrap(), "shape"),
        ("dtype", w[name].to_dtype(DType::I64).unwrap(), "I64"),
        (
            "nan",
            {
                let mut v = floats(&w[name]);
                v[77] = f32::NAN;
                Tensor::from_vec(v, w[name].dims(), &Device::Cpu).unwrap()
            },
            "element 77 is NaN",
        ),
    ];
    for (tag, t, want) in cases {
        let dir = scratch(tag);
        std::fs::copy(tiny("llama").join("config.json"), dir.join("config.json")).unwrap();
        let mut w = w.clone();
        w.insert(name.to_string(), t);
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
        let e = load_err(&dir);
        assert!(
            e.contains(name) && e.contains("model.safetensors") && e.contains(want),
            "{tag}: {e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    // A missing tensor, an unsupported architecture, no config at all.
    let dir = scratch("missing-tensor");
    std::fs::copy(tiny("llama").join("config.json"), dir.join("config.json")).unwrap();
    let mut w2 = w.clone();
    w2.remove(name);
    candle_core::safetensors::save(&w2, dir.join("model.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains(name) && e.contains("missing"), "{e}");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("config.json") && e.contains("MambaForCausalLM"),
        "{e}"
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = match Source::open(&dir) {
        Ok(_) => panic!("opened a folder without config.json"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("config.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

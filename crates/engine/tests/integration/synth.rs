//! Synthetic models: the built-in shapes are the public models' (checked against the
//! real test models' metadata where we have them, and against the published numbers
//! where we do not), and what `synth` writes loads, runs and quantizes.

use crate::common::{model, GEMMA, SMOLLM};
use std::path::{Path, PathBuf};
use unicorn_engine::formats::nf4::export as nf4_export;
use unicorn_engine::gguf::GgufFile;
use unicorn_engine::hf::config::HfConfig;
use unicorn_engine::models::{Config, Model};
use unicorn_engine::quantize::{quantize, types::QuantType};
use unicorn_engine::source::Source;
use unicorn_engine::synth;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unicorn-synth-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::remove_file(&d).ok();
    d
}

/// `config` parsed as the engine parses a folder's config.json.
fn parsed(config: &serde_json::Value, name: &str) -> HfConfig {
    let d = temp(name);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("config.json");
    std::fs::write(&p, config.to_string()).unwrap();
    let c = HfConfig::open(&p).unwrap();
    std::fs::remove_dir_all(&d).ok();
    c
}

#[test]
fn built_in_shapes_match_the_real_models_metadata() {
    // Special ids come from the tokenizer (absent from a synthetic model's file);
    // GGUF stores eps and rope bases as f32.
    let comparable = |c: &Config| Config {
        rms_norm_eps: c.rms_norm_eps as f32 as f64,
        rope_theta: c.rope_theta as f32 as f64,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        ..c.clone()
    };
    let g = GgufFile::open(&model(GEMMA)).unwrap();
    let real = Config::from_gguf(&g).unwrap();
    let ours = synth::config("gemma3", "270m").unwrap();
    assert_eq!(comparable(&ours), comparable(&real));
    // The written config.json reads back as the same configuration.
    let again = Config::from_hf(&parsed(&ours.to_hf_json("bfloat16"), "g")).unwrap();
    assert_eq!(again, ours);

    let s = GgufFile::open(&model(SMOLLM)).unwrap();
    let real = Config::from_gguf(&s).unwrap();
    let ours = synth::config("llama", "135m").unwrap();
    // SmolLM2's GGUF says a context of 8192 and no tie flag; compare the shape.
    let key = |c: &Config| {
        (
            c.shape(),
            c.num_layers(),
            c.vocab_size(),
            c.rope_theta,
            c.rms_norm_eps as f32,
        )
    };
    assert_eq!(key(&ours), key(&real));
}

/// gemma-3-4b-it's text config as the issue gives it, and the four Gemma sizes'
/// parameter counts (text weights only, tied embeddings).
#[test]
fn gemma3_sizes_have_the_published_shapes() {
    let cfg = synth::config("gemma3", "4b").unwrap();
    assert_eq!(cfg.num_layers(), 34);
    assert_eq!(cfg.shape(), (2560, 8, 4, 256, 10_240));
    assert_eq!(cfg.vocab_size(), 262_208);
    assert_eq!(cfg.layer_windows.iter().flatten().next(), Some(&1024));
    assert_eq!(
        cfg.rope_scaling,
        unicorn_engine::attention::RopeScaling::Linear { factor: 8.0 }
    );
    let windows = cfg.layer_windows();
    assert_eq!(windows.iter().filter(|w| w.is_none()).count(), 34 / 6);

    for (shape, billions) in [("1b", 1.0), ("4b", 3.88), ("12b", 11.77), ("27b", 27.0)] {
        let c = synth::config("gemma3", shape).unwrap();
        let plan = synth::plan(&c, "BF16");
        let n: u64 = plan
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(n, c.parameters(), "{shape}: the plan is the inventory");
        let got = n as f64 / 1e9;
        assert!(
            (got - billions).abs() / billions < 0.03,
            "{shape}: {got:.3} B"
        );
    }
    let e = synth::config("gemma3", "3b").unwrap_err().to_string();
    assert!(
        e.contains("known: llama: 135m, 360m, 1.7b, 3.2-1b, 3.2-3b, 3.1-8b; qwen3:"),
        "{e}"
    );
    assert!(e.contains("gemma3: 270m, 1b, 4b, 12b, 27b"), "{e}");
}

/// A small shape from a CONFIG.json: the folder loads and runs, is the same model when
/// written again with the same seed, and quantizes to Q4_K_M and NF4 that run close to
/// it. Nothing is left when cancelled.
#[test]
fn a_synthetic_folder_runs_and_quantizes() {
    let mut config = synth::config("gemma3", "270m")
        .unwrap()
        .to_hf_json("bfloat16");
    for (k, v) in [
        ("hidden_size", 256),
        ("intermediate_size", 512),
        ("num_hidden_layers", 2),
        ("vocab_size", 1024),
        ("num_attention_heads", 2),
    ] {
        config[k] = v.into();
    }
    config["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"]);
    let shape = temp("config.json");
    std::fs::write(&shape, config.to_string()).unwrap();
    let config = synth::config("gemma3", shape.to_str().unwrap()).unwrap();

    let write = |name: &str, seed: u64| {
        let out = temp(name);
        let r = synth::write(&config, "bf16", seed, &out, &mut |_| true).unwrap();
        (out, r)
    };
    let (a, report) = write("a", 7);
    assert_eq!(report.shards, 1);
    let (b, _) = write("b", 7);
    let (c, _) = write("c", 8);
    let logits = |p: &Path| {
        let src = Source::open(p).unwrap();
        let m = Model::load(&src, &candle_core::Device::Cpu).unwrap();
        let mut cache = m.new_cache();
        let l = m.forward(&[2, 17, 300, 5], &mut cache, 3).unwrap();
        l.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let la = logits(&a);
    assert_eq!(la.len(), 1024);
    assert!(la.iter().all(|v| v.is_finite()));
    assert_eq!(la, logits(&b), "same seed, same model");
    assert_ne!(la, logits(&c), "another seed, another model");

    let q = temp("q.gguf");
    quantize(&a, &q, QuantType::Q4KM, false, &mut |_| true).unwrap();
    // Generated where quantized, from a folder of headers only (its files are holes):
    // the same bytes as quantizing the written folder.
    let headers = temp("headers");
    synth::write_headers(&config, "bf16", None, &headers).unwrap();
    let st = headers.join("model.safetensors");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&st).unwrap();
    assert_eq!(
        meta.len(),
        std::fs::metadata(a.join("model.safetensors"))
            .unwrap()
            .len()
    );
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "{} blocks",
        meta.blocks()
    );
    let direct = temp("direct.gguf");
    unicorn_engine::quantize::quantize_synthetic(
        &headers,
        7,
        &direct,
        QuantType::Q4KM,
        &mut |_| true,
    )
    .unwrap();
    assert!(
        std::fs::read(&direct).unwrap() == std::fs::read(&q).unwrap(),
        "byte-identical"
    );
    std::fs::remove_dir_all(&headers).ok();
    std::fs::remove_file(&direct).ok();
    let n = temp("nf4");
    nf4_export::export(&a, &n, 64, true, false, &mut |_| true).unwrap();
    // Quantized, it is still this model: far closer to it than another seed's.
    let rel = |x: &[f32]| {
        let d: f32 = la.iter().zip(x).map(|(a, b)| (a - b).powi(2)).sum();
        (d / la.iter().map(|a| a * a).sum::<f32>()).sqrt()
    };
    let other = rel(&logits(&c));
    for p in [&q, &n] {
        let e = rel(&logits(p));
        eprintln!(
            "{}: relative logit error {e:.3}, another seed {other:.3}",
            p.display()
        );
        assert!(e < other / 3.0, "{}: {e} vs {other}", p.display());
    }
    // The quantized GGUF has no tokenizer, and runs from ids.
    let loaded = unicorn_engine::session::LoadedModel::load(&q, &Default::default()).unwrap();
    assert!(!loaded.has_tokenizer());

    let cancelled = temp("cancelled");
    let e = synth::write(&config, "bf16", 0, &cancelled, &mut |_| false).unwrap_err();
    assert!(matches!(e, unicorn_engine::Error::Cancelled), "{e}");
    assert!(!cancelled.exists());
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("cancelled.partial")
        })
        .count();
    assert_eq!(leftovers, 0);
    let e = synth::write(&config, "bf16", 0, &a, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    for p in [&a, &b, &c, &n] {
        std::fs::remove_dir_all(p).ok();
    }
    std::fs::remove_file(&q).ok();
    std::fs::remove_file(&shape).ok();
}

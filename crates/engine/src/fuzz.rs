//! Entry points for coverage-guided fuzzing (`fuzz/`, cargo-fuzz) and for replaying
//! its corpus in the tests (`tests/corpus`): each takes arbitrary bytes and must
//! return, whatever they hold, without a panic, a hang or an unbounded allocation.
//! Errors are the expected outcome for most inputs; they are returned as text so a
//! replay can check that each names its file.

use crate::gguf::GgufFile;
use crate::models::{Config, Model};
use crate::source::Source;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// A GGUF file: header, configuration and tensor layout, tokenizer, weights, and one
/// forward pass when the model is small.
pub fn gguf(data: &[u8]) -> Result<(), String> {
    let g = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()).map_err(s)?;
    let config = Config::from_gguf(&g).map_err(s)?;
    if g.get("tokenizer.ggml.model").is_some() {
        let t = crate::tokenizer::Tokenizer::from_gguf(&g).map_err(s)?;
        t.encode("Hello, world! 123").map_err(s)?;
    }
    run(Source::Gguf(g), &config)
}

/// Loads and (if it is small) runs a model whose configuration was read.
fn run(src: Source, config: &Config) -> Result<(), String> {
    let _ = Config::from_source(&src).map_err(s)?;
    let model = Model::load(&src, &Device::Cpu).map_err(s)?;
    // A forward pass costs what the shapes say; only tiny ones are run.
    if config.parameters() < 5_000_000 {
        let mut cache = model.new_cache();
        model.forward(&[0, 1], &mut cache, 0).map_err(s)?;
    }
    Ok(())
}

/// An HF folder written from `data`: parts separated by a line `--8<--`, written as
/// `config.json`, `model.safetensors`, `tokenizer_config.json` and
/// `model.safetensors.index.json` in that order (absent parts are not written).
pub fn hf_folder(data: &[u8]) -> Result<(), String> {
    let dir = scratch();
    const NAMES: [&str; 4] = [
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "model.safetensors.index.json",
    ];
    let mut parts = split(data);
    for name in NAMES {
        let p = dir.join(name);
        match parts.next() {
            Some(bytes) => std::fs::write(&p, bytes).map_err(|e| e.to_string())?,
            None => {
                std::fs::remove_file(&p).ok();
            }
        }
    }
    let src = Source::open(&dir).map_err(s)?;
    let config = Config::from_source(&src).map_err(s)?;
    if let Source::Hf(h) = &src {
        crate::hf::tokenizer_files::read(h.dir(), h.config().json()).map_err(s)?;
    }
    run(src, &config)
}

/// A tokenizer.json, then a chat template rendered with it.
pub fn tokenizer_and_template(data: &[u8]) -> Result<(), String> {
    let mut parts = split(data);
    let tok = parts.next().unwrap_or_default();
    let template = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let t = crate::template::ChatTemplate::new(&template, "fuzz", false).map_err(s);
    if let Ok(t) = t {
        let msgs = [
            crate::Message::system("Be brief."),
            crate::Message::user("Hello"),
        ];
        let _ = t.render(&msgs, true, "<s>", "</s>");
    }
    let t = crate::tokenizer::Tokenizer::from_bytes(Path::new("fuzz.json"), tok, None, None, None)
        .map_err(s)?;
    let ids = t.encode("Hello, world! ünïcode 123").map_err(s)?;
    t.decode(&ids, true).map_err(s)?;
    Ok(())
}

/// A bitsandbytes NF4 matrix [64, 64] in an HF folder whose quant state JSON (first
/// part), `absmax` bytes (second), `nested_absmax` (third) and packed codes (fourth)
/// come from `data`, the rest as bitsandbytes writes them.
pub fn nf4_state(data: &[u8]) -> Result<(), String> {
    use crate::hf::writer::{PlannedTensor, SafetensorsWriter};
    let dir = scratch();
    let mut parts = split(data);
    let mut part = |default: Vec<u8>| parts.next().map_or(default, <[u8]>::to_vec);
    let name = "model.layers.0.mlp.down_proj.weight";
    let state = part(
        br#"{"quant_type":"nf4","blocksize":64,"dtype":"float32","shape":[64,64],"nested_blocksize":256,"nested_offset":0.1}"#.to_vec(),
    );
    let absmax = part(vec![128; 64]);
    let nested = part(1f32.to_le_bytes().to_vec());
    let packed = part(vec![0x17; 2048]);
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let tensors: Vec<(String, &str, Vec<u8>)> = vec![
        (name.into(), "U8", packed),
        (format!("{name}.absmax"), "U8", absmax),
        (format!("{name}.nested_absmax"), "F32", nested),
        (
            format!("{name}.nested_quant_map"),
            "F32",
            f32s(&crate::formats::nf4::dynamic_map()),
        ),
        (
            format!("{name}.quant_map"),
            "F32",
            f32s(&crate::formats::nf4::NF4),
        ),
        (format!("{name}.quant_state.bitsandbytes__nf4"), "U8", state),
    ];
    let plan = tensors
        .iter()
        .map(|(n, d, b)| PlannedTensor {
            name: n.clone(),
            dtype: d,
            shape: vec![b.len() / if *d == "F32" { 4 } else { 1 }],
        })
        .collect();
    let mut w = SafetensorsWriter::create(&dir.join("model.safetensors"), plan).map_err(s)?;
    for t in w.plan().to_vec() {
        let bytes = &tensors.iter().find(|x| x.0 == t.name).expect("planned").2;
        w.write_next(&bytes[..t.bytes()]).map_err(s)?;
    }
    w.finish().map_err(s)?;
    // Any registered architecture with a public shape, made tiny.
    let arch = crate::models::REGISTRY
        .iter()
        .find(|a| !a.shapes.is_empty())
        .expect("an architecture with shapes");
    let config = Config {
        hidden_size: 64,
        intermediate_size: 64,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        head_dim: 32,
        vocab_size: 32,
        layer_windows: vec![None],
        ..(arch.shapes[0].config)()
    };
    let json = serde_json::to_vec(&config.to_hf_json("float32")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), json).map_err(|e| e.to_string())?;
    let src = Source::open(&dir).map_err(s)?;
    let Source::Hf(h) = &src else {
        unreachable!("a folder")
    };
    let w = crate::formats::nf4::load::weight(h, name, (64, 64), &Device::Cpu).map_err(s)?;
    let x = candle_core::Tensor::ones((1, 64), candle_core::DType::F32, &Device::Cpu)
        .map_err(|e| e.to_string())?;
    w.forward(&x).map_err(|e| e.to_string())?;
    Ok(())
}

fn s(e: crate::Error) -> String {
    e.to_string()
}

/// The parts of `data` between lines `--8<--`.
fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    const SEP: &[u8] = b"\n--8<--\n";
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let d = rest?;
        match d.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                rest = Some(&d[i + SEP.len()..]);
                Some(&d[..i])
            }
            None => {
                rest = None;
                Some(d)
            }
        }
    })
}

/// This thread's scratch folder for folder-shaped inputs (reused: fuzzing runs
/// millions of inputs).
fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "unicorn-fuzz-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).ok();
    d
}

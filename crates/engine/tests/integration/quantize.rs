//! `quantize` end to end on real weights: the tiny HF models of every architecture
//! (layout conventions: llama q/k permutation, Gemma norms, biases, q/k norms), and
//! the two real test models converted to F32 folders and quantized to Q8_0, Q4_K_M
//! and Q4_0 (types per tensor, sizes, tokenizer metadata, quality).

use crate::common::*;
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use unicorn_engine::compare::compare;
use unicorn_engine::convert::{gguf_to_hf, OutDType};
use unicorn_engine::gguf::GgufFile;
use unicorn_engine::models::Model;
use unicorn_engine::quantize::types::{tensor_type, QuantType, TensorRole};
use unicorn_engine::quantize::{quantize, QuantizeReport};
use unicorn_engine::source::Source;
use unicorn_engine::tokenizer::Tokenizer;
use unicorn_engine::{LoadOptions, LoadedModel};

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantize-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn q(src: &Path, to: QuantType, name: &str) -> (PathBuf, QuantizeReport) {
    let out = out_dir().join(name);
    let r = quantize(src, &out, to, true, &mut |_| true).unwrap();
    (out, r)
}

/// F16 keeps every tiny model within 0.2 logits of transformers (measured ≤ 0.07; a
/// wrong q/k permutation, norm offset or missing bias costs several logits). Random
/// tiny nets amplify weight error, so Q8_0 gets 3 (measured ≤ 1.8).
#[test]
fn tiny_hf_folders_quantize_to_gguf_that_runs_like_transformers() {
    for arch in [
        "llama",
        "gemma3_text",
        "gemma3_multimodal_layout",
        "qwen2",
        "qwen3",
        "llama3_rope",
        "qwen2_yarn",
    ] {
        let src = golden_dir().join("tiny").join(arch);
        // The scaled-rope models run 96 tokens, not 40, and amplify more (measured
        // F16 ≤ 0.16, Q8_0 ≤ 3.5).
        let long = arch.ends_with("rope") || arch.ends_with("yarn");
        let q8_tol = if long { 5.0 } else { 3.0 };
        for (to, tol) in [(QuantType::F16, 0.2), (QuantType::Q8_0, q8_tol)] {
            let (out, r) = q(&src, to, &format!("tiny-{arch}-{}.gguf", to.name()));
            assert!(
                r.warnings.iter().any(|w| w.contains("tokenizer")),
                "{arch}: {:?}",
                r.warnings
            );
            let m = Model::load(&Source::open(&out).unwrap(), &Device::Cpu).unwrap();
            let got = tiny_logits(arch, &m);
            let want = floats(&golden(&format!("tiny/{arch}/golden.safetensors"))["logits"]);
            let d = max_abs_diff(&got, &want);
            eprintln!("{arch} {}: max |Δlogit| {d}", to.name());
            assert!(d < tol, "{arch} {}: {d}", to.name());
            // No vision tensors, nothing left behind.
            let g = GgufFile::open(&out).unwrap();
            assert!(g
                .tensor_infos()
                .iter()
                .all(|(n, _, _)| !n.contains("vision")));
            std::fs::remove_file(&out).ok();
        }
    }
}

static SMOLLM_F32: OnceLock<PathBuf> = OnceLock::new();
static GEMMA_F32: OnceLock<PathBuf> = OnceLock::new();

fn f32_folder(gguf: &str, cell: &'static OnceLock<PathBuf>) -> &'static Path {
    cell.get_or_init(|| {
        let out = out_dir().join(format!("f32-{gguf}"));
        std::fs::remove_dir_all(&out).ok();
        gguf_to_hf(&model(gguf), &out, OutDType::F32, false, &mut |_| true).unwrap();
        out
    })
}

fn llama_cpp_hashes() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama-cpp-quantize-sha256.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn tensor_sha256(g: &GgufFile, name: &str) -> String {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let (offset, t, shape) = g.tensor_location(name).unwrap();
    let n: usize = shape.iter().product();
    let mut buf = vec![0u8; n / t.block_size() * t.type_size()];
    std::fs::File::open(g.path())
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    sha2::Sha256::digest(&buf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_real(gguf: &str, cell: &'static OnceLock<PathBuf>, case: &str) {
    let src = f32_folder(gguf, cell);
    let base = LoadedModel::load(src, &LoadOptions::default()).unwrap();
    let text = std::fs::read_to_string(golden_dir().join(format!("real/{case}.txt"))).unwrap();
    let want_ids = ids(&golden(&format!("real/{case}.safetensors"))["input_ids"]);
    for to in [QuantType::Q8_0, QuantType::Q4KM, QuantType::Q4_0] {
        let (out, r) = q(src, to, &format!("{gguf}-{}.gguf", to.name()));
        let g = GgufFile::open(&out).unwrap();
        // Every tensor has the type the rules give, and the file is its tensors.
        let cfg = unicorn_engine::models::Config::from_gguf(&g).unwrap();
        let (_, heads, kv, _, _) = cfg.shape();
        let infos = g.tensor_infos();
        let has_output = infos.iter().any(|(n, _, _)| n == "output.weight");
        for (name, t, shape) in &infos {
            let role = TensorRole {
                name,
                shape,
                n_layers: cfg.num_layers(),
                n_gqa: heads / kv,
                has_output,
            };
            assert_eq!(*t, tensor_type(to, role), "{gguf} {}: {name}", to.name());
        }
        let tensor_bytes: u64 = r.tensors.iter().map(|t| t.bytes).sum();
        let file = std::fs::metadata(&out).unwrap().len();
        assert!(
            file >= tensor_bytes && file - tensor_bytes < 16 << 20,
            "{file} vs {tensor_bytes}"
        );
        assert_eq!(g.u64("general.file_type").unwrap(), to.file_type() as u64);
        // Byte for byte what llama.cpp's llama-quantize writes from the same source
        // (hashes made by bench/llama-cpp-tensor-hashes).
        let theirs = &llama_cpp_hashes()[gguf][to.name()];
        for (name, t, _) in &infos {
            let want = &theirs[name.as_str()];
            assert_eq!(
                want[0],
                unicorn_engine::formats::ggml_type_name(*t),
                "{gguf} {}: {name}",
                to.name()
            );
            assert_eq!(
                want[1],
                tensor_sha256(&g, name),
                "{gguf} {}: {name} differs from llama.cpp's",
                to.name()
            );
        }
        // The tokenizer written from tokenizer.json gives HF's ids again.
        let tok = Tokenizer::from_gguf(&g).unwrap();
        assert_eq!(
            tok.encode_with_bos(&text).unwrap(),
            want_ids,
            "{gguf} {}: tokenizer",
            to.name()
        );
        // Quality on the golden text.
        let m = LoadedModel::load(&out, &LoadOptions::default()).unwrap();
        let c = compare(&base, &m, &text, 512, None, &mut |_| true).unwrap();
        eprintln!(
            "{gguf} → {}: {:.1} MB, {:.2} bpw, ΔPPL {:+.3} %, KLD {:.5} (p99 {:.4}), top-1 {:.1} %, {:.1} s, peak RSS {:.0} MB",
            to.name(),
            file as f64 / 1e6,
            r.bits_per_weight,
            c.delta_ppl_percent,
            c.kld_mean,
            c.kld_p99,
            c.top1_agreement * 100.0,
            r.seconds,
            r.peak_rss_bytes.unwrap_or(0) as f64 / 1e6
        );
        if to == QuantType::Q8_0 {
            assert!(
                c.delta_ppl_percent.abs() < 1.0,
                "{gguf} Q8_0: ΔPPL {} %",
                c.delta_ppl_percent
            );
            assert!(
                c.top1_agreement > 0.95,
                "{gguf} Q8_0: top-1 {}",
                c.top1_agreement
            );
        }
        assert!(c.kld_mean > 0.0 && c.kld_mean < 1.0);
        std::fs::remove_file(&out).ok();
    }
}

#[test]
fn smollm2_quantizes_to_q8_0_q4_k_m_q4_0() {
    check_real(SMOLLM, &SMOLLM_F32, "smollm2-135m-instruct__ppl_jargon");
}

#[test]
fn gemma3_quantizes_to_q8_0_q4_k_m_q4_0() {
    check_real(GEMMA, &GEMMA_F32, "gemma-3-270m__ppl_jargon");
}

/// Our Q4_K_M of the Gemma folder has exactly the tensor types of the Q4_K_M file
/// llama.cpp's llama-quantize wrote.
#[test]
fn gemma3_q4_k_m_layout_equals_llama_cpps() {
    let theirs = GgufFile::open(&model(GEMMA)).unwrap().tensor_infos();
    let src = f32_folder(GEMMA, &GEMMA_F32);
    let (out, _) = q(src, QuantType::Q4KM, "gemma-layout.gguf");
    let ours = GgufFile::open(&out).unwrap().tensor_infos();
    assert_eq!(ours.len(), theirs.len());
    for ((n1, t1, s1), (n2, t2, s2)) in ours.iter().zip(&theirs) {
        assert_eq!((n1, t1, s1), (n2, t2, s2));
    }
    std::fs::remove_file(&out).ok();
}

#[test]
fn requantizing_a_gguf_warns_and_cancelling_leaves_nothing() {
    // A folder of its own: other tests' partial files in out_dir() would count.
    let dir = out_dir().join("requant");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("requant.gguf");
    let r = quantize(&model(GEMMA), &out, QuantType::Q8_0, false, &mut |_| true).unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("already quantized")),
        "{:?}",
        r.warnings
    );
    let g = GgufFile::open(&out).unwrap();
    assert!(g
        .tensor_infos()
        .iter()
        .all(|(_, t, s)| s.len() == 1 || *t == GgmlDType::Q8_0));
    assert_eq!(g.string("tokenizer.ggml.model").unwrap(), "llama");
    // No overwrite without force; a cancelled run leaves the old file and no temp.
    let e = quantize(&model(GEMMA), &out, QuantType::Q4_0, false, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("--force"));
    let before = std::fs::read(&out).unwrap();
    let mut n = 0;
    let e = quantize(&model(GEMMA), &out, QuantType::Q4_0, true, &mut |_| {
        n += 1;
        n < 5
    })
    .unwrap_err();
    assert!(matches!(e, unicorn_engine::Error::Cancelled));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let temps = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .count();
    assert_eq!(temps, 0);
    std::fs::remove_dir_all(&dir).ok();
}

/// llama.cpp's own reader (PyPI `gguf`) sees every key and tensor we wrote, with
/// the same values, types and shapes, and the keys llama.cpp needs to load it.
#[test]
fn gguf_py_reads_every_key_and_tensor() {
    let src = f32_folder(SMOLLM, &SMOLLM_F32);
    let (out, _) = q(src, QuantType::Q4KM, "gguf-py.gguf");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/gguf_dump.py");
    let o = std::process::Command::new("python3")
        .arg(&script)
        .arg(&out)
        .env("PYTHONPATH", unicorn_test_support::python_path())
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "gguf_dump.py failed (scripts/setup installs PyPI gguf under {}): {}",
        unicorn_test_support::python_path().display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fields = d["fields"].as_object().unwrap();
    let g = GgufFile::open(&out).unwrap();
    use candle_core::quantized::gguf_file::Value;
    for key in g.metadata_keys() {
        let theirs = fields
            .get(&key)
            .unwrap_or_else(|| panic!("gguf-py does not see {key}"));
        match g.get(&key).unwrap() {
            Value::String(s) => assert_eq!(theirs, s, "{key}"),
            Value::Array(a) => {
                assert_eq!(theirs["array"], a.len(), "{key}");
                if let Some(Value::String(s)) = a.first() {
                    assert_eq!(theirs["first"], *s, "{key}");
                }
                if let Some(Value::String(s)) = a.last() {
                    assert_eq!(theirs["last"], *s, "{key}");
                }
            }
            Value::Bool(b) => assert_eq!(theirs, b, "{key}"),
            Value::F32(x) => assert!(
                (theirs.as_f64().unwrap() - *x as f64).abs() <= 1e-6 * x.abs() as f64,
                "{key}"
            ),
            v => assert_eq!(theirs.as_f64(), g.f64(&key).ok(), "{key}: {v:?}"),
        }
    }
    for k in [
        "general.architecture",
        "general.file_type",
        "llama.context_length",
        "llama.embedding_length",
        "llama.block_count",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
    ] {
        assert!(fields.contains_key(k), "missing {k}");
    }
    let ours = g.tensor_infos();
    let theirs = d["tensors"].as_array().unwrap();
    assert_eq!(theirs.len(), ours.len());
    for t in theirs {
        let name = t["name"].as_str().unwrap();
        let (_, ty, shape) = ours
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            t["type"],
            unicorn_engine::formats::ggml_type_name(*ty),
            "{name}"
        );
        let mut rev: Vec<usize> = shape.clone();
        rev.reverse();
        let got: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got, rev, "{name}");
    }
    std::fs::remove_file(&out).ok();
}

/// The prediction shown before quantizing is what quantizing then writes: tensor
/// bytes exactly for GGUF types, bits per weight within 0.002 for NF4 (a tiny model;
/// only the offset digits in the quant states vary).
#[test]
fn predictions_match_what_is_written() {
    use unicorn_engine::formats::nf4::export as nf4_export;
    use unicorn_engine::quantize::predict;
    let src = golden_dir().join("tiny/llama");
    for to in [QuantType::Q8_0, QuantType::Q4KM, QuantType::F16] {
        let p = predict(&src, to).unwrap();
        let (_, r) = q(&src, to, &format!("predict-{}", to.name()));
        let written: u64 = r.tensors.iter().map(|t| t.bytes).sum();
        assert_eq!(p.tensor_bytes, written, "{}", to.name());
        assert_eq!(p.source_bytes, r.source_bytes, "{}", to.name());
        assert!(r.output_bytes >= p.tensor_bytes);
        assert_resident(&out_dir().join(format!("predict-{}", to.name())), &p);
    }
    let out = out_dir().join("predict-nf4");
    std::fs::remove_dir_all(&out).ok();
    let p = nf4_export::predict(&src, 64, true).unwrap();
    let (source, bpw) = (p.source_bytes, p.bits_per_weight);
    let r = nf4_export::export(&src, &out, 64, true, false, &mut |_| true).unwrap();
    assert_eq!(source, r.source_bytes);
    assert!(
        (bpw - r.bits_per_weight).abs() < 0.002,
        "{bpw} vs {}",
        r.bits_per_weight
    );
    assert_resident(&out, &p);
    std::fs::remove_dir_all(&out).ok();
}

/// The predicted resident weight bytes (the memory prediction's main term) are what
/// the engine holds once it loads the output.
fn assert_resident(out: &Path, p: &unicorn_engine::quantize::Prediction) {
    let src = unicorn_engine::source::Source::open(out).unwrap();
    let m = unicorn_engine::models::Model::load(&src, &candle_core::Device::Cpu).unwrap();
    let held = m.weight_bytes().total as u64;
    assert_eq!(p.resident_weight_bytes, held, "{}", out.display());
}

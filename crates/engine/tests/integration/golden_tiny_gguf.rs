//! The tiny random models of tests/golden/tiny, written as F32 GGUF files the way
//! llama.cpp's converter writes them (llama.cpp tensor names; llama q/k rows permuted
//! for interleaved rope; Gemma norms stored as 1 + w), then run by our model files
//! and compared with HF transformers' float32 logits.
//!
//! This pins down exactly what the real (quantized) models cannot: Gemma 3's linear
//! rope scaling (×8) on the global layer only, its 8-token sliding window, both rope
//! bases, q/k norms, and the KV-cache decode path, all in float32.
//! Tolerances from the golden README: logits 2e-4 absolute, greedy ids exact.

use crate::common::*;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use unicorn_engine::gguf::GgufFile;
use unicorn_engine::models::Model;
use unicorn_engine::source::Source;

fn hf(arch: &str) -> HashMap<String, Tensor> {
    golden(&format!("tiny/{arch}/model.safetensors"))
}

/// llama.cpp's `permute` for q/k of llama: rows of each head go from halves
/// (HF's rotate_half pairing) to interleaved pairs.
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    w.reshape((heads, 2, rows / heads / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn write_gguf<K: AsRef<str>>(
    name: &str,
    meta: Vec<(K, Value)>,
    tensors: Vec<(String, Tensor)>,
) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("unicorn-tiny-{name}-{}.gguf", std::process::id()));
    let qs: Vec<(String, QTensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, QTensor::quantize(&t, GgmlDType::F32).unwrap()))
        .collect();
    let tokens = Value::Array((0..512).map(|i| Value::String(format!("t{i}"))).collect());
    let mut meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_ref(), v)).collect();
    meta_refs.push(("tokenizer.ggml.tokens", &tokens));
    let t_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut f = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &t_refs).unwrap();
    path
}

fn check(arch: &str, path: &PathBuf) {
    let g = GgufFile::open(path).unwrap();
    let model = f32_cache(Model::load(&Source::Gguf(g), &Device::Cpu).unwrap());
    check_tiny_golden(arch, &model);
    std::fs::remove_file(path).ok();
}

fn tiny_gemma3_gguf(tag: &str, extra: Vec<(&'static str, Value)>) -> PathBuf {
    let w = hf("gemma3_text");
    let plus_one = |t: &Tensor| (t + 1.0).unwrap();
    let mut tensors = vec![
        (
            "token_embd.weight".to_string(),
            w["model.embed_tokens.weight"].clone(),
        ),
        (
            "output_norm.weight".to_string(),
            plus_one(&w["model.norm.weight"]),
        ),
    ];
    for i in 0..6 {
        let p = format!("model.layers.{i}");
        for (hf_name, gguf_name, norm) in [
            ("self_attn.q_proj", "attn_q", false),
            ("self_attn.k_proj", "attn_k", false),
            ("self_attn.v_proj", "attn_v", false),
            ("self_attn.o_proj", "attn_output", false),
            ("self_attn.q_norm", "attn_q_norm", true),
            ("self_attn.k_norm", "attn_k_norm", true),
            ("input_layernorm", "attn_norm", true),
            ("post_attention_layernorm", "post_attention_norm", true),
            ("pre_feedforward_layernorm", "ffn_norm", true),
            ("post_feedforward_layernorm", "post_ffw_norm", true),
            ("mlp.gate_proj", "ffn_gate", false),
            ("mlp.up_proj", "ffn_up", false),
            ("mlp.down_proj", "ffn_down", false),
        ] {
            let t = &w[&format!("{p}.{hf_name}.weight")];
            tensors.push((
                format!("blk.{i}.{gguf_name}.weight"),
                if norm { plus_one(t) } else { t.clone() },
            ));
        }
    }
    let meta = vec![
        ("general.architecture", Value::String("gemma3".into())),
        ("gemma3.context_length", Value::U32(4096)),
        ("gemma3.embedding_length", Value::U32(64)),
        ("gemma3.block_count", Value::U32(6)),
        ("gemma3.feed_forward_length", Value::U32(128)),
        ("gemma3.attention.head_count", Value::U32(4)),
        ("gemma3.attention.head_count_kv", Value::U32(2)),
        ("gemma3.attention.key_length", Value::U32(32)),
        ("gemma3.attention.value_length", Value::U32(32)),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("gemma3.rope.freq_base", Value::F32(1e6)),
        ("gemma3.attention.sliding_window", Value::U32(8)),
        ("gemma3.rope.scaling.type", Value::String("linear".into())),
        ("gemma3.rope.scaling.factor", Value::F32(8.0)),
    ];
    let mut meta = meta;
    meta.extend(extra);
    write_gguf(&format!("gemma3-{tag}"), meta, tensors)
}

#[test]
fn tiny_gemma3_from_gguf_matches_transformers() {
    let path = tiny_gemma3_gguf("golden", vec![]);
    check("gemma3_text", &path);
}

/// Newer converters write the layer pattern as one flag per layer.
#[test]
fn per_layer_sliding_flags_give_the_same_model() {
    let flags = Value::Array(
        [true, true, true, true, true, false]
            .map(Value::Bool)
            .to_vec(),
    );
    let path = tiny_gemma3_gguf(
        "flags",
        vec![("gemma3.attention.sliding_window_pattern", flags)],
    );
    check("gemma3_text", &path);
}

/// Decoding one token at a time far past the 8-token window makes the sliding
/// layers drop old keys (their cache stays a few windows long); every step must
/// still equal one forward pass over the whole sequence, where nothing is dropped.
#[test]
fn sliding_window_cache_drops_old_keys_without_changing_results() {
    let path = tiny_gemma3_gguf("window", vec![]);
    let g = GgufFile::open(&path).unwrap();
    let model = f32_cache(Model::load(&Source::Gguf(g), &Device::Cpu).unwrap());
    let gold = golden("tiny/gemma3_text/golden.safetensors");
    let mut seq = ids(&gold["input_ids"]);
    let mut cache = model.new_cache();
    let mut step_logits = Vec::new();
    let first = model.forward(&seq, &mut cache, seq.len() - 1).unwrap();
    step_logits.push(first.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    for _ in 0..160 {
        let next = unicorn_engine::sampler::argmax(step_logits.last().unwrap());
        seq.push(next);
        let l = model.forward(&[next], &mut cache, 0).unwrap();
        step_logits.push(l.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let bytes_windowed = cache.bytes();
    let mut full = model.new_cache();
    let all = model
        .forward(&seq, &mut full, 39)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (i, step) in step_logits.iter().enumerate() {
        let want = &all[i * 512..(i + 1) * 512];
        let d = step
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "step {i}: max |Δlogit| {d}");
    }
    // The five sliding layers keep a few windows, the global layer everything.
    assert!(
        bytes_windowed < full.bytes(),
        "{bytes_windowed} vs {}",
        full.bytes()
    );
    // Rolling back further than the kept keys allow empties the cache instead of lying.
    assert_eq!(cache.truncate(10), 0);
    std::fs::remove_file(path).ok();
}

#[test]
fn tiny_llama_from_gguf_matches_transformers() {
    check("llama", &tiny_llama_gguf("llama"));
}

/// GGUF → HF folder undoes llama.cpp's conventions (q/k permutation, Gemma's 1 + w
/// norms): the converted folders must match transformers' goldens again.
#[test]
fn converted_tiny_ggufs_match_transformers_again() {
    use unicorn_engine::convert::{gguf_to_hf, OutDType};
    for (arch, gguf) in [
        ("llama", tiny_llama_gguf("conv-llama")),
        ("gemma3_text", tiny_gemma3_gguf("conv-gemma", vec![])),
    ] {
        let out = std::env::temp_dir().join(format!("unicorn-conv-{arch}-{}", std::process::id()));
        std::fs::remove_dir_all(&out).ok();
        let mut calls = 0;
        let r = gguf_to_hf(&gguf, &out, OutDType::F32, false, &mut |_| {
            calls += 1;
            true
        })
        .unwrap();
        assert_eq!(calls, r.tensors);
        let model = f32_cache(Model::load(&Source::open(&out).unwrap(), &Device::Cpu).unwrap());
        check_tiny_golden(arch, &model);
        // The output exists now: no silent overwrite, and --force replaces it.
        let e = gguf_to_hf(&gguf, &out, OutDType::F32, false, &mut |_| true).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        // Cancelling half-way leaves the old folder as it was and no temp folder.
        let before = std::fs::read(out.join("model.safetensors")).unwrap();
        let mut n = 0;
        let e = gguf_to_hf(&gguf, &out, OutDType::Bf16, true, &mut |_| {
            n += 1;
            n < 3
        })
        .unwrap_err();
        assert!(matches!(e, unicorn_engine::Error::Cancelled));
        assert_eq!(
            std::fs::read(out.join("model.safetensors")).unwrap(),
            before
        );
        let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!(".unicorn-conv-{arch}")) && n.contains("partial")
            })
            .collect();
        assert!(leftovers.is_empty(), "temp folder left behind");
        std::fs::remove_dir_all(&out).ok();
        std::fs::remove_file(&gguf).ok();
    }
}

fn tiny_llama_gguf(tag: &str) -> PathBuf {
    tiny_llama_family_gguf(tag, "llama", "llama", 1e5, 1e-5, vec![], vec![])
}

/// A tiny model of the llama family as llama.cpp's converter writes it: `llama`
/// q/k rows permuted, Qwen's kept, plus `meta` and `tensors` it adds.
fn tiny_llama_family_gguf(
    tag: &str,
    folder: &str,
    arch: &'static str,
    theta: f32,
    eps: f32,
    meta: Vec<(&'static str, Value)>,
    tensors: Vec<(String, Tensor)>,
) -> PathBuf {
    let w = hf(folder);
    let qk = |t: &Tensor, heads: usize| {
        if arch == "llama" {
            permute(t, heads)
        } else {
            t.clone()
        }
    };
    let mut tensors = tensors;
    tensors.extend([
        (
            "token_embd.weight".to_string(),
            w["model.embed_tokens.weight"].clone(),
        ),
        (
            "output_norm.weight".to_string(),
            w["model.norm.weight"].clone(),
        ),
    ]);
    for i in 0..4 {
        let p = format!("model.layers.{i}");
        let get = |n: &str| w[&format!("{p}.{n}.weight")].clone();
        tensors.extend([
            (
                format!("blk.{i}.attn_q.weight"),
                qk(&get("self_attn.q_proj"), 4),
            ),
            (
                format!("blk.{i}.attn_k.weight"),
                qk(&get("self_attn.k_proj"), 2),
            ),
            (format!("blk.{i}.attn_v.weight"), get("self_attn.v_proj")),
            (
                format!("blk.{i}.attn_output.weight"),
                get("self_attn.o_proj"),
            ),
            (format!("blk.{i}.attn_norm.weight"), get("input_layernorm")),
            (
                format!("blk.{i}.ffn_norm.weight"),
                get("post_attention_layernorm"),
            ),
            (format!("blk.{i}.ffn_gate.weight"), get("mlp.gate_proj")),
            (format!("blk.{i}.ffn_up.weight"), get("mlp.up_proj")),
            (format!("blk.{i}.ffn_down.weight"), get("mlp.down_proj")),
        ]);
        for x in ["q", "k", "v"] {
            if let Some(b) = w.get(&format!("{p}.self_attn.{x}_proj.bias")) {
                tensors.push((format!("blk.{i}.attn_{x}.bias"), b.clone()));
            }
        }
    }
    let k = |s: &str| format!("{arch}.{s}");
    let mut all = vec![
        (
            "general.architecture".to_string(),
            Value::String(arch.into()),
        ),
        (k("context_length"), Value::U32(2048)),
        (k("embedding_length"), Value::U32(64)),
        (k("block_count"), Value::U32(4)),
        (k("feed_forward_length"), Value::U32(128)),
        (k("attention.head_count"), Value::U32(4)),
        (k("attention.head_count_kv"), Value::U32(2)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(eps)),
        (k("rope.freq_base"), Value::F32(theta)),
        (k("rope.dimension_count"), Value::U32(16)),
    ];
    all.extend(meta.into_iter().map(|(k, v)| (k.to_string(), v)));
    write_gguf(tag, all, tensors)
}

/// Scaled rope as llama.cpp's converter writes it, read back to transformers'
/// logits: Llama 3's per-pair factors as the `rope_freqs.weight` tensor (computed
/// here with the converter's own float32 formula, not the engine's), and YaRN as
/// `qwen2.rope.scaling.{type,factor,original_context_length}` metadata.
/// The error loading the GGUF at `path` gives.
fn load_err(path: &std::path::Path) -> String {
    let g = GgufFile::open(path).unwrap();
    match Model::load(&Source::Gguf(g), &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn scaled_rope_written_like_llama_cpp_matches_transformers() {
    let (base, dim) = (1000f32, 16usize);
    let factors: Vec<f32> = (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f32 / dim as f32);
            let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
            let (factor, low, high, old) = (8.0, 1.0, 4.0, 32.0);
            if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor as f32
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect();
    let freqs = Tensor::new(factors.as_slice(), &Device::Cpu).unwrap();
    let llama3 = tiny_llama_family_gguf(
        "llama3-rope",
        "llama3_rope",
        "llama",
        1000.0,
        1e-5,
        vec![],
        vec![("rope_freqs.weight".into(), freqs)],
    );
    check("llama3_rope", &llama3);
    let yarn = tiny_llama_family_gguf(
        "qwen2-yarn",
        "qwen2_yarn",
        "qwen2",
        1000.0,
        1e-6,
        vec![
            ("qwen2.rope.scaling.type", Value::String("yarn".into())),
            ("qwen2.rope.scaling.factor", Value::F32(4.0)),
            ("qwen2.rope.scaling.original_context_length", Value::U32(32)),
        ],
        vec![],
    );
    check("qwen2_yarn", &yarn);

    // Divisors that are not positive, or of the wrong count, are named errors.
    for (tag, bad) in [("zero", vec![0f32; 8]), ("short", vec![1f32; 3])] {
        let freqs = Tensor::new(bad.as_slice(), &Device::Cpu).unwrap();
        let path = tiny_llama_family_gguf(
            tag,
            "llama3_rope",
            "llama",
            1000.0,
            1e-5,
            vec![],
            vec![("rope_freqs.weight".into(), freqs)],
        );
        let e = load_err(&path);
        assert!(e.contains("rope_freqs.weight"), "{tag}: {e}");
        std::fs::remove_file(&path).ok();
    }
    // An unknown scaling type is refused by name, not run as plain rope.
    let path = tiny_llama_family_gguf(
        "longrope",
        "qwen2_yarn",
        "qwen2",
        1000.0,
        1e-6,
        vec![("qwen2.rope.scaling.type", Value::String("longrope".into()))],
        vec![],
    );
    let e = load_err(&path);
    assert!(
        e.contains("qwen2.rope.scaling.type") && e.contains("longrope"),
        "{e}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn unsupported_architectures_and_bad_shapes_are_named_errors() {
    let meta = vec![("general.architecture", Value::String("mamba".into()))];
    let path = write_gguf("mamba", meta, vec![]);
    let g = GgufFile::open(&path).unwrap();
    let e = Model::load(&Source::Gguf(g), &Device::Cpu)
        .err()
        .expect("mamba is not supported")
        .to_string();
    assert!(
        e.contains("mamba") && e.contains(&path.display().to_string()),
        "{e}"
    );
    std::fs::remove_file(&path).ok();

    // A llama file whose q projection has the wrong shape.
    let w = hf("llama");
    let meta = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(64)),
        ("llama.block_count", Value::U32(1)),
        ("llama.feed_forward_length", Value::U32(128)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ];
    let tensors = vec![
        (
            "token_embd.weight".to_string(),
            w["model.embed_tokens.weight"].clone(),
        ),
        (
            "blk.0.attn_norm.weight".to_string(),
            w["model.layers.0.input_layernorm.weight"].clone(),
        ),
        (
            "blk.0.attn_q.weight".to_string(),
            w["model.layers.0.mlp.gate_proj.weight"].clone(),
        ),
    ];
    let path = write_gguf("badshape", meta, tensors);
    let g = GgufFile::open(&path).unwrap();
    let e = Model::load(&Source::Gguf(g), &Device::Cpu)
        .err()
        .expect("wrong shape")
        .to_string();
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("shape"),
        "{e}"
    );
    std::fs::remove_file(&path).ok();
}

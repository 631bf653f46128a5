//! Does quantizing a bigger model take more memory? Generates random BF16 models of
//! Gemma 3 1B's shape (hidden 1152, 4 heads / 1 KV head × 256, FFN 6912, vocabulary
//! 262 144) with half and all of its 26 layers, quantizes each to Q4_K_M with the
//! release `unicorn` binary, and prints peak RSS and throughput (GB/s of source read).
//! Run: `cargo build --release -p unicorn-cli && cargo bench -p unicorn-engine --bench quantize_memory`

use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::path::{Path, PathBuf};
use unicorn_engine::hf::writer::{PlannedTensor, SafetensorsWriter};

const HIDDEN: usize = 1152;
const HEADS: usize = 4;
const KV: usize = 1;
const HEAD_DIM: usize = 256;
const FFN: usize = 6912;
const VOCAB: usize = 262_144;

fn tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".to_string(), vec![HIDDEN]),
    ];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.k_proj.weight", vec![KV * HEAD_DIM, HIDDEN]),
            ("self_attn.v_proj.weight", vec![KV * HEAD_DIM, HIDDEN]),
            ("self_attn.o_proj.weight", vec![HIDDEN, HEADS * HEAD_DIM]),
            ("self_attn.q_norm.weight", vec![HEAD_DIM]),
            ("self_attn.k_norm.weight", vec![HEAD_DIM]),
            ("mlp.gate_proj.weight", vec![FFN, HIDDEN]),
            ("mlp.up_proj.weight", vec![FFN, HIDDEN]),
            ("mlp.down_proj.weight", vec![HIDDEN, FFN]),
            ("input_layernorm.weight", vec![HIDDEN]),
            ("post_attention_layernorm.weight", vec![HIDDEN]),
            ("pre_feedforward_layernorm.weight", vec![HIDDEN]),
            ("post_feedforward_layernorm.weight", vec![HIDDEN]),
        ] {
            t.push((format!("{p}.{n}"), s));
        }
    }
    t
}

/// Writes the folder (once): config.json and BF16 N(0, 0.02)-ish weights, streamed.
fn generate(dir: &Path, layers: usize) {
    let st = dir.join("model.safetensors");
    if st.is_file() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": layers,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HEAD_DIM,
        "vocab_size": VOCAB, "sliding_window": 512, "rope_theta": 1e6,
        "query_pre_attn_scalar": 256, "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16"
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let plan: Vec<PlannedTensor> = tensors(layers)
        .into_iter()
        .map(|(name, shape)| PlannedTensor {
            name,
            dtype: "BF16",
            shape,
        })
        .collect();
    let tmp = dir.join("model.safetensors.partial");
    let mut w = SafetensorsWriter::create(&tmp, plan).unwrap();
    let mut rng = SmallRng::seed_from_u64(1);
    for t in w.plan().to_vec() {
        let n: usize = t.shape.iter().product();
        let mut bytes = Vec::with_capacity(n * 2);
        for _ in 0..n {
            // Sum of two uniforms: a cheap bell shape, scaled like trained weights.
            let x = (rng.random::<f32>() + rng.random::<f32>() - 1.0) * 0.05;
            bytes.extend(half::bf16::from_f32(x).to_bits().to_le_bytes());
        }
        w.write_next(&bytes).unwrap();
    }
    w.finish().unwrap();
    std::fs::rename(&tmp, &st).unwrap();
}

fn unicorn() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/unicorn");
    assert!(
        p.exists(),
        "build it first: cargo build --release -p unicorn-cli"
    );
    p
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-models");
    println!("| layers | source GB | output MB | peak RSS MB | seconds | GB/s of source |");
    println!("|---|---|---|---|---|---|");
    for layers in [13, 26] {
        let dir = root.join(format!("gemma3-1b-shape-{layers}l"));
        generate(&dir, layers);
        let out = root.join(format!("gemma3-1b-shape-{layers}l.Q4_K_M.gguf"));
        let o = std::process::Command::new(unicorn())
            .args([
                "quantize",
                dir.to_str().unwrap(),
                "--to",
                "Q4_K_M",
                "--out",
                out.to_str().unwrap(),
                "--force",
                "--json",
            ])
            .env("UNICORN_DATA_DIR", root.join("library"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let last = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let r: serde_json::Value = serde_json::from_str(&last).unwrap();
        let r = &r["report"];
        println!(
            "| {layers} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} |",
            r["source_bytes"].as_f64().unwrap() / 1e9,
            r["output_bytes"].as_f64().unwrap() / 1e6,
            r["peak_rss_bytes"].as_f64().unwrap() / 1e6,
            r["seconds"].as_f64().unwrap(),
            r["source_bytes_per_sec"].as_f64().unwrap() / 1e9
        );
        std::fs::remove_file(&out).ok();
    }
}

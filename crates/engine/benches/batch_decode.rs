//! One batched decode step (`Model::forward_batch`) over B = 1, 2, 4, 8, 16 sequences,
//! each with a short prompt in its own cache: ms per step and tokens per second.
//! Decode reads each weight once per step for all sequences; what B costs beyond
//! that is the per-row compute of the matmul kernels and per-sequence attention.
//!
//! `cargo bench -p unicorn-engine --bench batch_decode -- MODEL.gguf...` (default:
//! the two real test models).

use std::time::Instant;
use unicorn_engine::attention::KvCache;
use unicorn_engine::{LoadOptions, LoadedModel};

fn main() {
    let mut paths: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if paths.is_empty() {
        paths = [unicorn_test_support::SMOLLM, unicorn_test_support::GEMMA]
            .iter()
            .map(|m| unicorn_test_support::model(m).display().to_string())
            .collect();
    }
    for p in paths {
        let m = LoadedModel::load(std::path::Path::new(&p), &LoadOptions::default()).unwrap();
        let net = m.model();
        for b in [1usize, 2, 4, 8, 16] {
            let mut caches: Vec<KvCache> = (0..b).map(|_| net.new_cache()).collect();
            for c in caches.iter_mut() {
                net.forward(&[1, 2, 3, 4, 5, 6, 7, 8], c, 7).unwrap();
            }
            let ids: Vec<[u32; 1]> = (0..b).map(|i| [10 + i as u32]).collect();
            let refs: Vec<&[u32]> = ids.iter().map(|a| a.as_slice()).collect();
            let steps = 32;
            let t0 = Instant::now();
            for _ in 0..steps {
                let mut cs: Vec<&mut KvCache> = caches.iter_mut().collect();
                net.forward_batch(&refs, &mut cs, 0).unwrap();
            }
            let dt = t0.elapsed().as_secs_f64() / steps as f64;
            println!(
                "{} B={b:2}: {:6.2} ms/step, {:6.1} tok/s",
                std::path::Path::new(&p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                dt * 1e3,
                b as f64 / dt
            );
        }
    }
}

//! The k-quant matmuls at Gemma 3 4B's shapes, as prefill (64 activation rows) and
//! decode (one row) run them: µs per call, multiply-adds per second, and weight
//! bytes per second. Threads as the engine uses them (`RAYON_NUM_THREADS=1` for one
//! core; `SHAPE=i` runs only the i-th shape). Run:
//! `cargo bench -p unicorn-engine --bench kquant_matmul`

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::time::Instant;
use unicorn_engine::formats::Weight;

fn main() {
    let mut rng = SmallRng::seed_from_u64(7);
    // Gemma 3 4B: attention q, FFN gate (and up), FFN down; then 27B's FFN; [out, in].
    let shapes = [
        (2048, 2560),
        (10240, 2560),
        (2560, 10240),
        (21504, 5376),
        (5376, 21504),
    ];
    let only: Option<usize> = std::env::var("SHAPE").ok().and_then(|s| s.parse().ok());
    for (i, &(n, k)) in shapes.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let w: Vec<f32> = (0..n * k)
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        let dense = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        for (name, t) in [("Q4_K", GgmlDType::Q4K), ("Q6_K", GgmlDType::Q6K)] {
            let q = Weight::from_qtensor(QTensor::quantize(&dense, t).unwrap()).unwrap();
            for m in [1usize, 64] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
                let x = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
                let reps = if m == 1 { 200 } else { 10 };
                for _ in 0..2 {
                    q.forward(&x).unwrap();
                }
                let t0 = Instant::now();
                for _ in 0..reps {
                    q.forward(&x).unwrap();
                }
                let s = t0.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{n:>5}x{k:<5} m={m:<3} {name} {:>9.1} µs {:>7.1} GMAC/s {:>6.2} GB/s",
                    s * 1e6,
                    (n * k * m) as f64 / s / 1e9,
                    q.bytes() as f64 / s / 1e9
                );
            }
        }
    }
}

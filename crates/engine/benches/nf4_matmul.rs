//! NF4 matmul against the GGUF 4-bit formats on the same random matrices, one
//! activation row (decode) and 64 rows (prefill), through `Weight::forward` as the
//! models call it. Prints µs per call and GB/s of weights read; the ratio to Q4_0 is
//! what issue 5's target is about (NF4 decode within 15 % of Q4_0).
//! Run: `cargo bench -p unicorn-engine --bench nf4_matmul`

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;
use unicorn_engine::formats::nf4::{Nf4, Nf4Matrix};
use unicorn_engine::formats::Weight;

fn time(w: &Weight, x: &Tensor, reps: usize) -> f64 {
    for _ in 0..3 {
        w.forward(x).unwrap();
    }
    let t = Instant::now();
    for _ in 0..reps {
        w.forward(x).unwrap();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let mut rng = SmallRng::seed_from_u64(7);
    // Gemma 3 1B's FFN and SmolLM2's, [out, in].
    for (n, k) in [(6912, 1152), (1152, 6912), (1536, 576)] {
        let w: Vec<f32> = (0..n * k)
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        let dense = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let nf4 = Weight::Nf4(Arc::new(
            Nf4Matrix::new(&Nf4::quantize(&w, 64, true), n, k).unwrap(),
        ));
        let mut formats = vec![("NF4", nf4)];
        for (name, t) in [
            ("Q4_0", GgmlDType::Q4_0),
            ("Q4_K", GgmlDType::Q4K),
            ("Q8_0", GgmlDType::Q8_0),
        ] {
            // Q4_K needs rows of whole 256-blocks (SmolLM2's 576 is not).
            if let Ok(q) = QTensor::quantize(&dense, t) {
                formats.push((name, Weight::from_qtensor(q).unwrap()));
            }
        }
        for m in [1usize, 64] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
            let x = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
            let reps = if m == 1 { 400 } else { 20 };
            let mut q4_0 = 0.0;
            for (name, w) in &formats {
                let s = time(w, &x, reps);
                if *name == "Q4_0" {
                    q4_0 = s;
                }
                println!(
                    "{n:>5}x{k:<5} m={m:<3} {name:<5} {:>9.1} µs  {:>6.2} GB/s{}",
                    s * 1e6,
                    w.bytes() as f64 / s / 1e9,
                    if q4_0 > 0.0 {
                        format!("  {:.2}x Q4_0", s / q4_0)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
}

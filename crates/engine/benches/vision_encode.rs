//! One image through Gemma 3 4B's vision tower (SigLIP so400m, 896 pixels, 4096
//! patches, 27 layers) on this machine: preprocessing a 1024×768 PNG, the tower and
//! the projector, in seconds, and the memory the tower adds (RSS before and after
//! loading it). The tower is synthetic (`unicorn synth`'s random F16 mmproj):
//! speed and memory depend on shapes and types, not values.
//!
//! `cargo bench -p unicorn-engine --bench vision_encode -- [MMPROJ.gguf]`

use std::path::PathBuf;
use std::time::Instant;
use unicorn_engine::models::mmproj::{self, MmprojType};
use unicorn_engine::models::siglip;
use unicorn_engine::stats::rss_bytes;
use unicorn_engine::vision::Vision;

fn main() {
    let text = unicorn_engine::synth::config("gemma3", "4b").unwrap();
    let cfg = siglip::public_tower(&text).unwrap();
    let given = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scratch = std::env::temp_dir().join(format!("unicorn-vision-bench-{}", std::process::id()));
    let path = match &given {
        Some(p) => PathBuf::from(p),
        None => {
            std::fs::create_dir_all(&scratch).unwrap();
            let p = scratch.join("mmproj-gemma3-4b-F16.gguf");
            let t = Instant::now();
            let bytes = mmproj::write(
                &p,
                &cfg,
                [0.5; 3],
                [0.5; 3],
                MmprojType::F16,
                &mut mmproj::synthetic(0),
            )
            .unwrap();
            eprintln!(
                "wrote {} ({:.0} MB) in {:.1} s",
                p.display(),
                bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            p
        }
    };
    let before = rss_bytes();
    let t = Instant::now();
    let v = Vision::from_mmproj(&path, &text, None, &candle_core::Device::Cpu).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let after = rss_bytes();
    // A photo-like PNG, larger than the tower's input and not square.
    let (w, h) = (1024u32, 768u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for run in 0..2 {
        let t = Instant::now();
        let image = v.image_from_bytes(&png, "bench.png").unwrap();
        let pre = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let f = v.features(&image).unwrap();
        let enc = t.elapsed().as_secs_f64();
        println!(
            "run {run}: preprocess {pre:.3} s, tower + projector {enc:.2} s, total {:.2} s; features {:?}; peak RSS {:.2} GB",
            pre + enc,
            f.dims(),
            unicorn_engine::stats::peak_rss_bytes().unwrap_or(0) as f64 / 1e9
        );
    }
    println!(
        "tower weights {:.0} MB; RSS {:.0} MB before loading, {:.0} MB after (+{:.0} MB); load {load_s:.1} s",
        v.weight_bytes() as f64 / 1e6,
        before as f64 / 1e6,
        after as f64 / 1e6,
        (after as f64 - before as f64) / 1e6
    );
    std::fs::remove_dir_all(&scratch).ok();
}

//! With the `cuda` feature, compiles the NF4 kernels (`src/formats/nf4/nf4.cu`) to PTX
//! for `formats::nf4::cuda`, with the nvcc candle's own kernels are built with
//! (scripts/build-cuda provides one). Without it, does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/formats/nf4/nf4.cu";
    println!("cargo::rerun-if-changed={src}");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=CUDA_ROOT");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    // PTX for the oldest generation asked for runs on every newer one (the driver
    // compiles it); 80 (Ampere) is the oldest with the bf16 tensor cores the prefill
    // path uses through cuBLAS.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    if cap.is_empty() || !cap.bytes().all(|b| b.is_ascii_digit()) {
        panic!("CUDA_COMPUTE_CAP `{cap}`: expected digits such as 90");
    }
    let nvcc = match std::env::var_os("CUDA_ROOT") {
        Some(root) if PathBuf::from(&root).join("bin/nvcc").exists() => {
            PathBuf::from(root).join("bin/nvcc")
        }
        _ => PathBuf::from("nvcc"),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("nf4.ptx");
    let status = Command::new(&nvcc)
        .args([
            "--ptx",
            "-O3",
            "-std=c++17",
            &format!("-arch=compute_{cap}"),
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/build-cuda provides nvcc)", nvcc.display()));
    if !status.success() {
        panic!("nvcc could not compile {src} ({status})");
    }
}

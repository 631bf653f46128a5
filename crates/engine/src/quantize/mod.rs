//! Quantization to GGUF.

pub mod types;

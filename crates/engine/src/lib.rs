//! Unicorn's engine: the inference core. Everything that loads, runs, quantizes and
//! measures a model lives here; no GUI, no network, no database (the hub, the model
//! library and the chat history are the `unicorn-hub` and `unicorn-library` crates).
//! The `unicorn` CLI and the desktop shell parse input, call this crate and stream
//! its events.
//!
//! ```no_run
//! use unicorn_engine::{LoadedModel, GenerationParams, Message};
//! let model = LoadedModel::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Default::default())?;
//! let mut chat = model.chat_session();
//! let reply = chat.send(&[Message::user("What is the capital of France?")],
//!     &GenerationParams::greedy(32), &mut |_: &unicorn_engine::TokenEvent| true)?;
//! println!("{}", reply.text);
//! # Ok::<(), unicorn_engine::Error>(())
//! ```
//!
//! # How a model is read and run
//!
//! - A [`source::Source`] is an open model: a GGUF file ([`gguf`]) or an HF folder
//!   ([`hf`]: `config.json`, safetensors shards, tokenizer files). It hands out tensors
//!   by their GGUF names; a folder translates through [`hf::names`].
//! - [`models::Config`] is its validated configuration, read by the architecture's
//!   file, which [`models::REGISTRY`] finds from the file's own name for it. Each
//!   architecture (`models/llama.rs`, `models/gemma3.rs`) owns everything about
//!   itself: config both ways, tensor names, stored-value transforms, shapes,
//!   parameter count and the forward pass.
//! - [`models::Model`] is the loaded network. Its matrices are [`formats::Weight`]s,
//!   one type over every storage format; each format has one home in [`formats`]
//!   (layout, matmul kernels on this CPU's path from [`cpu`], quantizer, loader).
//! - [`session::LoadedModel`] adds the tokenizer ([`tokenizer`]), chat template
//!   ([`template`]), stop tokens and recommended sampling ([`sampler`]); a
//!   [`session::ChatSession`] keeps the KV cache ([`attention::KvCache`]) across
//!   turns and pushes each token into a sink that can answer "stop".
//!
//! # Long work
//!
//! Loading, [`quantize`] (to GGUF; NF4 in [`formats::nf4::export`]), [`convert`]
//! (GGUF to HF), [`synth`] (random weights at public shapes), [`perplexity`] and
//! [`compare`] report one [`Progress`] shape to a callback that returns `false` to
//! cancel. Their outputs appear whole or not at all and never replace what the user
//! had ([`unicorn_common::atomic`]). [`info`] and [`memory`] read headers only;
//! [`bench`] measures.
#![deny(missing_docs)]

pub mod activation;
pub mod attention;
pub mod cpu;
pub mod device;
pub mod error;
pub mod formats;
#[doc(hidden)]
pub mod fuzz;
pub mod gguf;
pub mod hf;
pub mod memory;
pub mod models;
pub mod pool;
pub mod source;
pub mod tokenizer;
pub mod vision;

pub use error::{Error, Result};
pub use unicorn_common::{Meter, Progress};

/// Sets the number of worker threads (default: every logical core). Call it once,
/// first thing, before any model is loaded: the worker pools read it when they start.
pub fn set_threads(n: Option<usize>) {
    let n = n
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    // candle sizes its pools from RAYON_NUM_THREADS, and without it re-reads
    // /proc/cpuinfo on every call that asks for the thread count.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    // A second call finds the pool built already; the first one wins, by design.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}
pub mod sampler;
pub mod session;
pub mod speculative;
pub mod stats;
pub mod template;

pub use sampler::SamplingParams;
pub use session::{
    ChatSession, GenerationParams, LoadOptions, LoadedModel, Prompt, Reply, StopReason, TokenEvent,
};
pub use template::Message;
pub mod batch;
pub mod bench;
pub mod compare;
pub mod constrain;
pub mod convert;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod synth;

//! Unicorn's engine: everything that loads, runs and measures a model. No GUI here;
//! the `unicorn` CLI and the desktop shell only parse input, call this crate and
//! stream its events.
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
#![deny(missing_docs)]

pub mod atomic;
pub mod attention;
pub mod chats;
pub mod device;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod hub;
pub mod kernels;
pub mod library;
pub mod memory;
pub mod models;
pub mod nf4;
pub mod source;
pub mod tokenizer;
pub mod weight;

pub use error::{Error, Result};

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
pub mod stats;
pub mod template;

pub use sampler::SamplingParams;
pub use session::{
    ChatSession, GenerationParams, LoadOptions, LoadedModel, Reply, StopReason, TokenEvent,
};
pub use template::Message;
pub mod bench;
pub mod compare;
pub mod convert;
pub mod info;
pub mod perplexity;
pub mod quantize;
pub mod synth;

//! Typed errors of the engine. Every error that comes from a file names that file,
//! and where it concerns one tensor or metadata key, names that too.

use std::path::PathBuf;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not in the expected format or is damaged.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A metadata key is missing or has the wrong type.
    #[error("{path}: metadata key `{key}`: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor is missing, has the wrong shape or cannot be loaded.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// The architecture named by the file is not one we implement.
    #[error("{path}: unsupported architecture `{arch}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture it names.
        arch: String,
        /// The ones we support.
        supported: String,
    },
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A request the caller made cannot be served (bad parameter, context full, ...).
    #[error("{0}")]
    Invalid(String),
    /// The user cancelled a long operation; nothing was left behind.
    #[error("cancelled")]
    Cancelled,
    /// A tensor computation failed.
    #[error("compute: {0}")]
    Compute(#[from] candle_core::Error),
    /// An output could not be written whole, or may not replace what is there.
    #[error(transparent)]
    Output(#[from] unicorn_common::atomic::OutputError),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

//! Where a model's weights come from: a GGUF file or an HF folder. Model files ask
//! for tensors by their GGUF names; an HF folder translates through
//! [`crate::hf::names`]. Layout differences that change values (Gemma's stored
//! `1 + w` norms, llama.cpp's q/k row order) are each model file's business.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::hf::{names, HfFolder};
use crate::weight::Weight;
use candle_core::{Device, Tensor};
use std::cell::RefCell;
use std::path::Path;

/// A loading progress callback: (bytes loaded, bytes in all) → go on?
pub type LoadProgress = Box<dyn FnMut(u64, u64) -> bool>;

thread_local! {
    // The model loaders fetch tensors in many places through `&Source`; a hook that
    // the tensor fetchers report to spares every one of those calls a parameter.
    static PROGRESS: RefCell<Option<(u64, u64, LoadProgress)>> = const { RefCell::new(None) };
}

/// Runs `work` (which loads a model from a source on this thread) with `progress`
/// told the bytes loaded after each tensor, out of `total`; `progress` returning
/// false ends the load with [`Error::Cancelled`].
pub fn with_load_progress<T>(
    total: u64,
    progress: LoadProgress,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    PROGRESS.with(|p| *p.borrow_mut() = Some((0, total, progress)));
    let result = work();
    PROGRESS.with(|p| p.borrow_mut().take());
    result
}

/// Reports `bytes` more loaded to the hook, if one is set.
fn loaded(bytes: u64) -> Result<()> {
    PROGRESS.with(|p| match p.borrow_mut().as_mut() {
        Some((done, total, f)) => {
            *done = (*done + bytes).min(*total);
            if f(*done, *total) {
                Ok(())
            } else {
                Err(Error::Cancelled)
            }
        }
        None => Ok(()),
    })
}

/// An open model source.
pub enum Source {
    /// A `.gguf` file.
    Gguf(GgufFile),
    /// A folder with `config.json` and safetensors.
    Hf(HfFolder),
}

impl Source {
    /// Opens a `.gguf` file or an HF model folder.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Ok(Self::Hf(HfFolder::open(path)?))
        } else {
            Ok(Self::Gguf(GgufFile::open(path)?))
        }
    }

    /// The file or folder.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf(g) => g.path(),
            Self::Hf(h) => h.dir(),
        }
    }

    /// Whether the tensors are in transformers' layout.
    pub fn is_hf(&self) -> bool {
        matches!(self, Self::Hf(_))
    }

    /// The engine's architecture name.
    pub fn architecture(&self) -> Result<String> {
        match self {
            Self::Gguf(g) => g.architecture(),
            Self::Hf(h) => Ok(h.arch().to_string()),
        }
    }

    fn hf_name(h: &HfFolder, gguf_name: &str) -> Result<String> {
        names::gguf_to_hf(h.arch(), gguf_name).ok_or_else(|| Error::Tensor {
            path: h.dir().to_path_buf(),
            tensor: gguf_name.to_string(),
            message: format!("no transformers name for this tensor of `{}`", h.arch()),
        })
    }

    /// Whether the tensor (GGUF name) is stored.
    pub fn has_tensor(&self, gguf_name: &str) -> bool {
        match self {
            Self::Gguf(g) => g.has_tensor(gguf_name),
            Self::Hf(h) => Self::hf_name(h, gguf_name).is_ok_and(|n| h.has(&n)),
        }
    }

    /// A matrix `[out, in]` by GGUF name.
    pub fn weight(
        &self,
        gguf_name: &str,
        shape: (usize, usize),
        device: &Device,
    ) -> Result<Weight> {
        let w = match self {
            Self::Gguf(g) => g.weight(gguf_name, shape, device),
            Self::Hf(h) => h.weight(&Self::hf_name(h, gguf_name)?, shape, device),
        }?;
        loaded(w.bytes() as u64)?;
        Ok(w)
    }

    /// A vector in F32 by GGUF name.
    pub fn vector(&self, gguf_name: &str, len: usize, device: &Device) -> Result<Tensor> {
        let v = match self {
            Self::Gguf(g) => g.vector(gguf_name, len, device),
            Self::Hf(h) => h.vector(&Self::hf_name(h, gguf_name)?, len, device),
        }?;
        loaded(len as u64 * 4)?;
        Ok(v)
    }

    /// An optional vector (a bias that only some variants have).
    pub fn vector_opt(
        &self,
        gguf_name: &str,
        len: usize,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        if self.has_tensor(gguf_name) {
            self.vector(gguf_name, len, device).map(Some)
        } else {
            Ok(None)
        }
    }
}

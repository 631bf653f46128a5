//! Where a model's weights come from: a GGUF file or an HF folder. Model files ask
//! for tensors by their GGUF names (through a [`crate::models::Loader`]); an HF folder
//! translates through [`crate::hf::names`]. Layout differences that change values
//! (Gemma's stored `1 + w` norms, llama.cpp's q/k row order) are each architecture's
//! business ([`crate::models::Stored`]).

use crate::error::{Error, Result};
use crate::formats::Weight;
use crate::gguf::GgufFile;
use crate::hf::{names, HfFolder};
use candle_core::{Device, Tensor};
use std::path::Path;

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

    fn hf_name(h: &HfFolder, gguf_name: &str) -> Result<String> {
        names::gguf_to_hf(h.arch(), gguf_name).ok_or_else(|| Error::Tensor {
            path: h.dir().to_path_buf(),
            tensor: gguf_name.to_string(),
            message: format!(
                "no transformers name for this tensor of `{}`",
                h.arch().name
            ),
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
        match self {
            Self::Gguf(g) => g.weight(gguf_name, shape, device),
            Self::Hf(h) => h.weight(&Self::hf_name(h, gguf_name)?, shape, device),
        }
    }

    /// A vector in F32 by GGUF name.
    pub fn vector(&self, gguf_name: &str, len: usize, device: &Device) -> Result<Tensor> {
        match self {
            Self::Gguf(g) => g.vector(gguf_name, len, device),
            Self::Hf(h) => h.vector(&Self::hf_name(h, gguf_name)?, len, device),
        }
    }

    /// The shape tensor `gguf_name` holds (row-major), `None` when it is absent. For
    /// a bitsandbytes 4-bit matrix, the shape it stands for.
    pub fn tensor_shape(&self, gguf_name: &str) -> Result<Option<Vec<usize>>> {
        match self {
            Self::Gguf(g) if g.has_tensor(gguf_name) => Ok(Some(g.tensor_location(gguf_name)?.2)),
            Self::Gguf(_) => Ok(None),
            Self::Hf(h) => h.logical_shape(&Self::hf_name(h, gguf_name)?),
        }
    }

    /// The file and stored name of tensor `gguf_name`, for errors.
    pub fn whereabouts(&self, gguf_name: &str) -> (std::path::PathBuf, String) {
        match self {
            Self::Gguf(g) => (g.path().to_path_buf(), gguf_name.to_string()),
            Self::Hf(h) => match Self::hf_name(h, gguf_name) {
                Ok(n) => h.whereabouts(&n),
                Err(_) => (h.dir().to_path_buf(), gguf_name.to_string()),
            },
        }
    }

    /// Number of tensors stored (a folder: of the text model).
    pub fn tensor_count(&self) -> usize {
        match self {
            Self::Gguf(g) => g.tensor_infos().len(),
            Self::Hf(h) => h.tensor_infos().len(),
        }
    }
}

/// Opens `path` for reading if it is a regular file. A FIFO or a device named as a
/// model would block the reader forever, or never end.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: if meta.is_dir() {
                "a folder, not a model file".into()
            } else {
                "not a regular file (a device, pipe or socket)".into()
            },
        });
    }
    std::fs::File::open(path).map_err(io)
}

/// Reads file `name` of model folder `dir`, at most `max_bytes` of it: `None` when
/// absent. The file must be a regular file whose real location stays inside the
/// folder (or, for a snapshot of the HF cache, inside its repository's `blobs`): a
/// link that leads elsewhere is refused, not followed.
pub fn read_folder_file(dir: &Path, name: &str, max_bytes: u64) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let real = std::fs::canonicalize(&path).map_err(io(&path))?;
    let folder = std::fs::canonicalize(dir).map_err(io(dir))?;
    let blobs = (folder.parent().and_then(Path::file_name) == Some("snapshots".as_ref()))
        .then(|| {
            folder
                .parent()
                .and_then(Path::parent)
                .map(|r| r.join("blobs"))
        })
        .flatten();
    let inside = real.starts_with(&folder) || blobs.is_some_and(|b| real.starts_with(b));
    if !inside {
        return Err(Error::BadFile {
            path: path.clone(),
            message: format!(
                "a link to {}, outside the model folder: refused",
                real.display()
            ),
        });
    }
    read_regular(&path, max_bytes).map(Some)
}

/// Reads regular file `path` whole, refusing one over `max_bytes`.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = open_regular(path)?;
    let len = f.metadata().map_err(io)?.len();
    if len > max_bytes {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: format!("{len} bytes; at most {max_bytes} are read for this file"),
        });
    }
    let mut buf = Vec::with_capacity(len as usize);
    use std::io::Read;
    (&mut f).take(max_bytes).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

//! Streaming safetensors writer: the header is computed from names, dtypes and shapes
//! up front, then tensors are written one at a time in header order, so a model
//! never has to be in memory at once.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One tensor to be written.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Name in the file.
    pub name: String,
    /// `F32`, `BF16`, `F16` or `U8`.
    pub dtype: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    /// Bytes of its data.
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * super::dtype_bytes(self.dtype) as usize
    }
}

/// A safetensors file being written: [`SafetensorsWriter::write_next`] once per planned
/// tensor, in order, then [`SafetensorsWriter::finish`].
pub struct SafetensorsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    plan: Vec<PlannedTensor>,
    next: usize,
    /// Bytes of the next tensor already written by [`SafetensorsWriter::write_part`].
    partial: usize,
}

impl SafetensorsWriter {
    /// Creates `path` and writes the header for `plan` (sorted by name, as the
    /// safetensors library orders data).
    pub fn create(path: &Path, mut plan: Vec<PlannedTensor>) -> Result<Self> {
        plan.sort_by(|a, b| a.name.cmp(&b.name));
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut header = serde_json::Map::new();
        let meta: BTreeMap<&str, &str> = [("format", "pt")].into_iter().collect();
        header.insert("__metadata__".into(), serde_json::json!(meta));
        let mut offset = 0usize;
        for t in &plan {
            let end = offset + t.bytes();
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut text = serde_json::Value::Object(header).to_string().into_bytes();
        // Data starts 8-byte aligned, as the reference implementation pads it.
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let mut out = BufWriter::with_capacity(1 << 22, File::create(path).map_err(io)?);
        out.write_all(&(text.len() as u64).to_le_bytes())
            .and_then(|_| out.write_all(&text))
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            plan,
            next: 0,
            partial: 0,
        })
    }

    /// The tensors in the order they must be written.
    pub fn plan(&self) -> &[PlannedTensor] {
        &self.plan
    }

    /// Writes the data of the next planned tensor (little-endian bytes).
    pub fn write_next(&mut self, data: &[u8]) -> Result<()> {
        if let Some(t) = self.plan.get(self.next) {
            if self.partial != 0 || data.len() != t.bytes() {
                return Err(Error::Tensor {
                    path: self.path.clone(),
                    tensor: t.name.clone(),
                    message: format!(
                        "{} bytes given, {} planned",
                        self.partial + data.len(),
                        t.bytes()
                    ),
                });
            }
        }
        self.write_part(data)
    }

    /// Writes the next piece of the next planned tensor's data; the tensor is done
    /// when its planned bytes are all written (a tensor of zero bytes by one empty
    /// piece). Lets a tensor larger than memory be copied through.
    pub fn write_part(&mut self, data: &[u8]) -> Result<()> {
        let t = self.plan.get(self.next).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: more tensors written than planned",
                self.path.display()
            ))
        })?;
        let planned = t.bytes();
        if self.partial + data.len() > planned {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: t.name.clone(),
                message: format!(
                    "{} bytes given, {planned} planned",
                    self.partial + data.len()
                ),
            });
        }
        self.out.write_all(data).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        self.partial += data.len();
        if self.partial == planned {
            self.next += 1;
            self.partial = 0;
        }
        Ok(())
    }

    /// Ends the file after the header with its data left as a hole of the planned
    /// size (reads as zeros, takes no disk): a folder whose tensors are described but
    /// never stored, as `unicorn synth --to` plans from.
    pub fn finish_empty(mut self) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let data: u64 = self.plan.iter().map(|t| t.bytes() as u64).sum();
        self.out.flush().map_err(io)?;
        let file = self.out.get_ref();
        let header = file.metadata().map_err(io)?.len();
        file.set_len(header + data).map_err(io)
    }

    /// Flushes and syncs the file; every planned tensor must have been written.
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.plan.len() {
            return Err(Error::Invalid(format!(
                "{}: {} of {} tensors written",
                self.path.display(),
                self.next,
                self.plan.len()
            )));
        }
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)
    }
}

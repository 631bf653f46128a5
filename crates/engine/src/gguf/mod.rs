//! GGUF files. Reading: metadata with errors that name the file and key, and tensors
//! as [`Weight`]s; parsing itself is candle-core's `gguf_file`. Writing, streamed one
//! tensor at a time: [`writer`].

pub mod reader;
pub mod writer;

use crate::error::{Error, Result};
use crate::formats::Weight;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where tensor data is read from: the file, or (fuzzing, tests) bytes in memory.
trait Data: std::io::Read + std::io::Seek + Send {}
impl<T: std::io::Read + std::io::Seek + Send> Data for T {}

/// An open GGUF file: its parsed header and a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: Mutex<Box<dyn Data>>,
}

impl GgufFile {
    /// Opens and parses the header of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::source::open_regular(path)?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        Self::read(path, BufReader::with_capacity(1 << 20, file), len)
    }

    /// A GGUF held in memory, named `path` in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let len = bytes.len() as u64;
        Self::read(path, std::io::Cursor::new(bytes), len)
    }

    /// The header of a GGUF file of `file_len` bytes from its first bytes, `prefix`
    /// (a file not downloaded yet, fetched with a range request): `None` when the
    /// header goes on past the prefix, so the caller fetches more. The checks are
    /// those of a whole file (tensors must end inside `file_len`); reading a tensor
    /// whose data lies past the prefix fails.
    pub fn from_prefix(path: &Path, prefix: Vec<u8>, file_len: u64) -> Result<Option<Self>> {
        /// Records whether the parser asked for bytes past the prefix: only then is
        /// a failure a short prefix rather than a bad header.
        struct Prefix<'a> {
            data: &'a [u8],
            ran_out: bool,
        }
        impl std::io::Read for Prefix<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.data.len());
                self.ran_out |= n < buf.len();
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }
        let mut r = Prefix {
            data: &prefix,
            ran_out: false,
        };
        match reader::read(&mut r, file_len) {
            Ok(content) => Ok(Some(Self {
                path: path.to_path_buf(),
                content,
                reader: Mutex::new(Box::new(std::io::Cursor::new(prefix))),
            })),
            Err(_) if r.ran_out && (prefix.len() as u64) < file_len => Ok(None),
            Err(message) => Err(Error::BadFile {
                path: path.to_path_buf(),
                message,
            }),
        }
    }

    /// Reads the header of `len` bytes of GGUF from `data`, keeping it for tensors.
    fn read(path: &Path, mut data: impl Data + 'static, len: u64) -> Result<Self> {
        let content = reader::read(&mut data, len).map_err(|message| Error::BadFile {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(Box::new(data)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<String> {
        self.string("general.architecture")
    }

    /// The raw metadata value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn required(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// A required unsigned integer (any integer width is accepted), within its size
    /// limit when it is a size ([`crate::models::size_limit`]).
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.required(key)?;
        let n = value_as_u64(v)
            .ok_or_else(|| self.meta_err(key, format!("expected an integer, found {v:?}")))?;
        match crate::models::size_limit(key) {
            Some(most) if n > most => {
                Err(self.meta_err(key, format!("{n} is more than {most}: not a real model")))
            }
            _ => Ok(n),
        }
    }

    /// An optional unsigned integer.
    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.u64(key).map(Some),
        }
    }

    /// A required float (integers are accepted too).
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.required(key)?;
        value_as_f64(v).ok_or_else(|| self.meta_err(key, format!("expected a number, found {v:?}")))
    }

    /// An optional float.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.f64(key).map(Some),
        }
    }

    /// An optional boolean.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.meta_err(key, format!("expected a boolean, found {v:?}"))),
        }
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<String> {
        match self.required(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(self.meta_err(key, format!("expected a string, found {v:?}"))),
        }
    }

    /// An optional string.
    pub fn string_opt(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let arr = self.array(key)?;
        arr.iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(self.meta_err(key, format!("expected strings, found {v:?}"))),
            })
            .collect()
    }

    /// A required array of numbers, as f32.
    pub fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        let arr = self.array(key)?;
        arr.iter()
            .map(|v| {
                value_as_f64(v)
                    .map(|x| x as f32)
                    .ok_or_else(|| self.meta_err(key, format!("expected numbers, found {v:?}")))
            })
            .collect()
    }

    /// A required array of integers.
    pub fn i64s(&self, key: &str) -> Result<Vec<i64>> {
        let arr = self.array(key)?;
        arr.iter()
            .map(|v| {
                value_as_i64(v)
                    .ok_or_else(|| self.meta_err(key, format!("expected integers, found {v:?}")))
            })
            .collect()
    }

    fn array(&self, key: &str) -> Result<&Vec<Value>> {
        match self.required(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.meta_err(
                key,
                format!("expected an array, found {:?}", v.value_type()),
            )),
        }
    }

    /// Names, GGML types and shapes (in candle's row-major order) of all tensors.
    pub fn tensor_infos(&self) -> Vec<(String, GgmlDType, Vec<usize>)> {
        let mut v: Vec<_> = self
            .content
            .tensor_infos
            .iter()
            .map(|(n, i)| (n.clone(), i.ggml_dtype, i.shape.dims().to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Where a tensor's data is: (absolute byte offset in the file, type, row-major
    /// shape), for readers that stream it in pieces.
    pub fn tensor_location(&self, name: &str) -> Result<(u64, GgmlDType, Vec<usize>)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.tensor_err(name, "missing"))?;
        Ok((
            self.content.tensor_data_offset + info.offset,
            info.ggml_dtype,
            info.shape.dims().to_vec(),
        ))
    }

    /// Every metadata key.
    pub fn metadata_keys(&self) -> Vec<String> {
        self.content.metadata.keys().cloned().collect()
    }

    /// Bytes before the tensor data: the header with all metadata (vocabulary included).
    pub fn header_bytes(&self) -> u64 {
        self.content.tensor_data_offset
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn tensor_err(&self, name: &str, message: impl Into<String>) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message: message.into(),
        }
    }

    /// Loads tensor `name` in its stored type.
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.tensor_err(name, "missing"))?;
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| self.tensor_err(name, "reader poisoned by an earlier panic"))?;
        info.read(&mut *reader, self.content.tensor_data_offset, device)
            .map_err(|e| self.tensor_err(name, e.to_string()))
    }

    /// Loads a 2-D weight matrix `[out, in]`, checking its shape and that it holds
    /// no NaN or infinity (which would silently poison every output), in any format.
    pub fn weight(&self, name: &str, shape: (usize, usize), device: &Device) -> Result<Weight> {
        let q = self.qtensor(name, device)?;
        // (On a GPU the bytes are on the card; there, NaN shows in the outputs.)
        if device.is_cpu() {
            let bad = crate::formats::first_non_finite(&q)
                .map_err(|e| self.tensor_err(name, e.to_string()))?;
            if let Some(why) = bad {
                return Err(self.tensor_err(name, why));
            }
        }
        if q.shape().dims() != [shape.0, shape.1] {
            return Err(self.tensor_err(
                name,
                format!(
                    "shape {:?}, expected [{}, {}]",
                    q.shape().dims(),
                    shape.0,
                    shape.1
                ),
            ));
        }
        Weight::from_qtensor(q).map_err(|e| self.tensor_err(name, e.to_string()))
    }

    /// Loads a 1-D vector (norm weights) as dense f32, checking its length.
    pub fn vector(&self, name: &str, len: usize, device: &Device) -> Result<Tensor> {
        let q = self.qtensor(name, device)?;
        if q.shape().dims() != [len] {
            return Err(self.tensor_err(
                name,
                format!("shape {:?}, expected [{len}]", q.shape().dims()),
            ));
        }
        let t = q
            .dequantize(device)
            .map_err(|e| self.tensor_err(name, e.to_string()))?;
        check_finite(&t).map_err(|m| self.tensor_err(name, m))?;
        Ok(t)
    }
}

/// Rejects NaN and infinite values, which would silently poison every output.
fn check_finite(t: &Tensor) -> std::result::Result<(), String> {
    let v = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!("non-finite value {} at index {i}", v[i])),
        None => Ok(()),
    }
}

fn value_as_u64(v: &Value) -> Option<u64> {
    value_as_i64(v)
        .and_then(|x| u64::try_from(x).ok())
        .or(match v {
            Value::U64(x) => Some(*x),
            _ => None,
        })
}

fn value_as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::I64(x) => *x,
        Value::U64(x) => i64::try_from(*x).ok()?,
        _ => return None,
    })
}

fn value_as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        v => value_as_i64(v).map(|x| x as f64),
    }
}

//! Streaming GGUF v3 writer. The header (metadata, then every tensor's name, shape,
//! type and offset) is written first from a plan, so tensor data can follow one
//! tensor, or one row chunk, at a time; a model is never held in memory whole.
//! candle's writer needs every tensor in memory at once, hence this one.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Tensor data alignment (llama.cpp's default; written as `general.alignment`).
pub const ALIGNMENT: u64 = 32;

/// One tensor to be written: its shape is candle's row-major order (`[rows, cols]`).
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// llama.cpp name.
    pub name: String,
    /// Storage type.
    pub dtype: GgmlDType,
    /// Row-major shape.
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    /// Bytes of its data.
    pub fn bytes(&self) -> u64 {
        let n: u64 = self.shape.iter().map(|&d| d as u64).product();
        n / self.dtype.block_size() as u64 * self.dtype.type_size() as u64
    }
}

fn ggml_type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

fn value_type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Array(items) => {
            let t = items.first().map(value_type_id).unwrap_or(4);
            if items.iter().any(|i| value_type_id(i) != t) {
                return Err(Error::Invalid("GGUF arrays must hold one type".into()));
            }
            out.extend(t.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i)?;
            }
        }
    }
    Ok(())
}

/// A GGUF file being written: [`GgufWriter::write`] data for the planned tensors in
/// order (in as many pieces as wanted), then [`GgufWriter::finish`].
pub struct GgufWriter {
    path: PathBuf,
    out: BufWriter<File>,
    plan: Vec<PlannedTensor>,
    current: usize,
    written_in_current: u64,
}

impl GgufWriter {
    /// Creates `path` and writes the header: `metadata` (plus `general.alignment`)
    /// and the tensor table for `plan`, in the given order.
    pub fn create(
        path: &Path,
        metadata: &[(String, Value)],
        plan: Vec<PlannedTensor>,
    ) -> Result<Self> {
        let mut h = Vec::new();
        h.extend(0x4655_4747u32.to_le_bytes()); // "GGUF"
        h.extend(3u32.to_le_bytes());
        h.extend((plan.len() as u64).to_le_bytes());
        let has_alignment = metadata.iter().any(|(k, _)| k == "general.alignment");
        h.extend(((metadata.len() + usize::from(!has_alignment)) as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut h, k);
            h.extend(value_type_id(v).to_le_bytes());
            put_value(&mut h, v)?;
        }
        if !has_alignment {
            put_str(&mut h, "general.alignment");
            h.extend(4u32.to_le_bytes());
            h.extend((ALIGNMENT as u32).to_le_bytes());
        }
        let mut offset = 0u64;
        for t in &plan {
            put_str(&mut h, &t.name);
            h.extend((t.shape.len() as u32).to_le_bytes());
            // GGUF lists dimensions fastest-varying first.
            for &d in t.shape.iter().rev() {
                h.extend((d as u64).to_le_bytes());
            }
            h.extend(ggml_type_id(t.dtype).to_le_bytes());
            h.extend(offset.to_le_bytes());
            offset += t.bytes().div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        h.resize(
            (h.len() as u64).div_ceil(ALIGNMENT) as usize * ALIGNMENT as usize,
            0,
        );
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = BufWriter::with_capacity(1 << 22, File::create(path).map_err(io)?);
        out.write_all(&h).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            plan,
            current: 0,
            written_in_current: 0,
        })
    }

    /// The planned tensors, in write order.
    pub fn plan(&self) -> &[PlannedTensor] {
        &self.plan
    }

    fn io(&self) -> impl Fn(std::io::Error) -> Error + '_ {
        |source| Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends data of the current tensor; moves to the next when it is complete.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let t = self.plan.get(self.current).ok_or_else(|| {
            Error::Invalid(format!("{}: more data than planned", self.path.display()))
        })?;
        let (name, want) = (t.name.clone(), t.bytes());
        if self.written_in_current + data.len() as u64 > want {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name,
                message: format!("more than the planned {want} bytes"),
            });
        }
        self.out.write_all(data).map_err(self.io())?;
        self.written_in_current += data.len() as u64;
        if self.written_in_current == want {
            let pad = want.div_ceil(ALIGNMENT) * ALIGNMENT - want;
            self.out
                .write_all(&vec![0u8; pad as usize])
                .map_err(self.io())?;
            self.current += 1;
            self.written_in_current = 0;
        }
        Ok(())
    }

    /// Flushes and syncs; every planned tensor must be complete.
    pub fn finish(mut self) -> Result<()> {
        if self.current != self.plan.len() {
            return Err(Error::Invalid(format!(
                "{}: {} of {} tensors written",
                self.path.display(),
                self.current,
                self.plan.len()
            )));
        }
        self.out.flush().map_err(self.io())?;
        self.out.get_ref().sync_all().map_err(self.io())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// What we write, candle reads back: metadata of every type and tensors of
    /// several types and sizes, data streamed in pieces.
    #[test]
    fn candle_reads_back_what_we_stream() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 512.0, &dev)
            .unwrap()
            .reshape((2, 256))
            .unwrap();
        let qa = QTensor::quantize(&a, GgmlDType::Q4K).unwrap();
        let b = Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let qb = QTensor::quantize(&b, GgmlDType::F32).unwrap();
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("x.u32".to_string(), Value::U32(7)),
            ("x.f32".to_string(), Value::F32(0.5)),
            ("x.bool".to_string(), Value::Bool(true)),
            (
                "x.tokens".to_string(),
                Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
            ),
            (
                "x.scores".to_string(),
                Value::Array(vec![Value::F32(-1.0), Value::F32(-2.0)]),
            ),
        ];
        let plan = vec![
            PlannedTensor {
                name: "a".into(),
                dtype: GgmlDType::Q4K,
                shape: vec![2, 256],
            },
            PlannedTensor {
                name: "b".into(),
                dtype: GgmlDType::F32,
                shape: vec![3],
            },
        ];
        let path =
            std::env::temp_dir().join(format!("unicorn-gguf-writer-{}.gguf", std::process::id()));
        let mut w = GgufWriter::create(&path, &meta, plan).unwrap();
        let da = qa.data().unwrap();
        w.write(&da[..100]).unwrap();
        w.write(&da[100..]).unwrap();
        w.write(&qb.data().unwrap()).unwrap();
        w.finish().unwrap();
        let g = crate::gguf::GgufFile::open(&path).unwrap();
        assert_eq!(g.u64("x.u32").unwrap(), 7);
        assert_eq!(g.f64("x.f32").unwrap(), 0.5);
        assert_eq!(g.bool_opt("x.bool").unwrap(), Some(true));
        assert_eq!(g.strings("x.tokens").unwrap(), vec!["a", "bc"]);
        assert_eq!(g.u64("general.alignment").unwrap(), 32);
        let ra = g.qtensor("a", &dev).unwrap();
        assert_eq!(ra.dtype(), GgmlDType::Q4K);
        assert_eq!(ra.data().unwrap().as_ref(), da.as_ref());
        assert_eq!(
            g.vector("b", 3, &dev).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 2.0, 3.0]
        );
        std::fs::remove_file(&path).ok();
    }
}

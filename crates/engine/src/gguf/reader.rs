//! The GGUF header, read and checked by us before anything trusts it. A file from
//! anywhere may declare sizes it does not hold, so every count and length is checked
//! against the bytes that remain before anything is allocated for it, and the tensor
//! layout against the file: alignment a power of two, every tensor's dimensions
//! positive with a product that does not overflow, rows of whole blocks, data
//! aligned, inside the file and not overlapping another tensor's, no name or key
//! twice. What passes is handed to candle's `Content`, whose tensor readers we use.

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;
use std::io::Read;

/// Alignment of tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of arrays in metadata (the format uses one level).
const MAX_DEPTH: usize = 3;
/// Most dimensions a tensor may have (ggml has four).
const MAX_DIMS: usize = 4;
/// Most weights in one tensor: 2^40 (a trillion), far beyond any real one.
const MAX_ELEMENTS: u64 = 1 << 40;

/// Why the header is not a GGUF we read.
pub type HeaderError = String;

/// Reads and checks the header of a GGUF of `file_len` bytes from `r` (at its
/// start).
pub fn read(r: &mut impl Read, file_len: u64) -> Result<Content, HeaderError> {
    let mut h = Header {
        r,
        pos: 0,
        file_len,
        wide: false,
    };
    let magic = h.bytes_array::<4>()?;
    if &magic != b"GGUF" {
        return Err(format!(
            "not a GGUF file (it starts with {:?}, not \"GGUF\")",
            String::from_utf8_lossy(&magic)
        ));
    }
    let version = h.u32()?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(format!("GGUF version {v} is not supported (1, 2 or 3)")),
    };
    h.wide = version > 1;
    let tensors = h.len("tensor count", 8 + 4 + 4 + 8)?;
    let kvs = h.len("metadata count", 8 + 4 + 1)?;
    let mut metadata = HashMap::with_capacity(kvs.min(1 << 16));
    for _ in 0..kvs {
        let key = h.string("metadata key")?;
        let t = h.u32()?;
        let value = h
            .value(t, 0)
            .map_err(|e| format!("metadata key `{key}`: {e}"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!("metadata key `{key}` appears twice"));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(format!(
                "metadata key `general.alignment` is {v:?}: expected a power of two (u32)"
            ))
        }
    };
    let mut infos: Vec<(String, TensorInfo, u64)> = Vec::with_capacity(tensors.min(1 << 16));
    for _ in 0..tensors {
        let name = h.string("tensor name")?;
        let bad = |m: String| format!("tensor `{name}`: {m}");
        let n_dims = h.u32()? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions (1 to {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(if h.wide { h.u64()? } else { h.u32()? as u64 });
        }
        let dtype = h.u32()?;
        let dtype = ggml_type(dtype).ok_or_else(|| bad(format!("unknown type {dtype}")))?;
        let offset = h.u64()?;
        let elements = dims.iter().try_fold(1u64, |n, &d| match d {
            0 => None,
            d => n.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS),
        });
        let Some(elements) = elements else {
            return Err(bad(format!(
                "dimensions {dims:?}: zero, or more than 2^40 weights"
            )));
        };
        let block = dtype.block_size() as u64;
        // ggml's first dimension is the row: rows are whole blocks.
        if dims[0] % block != 0 {
            return Err(bad(format!(
                "rows of {} weights are not whole blocks of {block} ({dtype:?})",
                dims[0]
            )));
        }
        if offset % alignment != 0 {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let bytes = elements / block * dtype.type_size() as u64;
        // candle's shapes are row-major: ggml's dimensions reversed.
        dims.reverse();
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        infos.push((
            name,
            TensorInfo {
                ggml_dtype: dtype,
                shape: shape.into(),
                offset,
            },
            bytes,
        ));
    }
    let data = h.pos.div_ceil(alignment) * alignment;
    let mut tensor_infos = HashMap::with_capacity(infos.len());
    let mut ranges: Vec<(u64, u64, &str)> = infos
        .iter()
        .map(|(n, i, bytes)| (i.offset, *bytes, n.as_str()))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        let ((a, a_len, a_name), (b, _, b_name)) = (w[0], w[1]);
        // Saturating: offsets come from the file (the end check below refuses a
        // range that does not fit).
        if a.saturating_add(a_len) > b {
            return Err(format!(
                "tensors `{a_name}` and `{b_name}` share bytes (data at {a} + {a_len} and at {b})"
            ));
        }
    }
    if let Some(&(off, len, name)) = ranges.last() {
        let end = data.saturating_add(off).saturating_add(len);
        if end > file_len {
            return Err(format!(
                "tensor `{name}` ends at byte {end}, past the end of the file ({file_len} bytes): the file is truncated or damaged"
            ));
        }
    }
    for (name, info, _) in infos {
        if tensor_infos.contains_key(&name) {
            return Err(format!("tensor `{name}` appears twice"));
        }
        tensor_infos.insert(name, info);
    }
    Ok(Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset: data,
    })
}

/// The GGML type of a GGUF type id (the ones candle reads).
fn ggml_type(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// A cursor over the header that knows how many bytes remain.
struct Header<'r, R> {
    r: &'r mut R,
    pos: u64,
    file_len: u64,
    /// Lengths and counts are u64 (GGUF v2 and v3) rather than u32 (v1).
    wide: bool,
}

impl<R: Read> Header<'_, R> {
    fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.pos)
    }

    fn bytes_array<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| {
            format!(
                "the header ends early (at byte {} of {}): the file is truncated: {e}",
                self.pos, self.file_len
            )
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes_array()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes_array()?))
    }

    /// A count of things at least `min_size` bytes each, which must fit in what
    /// remains of the file.
    fn len(&mut self, what: &str, min_size: u64) -> Result<usize, HeaderError> {
        let n = if self.wide {
            self.u64()?
        } else {
            self.u32()? as u64
        };
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(format!(
                "{what} {n} cannot fit in the {} bytes that remain: the file is truncated or damaged",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, HeaderError> {
        let n = self.len(what, 1)?;
        let mut b = vec![0u8; n];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("{what}: the header ends early: the file is truncated: {e}"))?;
        self.pos += n as u64;
        String::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn value(&mut self, t: u32, depth: usize) -> Result<Value, HeaderError> {
        Ok(match t {
            0 => Value::U8(self.bytes_array::<1>()?[0]),
            1 => Value::I8(self.bytes_array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes_array()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes_array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_le_bytes(self.bytes_array()?)),
            7 => match self.bytes_array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("boolean byte {b} (0 or 1)")),
            },
            8 => Value::String(self.string("string")?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
                }
                let elem = self.u32()?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => 8,
                    9 => 12,
                    e => return Err(format!("unknown array element type {e}")),
                };
                let n = self.len("array length", min)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_le_bytes(self.bytes_array()?)),
            t => return Err(format!("unknown value type {t}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 header with `kv` metadata and `tensors` (name, dims in ggml order,
    /// type, offset), followed by `data` zero bytes after alignment 32.
    fn gguf(kv: &[(&str, Value)], tensors: &[(&str, &[u64], u32, u64)], data: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kv.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        for (k, v) in kv {
            s(&mut b, k);
            match v {
                Value::U32(x) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                Value::String(x) => {
                    b.extend(8u32.to_le_bytes());
                    s(&mut b, x);
                }
                _ => unreachable!(),
            }
        }
        for (name, dims, t, off) in tensors {
            s(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.to_le_bytes());
            b.extend(off.to_le_bytes());
        }
        b.resize(b.len().div_ceil(32) * 32 + data, 0);
        b
    }

    fn read_bytes(b: &[u8]) -> Result<Content, HeaderError> {
        read(&mut &b[..], b.len() as u64)
    }

    #[test]
    fn a_sound_header_reads_and_hostile_ones_are_refused_with_the_reason() {
        // Two F32 tensors of 8 weights (32 bytes each), back to back.
        let ok = gguf(
            &[("general.architecture", Value::String("llama".into()))],
            &[("a", &[8], 0, 0), ("b", &[8], 0, 32)],
            64,
        );
        let c = read_bytes(&ok).unwrap();
        assert_eq!(c.tensor_infos.len(), 2);
        assert_eq!(c.tensor_data_offset as usize, ok.len() - 64);

        let refused = |b: Vec<u8>, why: &str| {
            let e = read_bytes(&b).unwrap_err();
            assert!(e.contains(why), "{e} (wanted: {why})");
        };
        refused(
            gguf(&[], &[("a", &[16], 0, 0), ("b", &[16], 0, 32)], 128),
            "share bytes",
        );
        refused(gguf(&[], &[("a", &[8], 0, 8)], 64), "alignment");
        refused(
            gguf(&[("general.alignment", Value::U32(0))], &[], 0),
            "power of two",
        );
        refused(
            gguf(&[("general.alignment", Value::U32(24))], &[], 0),
            "power of two",
        );
        refused(gguf(&[], &[("a", &[8], 0, 0)], 16), "past the end");
        // Offsets near 2^64 must not wrap into range (found by fuzzing).
        let far = u64::MAX - 31;
        refused(gguf(&[], &[("a", &[8], 0, far)], 64), "past the end");
        refused(
            gguf(&[], &[("a", &[8], 0, 0), ("b", &[8], 0, far)], 64),
            "past the end",
        );
        refused(
            gguf(&[], &[("a", &[8], 0, 0), ("a", &[8], 0, 32)], 64),
            "twice",
        );
        refused(gguf(&[], &[("a", &[0], 0, 0)], 0), "zero");
        refused(
            gguf(&[], &[("a", &[1 << 32, 1 << 32, 1 << 32], 0, 0)], 0),
            "2^40",
        );
        // Q4_0 (type 2) rows must be whole blocks of 32.
        refused(gguf(&[], &[("a", &[48], 2, 0)], 64), "whole blocks");
        refused(gguf(&[], &[("a", &[8], 99, 0)], 64), "unknown type");
        refused(
            gguf(&[("k", Value::U32(1)), ("k", Value::U32(2))], &[], 0),
            "twice",
        );
        // Counts and lengths larger than the file.
        let mut b = ok.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        refused(b, "cannot fit");
        let mut b = ok.clone();
        b[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        refused(b, "cannot fit");
        refused(b"GGUF\x03\x00\x00\x00".to_vec(), "ends early");
        refused(b"GGML".to_vec(), "not a GGUF");
        // Every prefix of a sound file is refused, never a panic.
        for n in 0..ok.len() - 64 {
            assert!(read_bytes(&ok[..n]).is_err(), "prefix {n}");
        }
    }
}

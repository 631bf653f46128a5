//! The KV cache: keys and values of every layer, held as f32, f16 or Q8_0 rows.

use candle_core::{DType, Result, Tensor};
use half::f16;

/// How the cache holds keys and values on the CPU. F16, the default, halves F32's
/// memory; Q8_0 (llama.cpp's `--cache-type-k/v q8_0`) takes 27 % of it. Measured
/// against an f32 cache on Gemma 3 270M (`unicorn compare M M --base-kv-type f32`,
/// README): mean KL divergence 1e-6 for F16 and 9e-4 for Q8_0. A model on a GPU
/// keeps an f32 cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum KvType {
    /// 4 bytes a value.
    #[serde(rename = "f32")]
    F32,
    /// 2 bytes a value.
    #[default]
    #[serde(rename = "f16")]
    F16,
    /// 34 bytes per 32 values: an f16 scale and 32 signed bytes.
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl KvType {
    /// Every type, in the order `--kv-type` lists them.
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::Q8_0, KvType::F32];

    /// Its name: `f32`, `f16` or `q8_0`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
        }
    }

    /// Parses a name (case-insensitive).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s}: not a KV cache type (f16, q8_0, f32)"))
    }

    /// Bytes one row of `d` values takes (`d` a multiple of 32 for Q8_0).
    pub fn row_bytes(self, d: usize) -> usize {
        match self {
            Self::F32 => 4 * d,
            Self::F16 => 2 * d,
            Self::Q8_0 => d / 32 * 34,
        }
    }

    /// Why this type cannot hold heads of `head_dim` values, if it cannot.
    pub fn unsupported(self, head_dim: usize) -> Option<String> {
        (self == Self::Q8_0 && !head_dim.is_multiple_of(32)).then(|| {
            format!("a q8_0 KV cache needs a head size that is a multiple of 32 (this model's is {head_dim})")
        })
    }

    /// `x` (`[1, kv_heads, t, d]`, as the model computed it) in this type's rows.
    fn store(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::F32 => Ok(x.clone()),
            Self::F16 => x.to_dtype(DType::F16),
            Self::Q8_0 => {
                let (b, h, t, d) = x.dims4()?;
                if let Some(why) = self.unsupported(d) {
                    candle_core::bail!("{why}");
                }
                let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let mut bytes = Vec::with_capacity(b * h * t * self.row_bytes(d));
                for block in values.chunks_exact(32) {
                    crate::formats::q8_0::quantize_block(block, &mut bytes);
                }
                Tensor::from_vec(bytes, (b, h, t, self.row_bytes(d)), x.device())
            }
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Q8_0 rows (`[.., n, d / 32 * 34]` bytes) back to f32 values (`[.., n, d]`).
pub(crate) fn dequantize_q8_0(t: &Tensor, d: usize) -> Result<Tensor> {
    let (b, h, n, _) = t.dims4()?;
    let bytes = t.flatten_all()?.to_vec1::<u8>()?;
    let mut out = Vec::with_capacity(b * h * n * d);
    for block in bytes.chunks_exact(34) {
        let s = f16::from_le_bytes([block[0], block[1]]).to_f32();
        out.extend(block[2..].iter().map(|&q| s * q as i8 as f32));
    }
    Tensor::from_vec(out, (b, h, n, d), t.device())
}

/// Keys and values of one layer, preallocated in power-of-two sizes (at least 64
/// positions) so that a decode step appends in place, and so the size after `n`
/// positions is predictable: `n.next_power_of_two()` (see [`KvCache::capacity_for`]).
/// Buffer slot `j` holds position `base + j`. A sliding-window layer drops positions
/// no future query can see (keeping [`ROLLBACK_SLACK`] more so a chat can roll back
/// the tail of a turn), so its memory stays bounded by about two windows.
/// Positions a sliding layer keeps beyond its window, so that re-rendering the last
/// few tokens of a conversation can still reuse the cache.
pub const ROLLBACK_SLACK: usize = 64;

#[derive(Debug, Default, Clone)]
struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
    base: usize,
    window: Option<usize>,
}

/// The KV cache of a whole model: one entry per layer, `len` positions filled.
/// It lives outside the model (in the chat session) so one model can serve many.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    kind: KvType,
}

impl KvCache {
    /// An empty cache with one entry per layer (`None` for a global layer, the window
    /// for a sliding-window layer) holding keys and values as `kind`.
    pub fn new(windows: &[Option<usize>], kind: KvType) -> Self {
        Self {
            layers: windows
                .iter()
                .map(|&window| LayerKv {
                    window,
                    ..Default::default()
                })
                .collect(),
            len: 0,
            kind,
        }
    }

    /// How keys and values are held.
    pub fn kind(&self) -> KvType {
        self.kind
    }

    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything from position `len` on (used to roll back to a shared
    /// prefix) and returns how many positions are kept: fewer than asked (none) when
    /// a sliding layer has already dropped keys that continuing from `len` would need.
    pub fn truncate(&mut self, len: usize) -> usize {
        let len = self.len.min(len);
        let servable = self.layers.iter().all(|l| match l.window {
            Some(w) => l.base <= (len + 1).saturating_sub(w),
            None => true,
        });
        if servable {
            self.len = len;
        } else {
            self.clear();
        }
        self.len
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
        for l in &mut self.layers {
            l.base = 0;
        }
    }

    /// Positions a layer's buffers hold after a prompt of `prompt` tokens and decoding
    /// up to `n` positions in all: the growth and dropping rules of `append`, without
    /// running them.
    pub fn capacity_for(window: Option<usize>, prompt: usize, n: usize) -> usize {
        let live = match window {
            // After the prompt, single tokens arrive; dropping keeps `w + slack` of them.
            Some(w) => n.min((w + ROLLBACK_SLACK + 1).max(prompt)),
            None => n,
        };
        live.max(64).next_power_of_two()
    }

    /// Bytes allocated for keys and values.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.k, &l.v])
            .flatten()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Marks `n` more positions as filled; called once per forward pass, after all layers.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Appends `k`, `v` (`[1, kv_heads, t, head_dim]`) to layer `layer` at the current
    /// position. Returns the layer's key and value buffers (`[1, kv_heads, capacity,
    /// row]`, a row being `head_dim` values as [`KvCache::kind`] stores them) and the
    /// position of their first slot; slots up to position `len + t` are filled.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor, usize)> {
        let (k, v) = (&self.kind.store(k)?, &self.kind.store(v)?);
        let start = self.len;
        let t = k.dim(2)?;
        let entry = &mut self.layers[layer];
        let mut held = start - entry.base;
        let cap = entry.k.as_ref().map(|x| x.dim(2)).transpose()?.unwrap_or(0);
        if held + t > cap {
            if let Some(w) = entry.window {
                let keep_from = start.saturating_sub(w + ROLLBACK_SLACK).max(entry.base);
                let drop = keep_from - entry.base;
                if drop > 0 {
                    for buf in [&entry.k, &entry.v].into_iter().flatten() {
                        // With one kv head the narrowed view is already contiguous, and
                        // `contiguous()` would hand back the buffer it is written into.
                        let view = buf.narrow(2, drop, held - drop)?;
                        let kept = if view.is_contiguous() {
                            view.copy()?
                        } else {
                            view.contiguous()?
                        };
                        buf.slice_set(&kept, 2, 0)?;
                    }
                    entry.base = keep_from;
                    held -= drop;
                }
            }
        }
        if held + t > cap {
            let new_cap = (held + t).max(64).next_power_of_two();
            let grow = |old: &Option<Tensor>, like: &Tensor| -> Result<Tensor> {
                let (b, h, _, d) = like.dims4()?;
                let fresh = Tensor::zeros((b, h, new_cap, d), like.dtype(), like.device())?;
                if let Some(old) = old {
                    if held > 0 {
                        fresh.slice_set(&old.narrow(2, 0, held)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(fresh)
            };
            entry.k = Some(grow(&entry.k, k)?);
            entry.v = Some(grow(&entry.v, v)?);
        }
        let (ck, cv) = match (&entry.k, &entry.v) {
            (Some(ck), Some(cv)) => (ck, cv),
            _ => candle_core::bail!("kv cache layer {layer} not allocated"),
        };
        ck.slice_set(&k.contiguous()?, 2, held)?;
        cv.slice_set(&v.contiguous()?, 2, held)?;
        Ok((ck.clone(), cv.clone(), entry.base))
    }
}

//! The pieces every decoder-only architecture shares: the KV cache, rotary position
//! tables, and causal (optionally sliding-window) grouped-query attention.

use candle_core::{DType, Device, Result, Tensor, D};

/// Keys and values of one layer, preallocated and grown by doubling so that a decode
/// step appends in place instead of copying the whole cache.
#[derive(Debug, Default, Clone)]
struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

/// The KV cache of a whole model: one entry per layer, `len` positions filled.
/// It lives outside the model (in the chat session) so one model can serve many.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layers],
            len: 0,
        }
    }

    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything from position `len` on (used to roll back to a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
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
    /// position and returns all keys and values so far (`[1, kv_heads, len + t, head_dim]`).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let start = self.len;
        let t = k.dim(2)?;
        let entry = &mut self.layers[layer];
        let need = start + t;
        let cap = entry.k.as_ref().map(|x| x.dim(2)).transpose()?.unwrap_or(0);
        if need > cap {
            let new_cap = need.max(cap * 2).max(64);
            let grow = |old: &Option<Tensor>, like: &Tensor| -> Result<Tensor> {
                let (b, h, _, d) = like.dims4()?;
                let fresh = Tensor::zeros((b, h, new_cap, d), like.dtype(), like.device())?;
                if let Some(old) = old {
                    if start > 0 {
                        fresh.slice_set(&old.narrow(2, 0, start)?.contiguous()?, 2, 0)?;
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
        ck.slice_set(&k.contiguous()?, 2, start)?;
        cv.slice_set(&v.contiguous()?, 2, start)?;
        Ok((ck.narrow(2, 0, need)?, cv.narrow(2, 0, need)?))
    }
}

/// Rotary embedding parameters of one kind of layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Base θ.
    pub base: f64,
    /// Linear scaling factor: positions are divided by it (1.0 = none).
    pub linear_scale: f64,
    /// Rotated dimensions (= head_dim for every model we support).
    pub dim: usize,
    /// GPT-NeoX pairing (i with i + dim/2) when true; GGUF llama's interleaved pairs when false.
    pub neox: bool,
}

impl Rope {
    /// cos and sin tables `[t, dim/2]` for positions `start .. start + t`.
    /// Angles are computed in f64 so long contexts keep full precision.
    pub fn tables(&self, start: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in start..start + t {
            let pos = p as f64 / self.linear_scale;
            for i in 0..half {
                let inv_freq = 1.0 / self.base.powf((2 * i) as f64 / self.dim as f64);
                let a = pos * inv_freq;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, half), device)?,
            Tensor::from_vec(sin, (t, half), device)?,
        ))
    }

    /// Rotates `x` (`[1, heads, t, dim]`) with tables from [`Rope::tables`].
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if self.neox {
            candle_nn::rotary_emb::rope(&x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope_i(&x, cos, sin)
        }
    }
}

/// Causal grouped-query attention of `t` new queries at positions `start .. start + t`
/// against all `k`, `v` so far. `window`: a sliding-window layer lets query `q` see key
/// `k` iff `q - window < k <= q` (the window includes the token itself).
///
/// Shapes: `q` `[1, heads, t, d]`, `k`/`v` `[1, kv_heads, start + t, d]`. Returns `[1, t, heads * d]`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    start: usize,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    let (_, heads, t, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let total = k.dim(2)?;
    let group = heads / kv_heads;
    // Keys older than the window can never be seen by any of the t queries: skip them.
    let first_key = match window {
        Some(w) => (start + 1).saturating_sub(w),
        None => 0,
    };
    let (k, v) = if first_key > 0 {
        let n = total - first_key;
        (k.narrow(2, first_key, n)?, v.narrow(2, first_key, n)?)
    } else {
        (k.clone(), v.clone())
    };
    let n_keys = total - first_key;
    // Fold the query heads that share a KV head into the row dimension, so K and V are
    // used as they are instead of being repeated `group` times.
    let q = q.reshape((1, kv_heads, group * t, d))?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let needs_mask = t > 1 || window.is_some_and(|w| n_keys > w);
    let scores = if needs_mask {
        let mut mask = Vec::with_capacity(group * t * n_keys);
        for _ in 0..group {
            for i in 0..t {
                let qp = start + i;
                for j in 0..n_keys {
                    let kp = first_key + j;
                    let visible = kp <= qp && window.is_none_or(|w| qp - kp < w);
                    mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (1, 1, group * t, n_keys), q.device())?;
        scores.broadcast_add(&mask)?
    } else {
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    let out = probs.to_dtype(v.dtype())?.matmul(&v.contiguous()?)?; // [1, kv_heads, group*t, d]
    out.reshape((1, heads, t, d))?
        .transpose(1, 2)?
        .reshape((1, t, heads * d))
}

/// RMS normalisation over the last dimension with a multiplier `w`
/// (for Gemma the stored `1 + w`; loaders resolve that).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

/// Index of the last dimension, for readability at call sites.
pub const LAST: D = D::Minus1;

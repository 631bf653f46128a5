//! The pieces every decoder-only architecture shares: the KV cache, rotary position
//! tables, and causal (optionally sliding-window) grouped-query attention.

use candle_core::{DType, Device, Result, Tensor};

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
}

impl KvCache {
    /// An empty cache with one entry per layer: `None` for a global layer, the window
    /// for a sliding-window layer.
    pub fn new(windows: &[Option<usize>]) -> Self {
        Self {
            layers: windows
                .iter()
                .map(|&window| LayerKv {
                    window,
                    ..Default::default()
                })
                .collect(),
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
    /// head_dim]`) and the position of their first slot; slots up to position
    /// `len + t` are filled.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor, usize)> {
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
/// against the cached keys and values. `window`: a sliding-window layer lets query `q`
/// see key `k` iff `q - window < k <= q` (the window includes the token itself).
///
/// Shapes: `q` `[1, heads, t, d]`, `k`/`v` cache buffers `[1, kv_heads, capacity, d]`
/// whose slot `j` holds position `base + j`, filled up to position `start + t`.
/// Returns `[1, t, heads * d]`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (start, base): (usize, usize),
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    let t = q.dim(2)?;
    let total = start + t;
    // Keys older than the window can never be seen by any of the t queries: skip them.
    let first_key = match window {
        Some(w) => (start + 1).saturating_sub(w),
        None => 0,
    };
    if first_key < base {
        candle_core::bail!(
            "kv cache dropped position {first_key} that attention still needs (kept from {base})"
        );
    }
    if t == 1 && q.device().is_cpu() && q.dtype() == DType::F32 && k.dtype() == DType::F32 {
        return attend_one_cpu(q, k, v, first_key - base, total - base, scale as f32);
    }
    let (_, heads, _, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let n_keys = total - first_key;
    let k = k.narrow(2, first_key - base, n_keys)?;
    let v = v.narrow(2, first_key - base, n_keys)?;
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

/// One query (a decode step) straight over the cache buffers: no transposed copy of
/// the keys, no mask, heads in parallel. Buffer slots `first_key .. total` are visible.
fn attend_one_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    first_key: usize,
    total: usize,
    scale: f32,
) -> Result<Tensor> {
    let (_, heads, _, d) = q.dims4()?;
    let (_, kv_heads, cap, _) = k.dims4()?;
    let group = heads / kv_heads;
    let qv = q.flatten_all()?.to_vec1::<f32>()?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (candle_core::Storage::Cpu(kc), candle_core::Storage::Cpu(vc)) = (&*ks, &*vs) else {
        candle_core::bail!("attention fast path needs CPU tensors");
    };
    if !kl.is_contiguous() || !vl.is_contiguous() {
        candle_core::bail!("kv cache buffers must be contiguous");
    }
    let kd = &kc.as_slice::<f32>()?[kl.start_offset()..];
    let vd = &vc.as_slice::<f32>()?[vl.start_offset()..];
    let mut out = vec![0f32; heads * d];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(heads, |hs| {
        let mut scores = vec![0f32; total - first_key];
        for h in hs {
            let base = (h / group) * cap * d;
            let qh = &qv[h * d..(h + 1) * d];
            let mut max = f32::NEG_INFINITY;
            for (s, krow) in scores
                .iter_mut()
                .zip(kd[base + first_key * d..].chunks_exact(d))
            {
                *s = dot(qh, krow) * scale;
                max = max.max(*s);
            }
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            // SAFETY: head h owns out[h*d .. (h+1)*d]; no other work item writes it.
            let oh = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(h * d), d) };
            let inv = 1.0 / sum;
            for (s, vrow) in scores
                .iter()
                .zip(vd[base + first_key * d..].chunks_exact(d))
            {
                let w = s * inv;
                for (o, x) in oh.iter_mut().zip(vrow) {
                    *o += w * x;
                }
            }
        }
    });
    drop((ks, vs));
    Tensor::from_vec(out, (1, 1, heads * d), q.device())
}

/// Dot product with eight independent accumulators and no bounds checks in the loop,
/// so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A raw pointer shared by work items that write disjoint parts.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// RMS normalisation over the last dimension with a multiplier `w`
/// (for Gemma the stored `1 + w`; loaders resolve that).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_for_predicts_the_allocated_size() {
        for window in [None, Some(8), Some(100), Some(512)] {
            for prompt in [1, 5, 300, 700] {
                let mut c = KvCache::new(&[window]);
                let kv = |t: usize| Tensor::zeros((1, 1, t, 2), DType::F32, &Device::Cpu).unwrap();
                c.append(0, &kv(prompt), &kv(prompt)).unwrap();
                c.advance(prompt);
                for n in prompt + 1..=1500 {
                    c.append(0, &kv(1), &kv(1)).unwrap();
                    c.advance(1);
                    let want = KvCache::capacity_for(window, prompt, n) * 2 * 2 * 4;
                    assert_eq!(c.bytes(), want, "window {window:?} prompt {prompt} n {n}");
                }
            }
        }
    }

    fn random(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The decode fast path against the general path, for GQA groups of 1, 3 and 4,
    /// with and without a window, on buffers with spare capacity.
    #[test]
    fn single_query_fast_path_matches_the_general_path() {
        for (heads, kv, d, window) in [
            (9, 3, 64, None),
            (4, 1, 256, None),
            (4, 1, 256, Some(5)),
            (2, 2, 32, Some(3)),
        ] {
            let (cap, total) = (16, 11);
            let k = random((1, kv, cap, d), 1);
            let v = random((1, kv, cap, d), 2);
            let q = random((1, heads, 1, d), 3);
            let start = total - 1;
            let fast = attend(&q, &k, &v, (start, 0), 0.125, window).unwrap();
            // The general path, forced by a dtype the fast path does not take.
            let slow = attend(
                &q.to_dtype(DType::F64).unwrap(),
                &k.to_dtype(DType::F64).unwrap(),
                &v.to_dtype(DType::F64).unwrap(),
                (start, 0),
                0.125,
                window,
            )
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
            let diff = (fast - slow)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff < 1e-5,
                "heads {heads} kv {kv} d {d} window {window:?}: {diff}"
            );
        }
    }
}

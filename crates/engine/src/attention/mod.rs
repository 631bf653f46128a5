//! The pieces every decoder-only architecture shares: the KV cache ([`cache`]),
//! rotary position tables ([`rope`]), and causal (optionally sliding-window) grouped-query
//! attention, where blocks of positions (an image's tokens) may also see each other
//! both ways ([`attend_blocks`]).

mod cache;
mod rope;

pub use cache::{KvCache, KvType, ROLLBACK_SLACK};
pub use rope::{Rope, RopeScaling, ROPE_FREQS};

use crate::pool::SyncPtr;
use candle_core::{DType, Result, Tensor};
use half::f16;

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
    attend_blocks(q, k, v, (start, base), scale, window, &[])
}

/// [`attend`] where the queries of each block of `blocks` (absolute positions, end
/// excluded) also see the later keys of their own block: Gemma 3's image tokens
/// attend to each other both ways. A window still applies after that: query `q` sees
/// key `k` iff (`k <= q` or both are in one block) and `k > q - window`. A block
/// must lie wholly within the positions this call computes, or wholly before them
/// (where it changes nothing: later queries see all of it anyway).
pub fn attend_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (start, base): (usize, usize),
    scale: f64,
    window: Option<usize>,
    blocks: &[std::ops::Range<usize>],
) -> Result<Tensor> {
    let t = q.dim(2)?;
    let total = start + t;
    if let Some(b) = blocks
        .iter()
        .find(|b| b.end > start && (b.start < start || b.end > total))
    {
        candle_core::bail!(
            "a bidirectional block {b:?} must lie within the positions computed together ({start}..{total})"
        );
    }
    // The last key query position p sees: p, or the end of its block.
    let last_seen = |p: usize| -> usize {
        blocks
            .iter()
            .find(|b| b.contains(&p))
            .map_or(p, |b| b.end - 1)
    };
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
    if t == 1 && q.device().is_cpu() && q.dtype() == DType::F32 {
        return attend_one_cpu(q, k, v, first_key - base, total - base, scale as f32);
    }
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        return attend_many_cpu(q, k, v, (start, base), scale as f32, window, &last_seen);
    }
    let (_, heads, _, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let group = heads / kv_heads;
    let n_keys = total - first_key;
    // The visible rows in the query's type (an f16 or Q8_0 cache is converted here,
    // once per layer and prefill; the matmuls dominate).
    let computable = |x: &Tensor| -> Result<Tensor> {
        let x = x.narrow(2, first_key - base, n_keys)?;
        match x.dtype() {
            DType::U8 => cache::dequantize_q8_0(&x, d)?.to_dtype(q.dtype()),
            dt if dt != q.dtype() => x.to_dtype(q.dtype()),
            _ => Ok(x),
        }
    };
    let (k, v) = (computable(k)?, computable(v)?);
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
                    let visible = kp <= last_seen(qp) && window.is_none_or(|w| kp + w > qp);
                    mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (1, 1, group * t, n_keys), q.device())?
            .to_dtype(scores.dtype())?;
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

/// One query (a decode step) straight over the cache buffers, in the type they hold:
/// no transposed copy of the keys, no mask, heads in parallel. Buffer slots
/// `first_key .. total` are visible.
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
    let mut out = vec![0f32; heads * d];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    cache_rows(k, v, |kd, vd| {
        crate::pool::run_chunked(heads, |hs| {
            let mut scores = Vec::with_capacity(total - first_key);
            let (mut kbuf, mut vbuf) = (vec![0f32; d], vec![0f32; d]);
            for h in hs {
                let base = (h / group) * cap + first_key;
                let qh = &qv[h * d..(h + 1) * d];
                // SAFETY: head h owns out[h*d .. (h+1)*d]; no other work item writes it.
                let oh = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(h * d), d) };
                attend_query(
                    total - first_key,
                    scale,
                    &mut scores,
                    |j| dot(qh, kd.row(base + j, d, &mut kbuf)),
                    |j, w| {
                        for (o, x) in oh.iter_mut().zip(vd.row(base + j, d, &mut vbuf)) {
                            *o += w * x;
                        }
                    },
                );
            }
        });
        Ok(())
    })?;
    Tensor::from_vec(out, (1, 1, heads * d), q.device())
}

/// Query rows per work item of [`attend_many_cpu`]: their keys are converted to
/// f32 once per item (a sixteenth of the item's multiply-adds at most).
const QUERY_CHUNK: usize = 16;

/// Prefill attention on the CPU: each work item is one head and a run of query
/// rows; it converts the keys and values those rows see to f32 once, then per row
/// scores only the visible keys (causal, and inside the window), softmax, and the
/// weighted sum of values. candle's path computed every score, masked half of them
/// away, and multiplied on one thread. Query position `p` sees the keys from the
/// window's start to `last_seen(p)` (`p`, or the end of its bidirectional block).
fn attend_many_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (start, base): (usize, usize),
    scale: f32,
    window: Option<usize>,
    last_seen: &(dyn Fn(usize) -> usize + Sync),
) -> Result<Tensor> {
    let (_, heads, t, d) = q.dims4()?;
    let (_, kv_heads, _, _) = k.dims4()?;
    let group = heads / kv_heads;
    let cap = k.dim(2)?;
    let qv = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    // Keys visible from position p: (lo(p)..=p), lo never below the cache's base
    // (checked by the caller for the first query; later ones see less).
    let lo = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w)).max(base);
    let mut out = vec![0f32; t * heads * d];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let chunks = t.div_ceil(QUERY_CHUNK);
    cache_rows(k, v, |kd, vd| {
        crate::pool::run_chunked(heads * chunks, |items| {
            let (mut keys, mut vals, mut scores) = (Vec::new(), Vec::new(), Vec::new());
            let mut buf = vec![0f32; d];
            for item in items {
                let (h, c) = (item / chunks, item % chunks);
                let rows = c * QUERY_CHUNK..((c + 1) * QUERY_CHUNK).min(t);
                let kv = (h / group) * cap;
                // Keys this run of queries sees, as f32 rows.
                let first = lo(start + rows.start);
                let last = rows
                    .clone()
                    .map(|i| last_seen(start + i))
                    .max()
                    .unwrap_or(0);
                keys.clear();
                vals.clear();
                for p in first..=last {
                    keys.extend_from_slice(kd.row(kv + p - base, d, &mut buf));
                    vals.extend_from_slice(vd.row(kv + p - base, d, &mut buf));
                }
                for i in rows {
                    let p = start + i;
                    let qh = &qv[(h * t + i) * d..(h * t + i + 1) * d];
                    let from = lo(p) - first;
                    // SAFETY: output row i, head h is written by this item only.
                    let oh = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add((i * heads + h) * d), d)
                    };
                    attend_query(
                        last_seen(p) + 1 - first - from,
                        scale,
                        &mut scores,
                        |j| dot(qh, &keys[(from + j) * d..(from + j + 1) * d]),
                        |j, w| {
                            for (o, x) in oh.iter_mut().zip(&vals[(from + j) * d..]) {
                                *o += w * x;
                            }
                        },
                    );
                }
            }
        });
        Ok(())
    })?;
    Tensor::from_vec(out, (1, t, heads * d), q.device())
}

/// One query's attention over `n` visible keys: scores `key_dot(j)·scale`, their
/// softmax, and `add_value(j, weight)` for each key (both CPU paths).
fn attend_query(
    n: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    mut key_dot: impl FnMut(usize) -> f32,
    mut add_value: impl FnMut(usize, f32),
) {
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in 0..n {
        let s = key_dot(j) * scale;
        max = max.max(s);
        scores.push(s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    for (j, s) in scores.iter().enumerate() {
        add_value(j, s * inv);
    }
}

/// Runs `f` on the KV cache buffers `k` and `v` as rows in their stored type
/// (CPU, contiguous: the cache's own buffers).
fn cache_rows<T>(k: &Tensor, v: &Tensor, f: impl FnOnce(&Rows, &Rows) -> Result<T>) -> Result<T> {
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (candle_core::Storage::Cpu(kc), candle_core::Storage::Cpu(vc)) = (&*ks, &*vs) else {
        candle_core::bail!("attention over the cache needs CPU tensors");
    };
    if !kl.is_contiguous() || !vl.is_contiguous() {
        candle_core::bail!("kv cache buffers must be contiguous");
    }
    f(
        &Rows::of(kc, kl.start_offset())?,
        &Rows::of(vc, vl.start_offset())?,
    )
}

/// A cache buffer's rows as stored.
enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// Q8_0 blocks: 34 bytes per 32 values.
    Q8_0(&'a [u8]),
}

impl<'a> Rows<'a> {
    /// The rows of a cache buffer from element `offset` on.
    fn of(s: &'a candle_core::CpuStorage, offset: usize) -> Result<Self> {
        Ok(match s {
            candle_core::CpuStorage::F32(x) => Rows::F32(&x[offset..]),
            candle_core::CpuStorage::F16(x) => Rows::F16(&x[offset..]),
            candle_core::CpuStorage::U8(x) => Rows::Q8_0(&x[offset..]),
            _ => candle_core::bail!("no attention over a cache of this type"),
        })
    }

    /// Row `i` of `d` values as f32: the stored slice, or converted into `buf`.
    #[inline]
    fn row<'b>(&'b self, i: usize, d: usize, buf: &'b mut [f32]) -> &'b [f32] {
        match self {
            Rows::F32(x) => &x[i * d..(i + 1) * d],
            Rows::F16(x) => {
                use half::slice::HalfFloatSliceExt;
                x[i * d..(i + 1) * d].convert_to_f32_slice(buf);
                buf
            }
            Rows::Q8_0(x) => {
                let n = d / 32 * 34;
                for (block, out) in x[i * n..(i + 1) * n]
                    .chunks_exact(34)
                    .zip(buf.chunks_exact_mut(32))
                {
                    let s = f16::from_le_bytes([block[0], block[1]]).to_f32();
                    for (o, &q) in out.iter_mut().zip(&block[2..]) {
                        *o = s * q as i8 as f32;
                    }
                }
                buf
            }
        }
    }
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

/// RMS normalisation over the last dimension with a multiplier `w`
/// (for Gemma the stored `1 + w`; loaders resolve that).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use unicorn_test_support::{floats, max_abs_diff};

    #[test]
    fn capacity_for_predicts_the_allocated_size() {
        for window in [None, Some(8), Some(100), Some(512)] {
            for prompt in [1, 5, 300, 700] {
                let mut c = KvCache::new(&[window], KvType::F32);
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
            let diff = max_abs_diff(&floats(&fast), &floats(&slow));
            assert!(
                diff < 1e-5,
                "heads {heads} kv {kv} d {d} window {window:?}: {diff}"
            );
        }
    }

    /// Attention over a cache of each type equals the reference (f64, general path)
    /// over the values that type stores: decode (one query, the fast path) and
    /// prefill (several queries) alike, with and without a window.
    #[test]
    fn every_cache_type_attends_over_what_it_stores() {
        for kind in KvType::ALL {
            for (heads, kv, d, window, t) in [
                (4, 1, 64, None, 1),
                (4, 2, 32, Some(5), 1),
                (4, 1, 64, None, 6),
                (2, 2, 32, Some(3), 4),
                // Several work items of queries, after earlier tokens.
                (8, 2, 32, Some(7), 40),
                (4, 1, 64, None, 37),
            ] {
                let total = 11.max(t + 5);
                let start = total - t;
                let mut cache = KvCache::new(&[window], kind);
                let k = random((1, kv, total, d), 1);
                let v = random((1, kv, total, d), 2);
                cache
                    .append(
                        0,
                        &k.narrow(2, 0, start).unwrap(),
                        &v.narrow(2, 0, start).unwrap(),
                    )
                    .unwrap();
                cache.advance(start);
                let (ck, cv, base) = cache
                    .append(
                        0,
                        &k.narrow(2, start, t).unwrap(),
                        &v.narrow(2, start, t).unwrap(),
                    )
                    .unwrap();
                let q = random((1, heads, t, d), 3);
                let got = attend(&q, &ck, &cv, (start, base), 0.125, window).unwrap();
                // What the cache holds, as f64.
                let stored = |x: &Tensor| -> Tensor {
                    match x.dtype() {
                        DType::U8 => cache::dequantize_q8_0(x, d).unwrap(),
                        _ => x.clone(),
                    }
                    .to_dtype(DType::F64)
                    .unwrap()
                };
                let want = attend(
                    &q.to_dtype(DType::F64).unwrap(),
                    &stored(&ck),
                    &stored(&cv),
                    (start, base),
                    0.125,
                    window,
                )
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
                let diff = max_abs_diff(&floats(&got), &floats(&want));
                assert!(
                    diff < 1e-5,
                    "{kind} heads {heads} kv {kv} t {t} window {window:?}: {diff}"
                );
            }
        }
    }

    /// Bidirectional blocks against a direct reference (every visible key by the
    /// rule, in f64), on the CPU prefill path and the general one, after cached
    /// tokens, with and without a window, and with queries that see keys of their
    /// block beyond their work item's rows.
    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a list of one block, not a range's values
    fn blocks_see_their_later_keys_inside_the_window() {
        let (heads, kv, d) = (4, 2, 32);
        for (window, blocks) in [
            (None, vec![5..12]),
            (Some(4), vec![5..12]),
            (Some(8), vec![3..5, 6..30]),
            (None, vec![0..3, 3..40]),
        ] {
            let (start, t) = (3, 40);
            let total = start + t;
            let k = random((1, kv, total, d), 1);
            let v = random((1, kv, total, d), 2);
            let q = random((1, heads, t, d), 3);
            let scale = 0.2;
            let got = attend_blocks(&q, &k, &v, (start, 0), scale, window, &blocks).unwrap();
            let general = attend_blocks(
                &q.to_dtype(DType::F64).unwrap(),
                &k.to_dtype(DType::F64).unwrap(),
                &v.to_dtype(DType::F64).unwrap(),
                (start, 0),
                scale,
                window,
                &blocks,
            )
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
            let (qv, kv_, vv) = (floats(&q), floats(&k), floats(&v));
            let mut want = vec![0f32; t * heads * d];
            for h in 0..heads {
                let g = h / (heads / kv);
                for i in 0..t {
                    let p = start + i;
                    let visible: Vec<usize> = (0..total)
                        .filter(|&kp| {
                            let same = blocks.iter().any(|b| b.contains(&p) && b.contains(&kp));
                            (kp <= p || same) && window.is_none_or(|w| kp + w > p)
                        })
                        .collect();
                    let s: Vec<f64> = visible
                        .iter()
                        .map(|&kp| {
                            (0..d)
                                .map(|x| {
                                    qv[(h * t + i) * d + x] as f64
                                        * kv_[(g * total + kp) * d + x] as f64
                                })
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for x in 0..d {
                        let o: f64 = visible
                            .iter()
                            .zip(&s)
                            .map(|(&kp, sc)| {
                                (sc - m).exp() / z * vv[(g * total + kp) * d + x] as f64
                            })
                            .sum();
                        want[(i * heads + h) * d + x] = o as f32;
                    }
                }
            }
            for (name, out) in [("cpu", &got), ("general", &general)] {
                let diff = max_abs_diff(&floats(out), &want);
                assert!(
                    diff < 1e-5,
                    "{name} window {window:?} blocks {blocks:?}: {diff}"
                );
            }
        }
        // A block cut by the start of the pass cannot be served.
        let q = random((1, 2, 4, 32), 3);
        let k = random((1, 2, 8, 32), 1);
        assert!(attend_blocks(&q, &k, &k, (4, 0), 0.2, None, &[2..6]).is_err());
        assert!(attend_blocks(&q, &k, &k, (4, 0), 0.2, None, &[6..9]).is_err());
    }

    #[test]
    fn cache_bytes_follow_the_type() {
        for (kind, per_value) in [
            (KvType::F32, 4.0),
            (KvType::F16, 2.0),
            (KvType::Q8_0, 34.0 / 32.0),
        ] {
            let mut c = KvCache::new(&[None], kind);
            let kv = Tensor::zeros((1, 2, 64, 64), DType::F32, &Device::Cpu).unwrap();
            c.append(0, &kv, &kv).unwrap();
            assert_eq!(
                c.bytes() as f64,
                2.0 * 2.0 * 64.0 * 64.0 * per_value,
                "{kind}"
            );
            assert_eq!(kind.row_bytes(64) as f64, 64.0 * per_value);
        }
        assert!(KvType::Q8_0.unsupported(48).is_some());
        assert_eq!(KvType::parse("Q8_0"), Ok(KvType::Q8_0));
        assert!(KvType::parse("q4").is_err());
    }
}

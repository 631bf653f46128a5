//! Q8_0 (llama.cpp `block_q8_0`): 32 weights as i8 with `w = d·q`.

use super::blocks::BlockQ16;
use half::f16;

/// One block: scale and 32 signed quants.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Portable reference dot product.
fn dot_scalar(w: &[BlockQ8_0], x: &[BlockQ16]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(b, a)| {
            let isum: i32 =
                b.qs.iter()
                    .zip(&a.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            b.d.to_f32() * a.d * isum as f32
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
impl super::blocks::Block32 for BlockQ8_0 {
    const OFFSET: bool = false;
    #[inline(always)]
    unsafe fn quants(&self) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
        use std::arch::x86_64::*;
        let p = self.qs.as_ptr() as *const __m128i;
        (
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p)),
            _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(1))),
        )
    }
    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn offset(&self) -> f16 {
        f16::ZERO
    }
}

super::blocks::block_format!(BlockQ8_0, Q8_0, 32, Block32);

/// llama.cpp's reference Q8_0 quantization of 32 values, appended to `out`: scale
/// `max|x| / 127` as f16, then each value over the scale, rounded.
pub fn quantize_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// A dense matrix `[rows, cols]` (any float type; `cols` a multiple of 32) as Q8_0,
/// rows in parallel on the pool, converted a run of rows at a time (the f32 copy of
/// a 262k-row head would be 2.7 GB).
pub fn quantize_matrix(
    w: &candle_core::Tensor,
) -> candle_core::Result<candle_core::quantized::QTensor> {
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
    let (rows, cols) = w.dims2()?;
    if !cols.is_multiple_of(32) {
        candle_core::bail!("{cols} columns are not whole Q8_0 blocks of 32");
    }
    const RUN: usize = 256;
    let row_bytes = cols / 32 * 34;
    let mut bytes = vec![0u8; rows * row_bytes];
    let out = crate::pool::SyncPtr(bytes.as_mut_ptr());
    let failed = std::sync::Mutex::new(None);
    crate::pool::run_chunked(rows.div_ceil(RUN), |runs| {
        for r in runs {
            let (r0, n) = (r * RUN, RUN.min(rows - r * RUN));
            let x = match w
                .narrow(0, r0, n)
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
            {
                Ok(x) => x,
                Err(e) => {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return;
                }
            };
            let mut q = Vec::with_capacity(n * row_bytes);
            x.chunks_exact(32).for_each(|b| quantize_block(b, &mut q));
            // SAFETY: rows r0..r0+n of the output belong to this item only.
            unsafe {
                std::ptr::copy_nonoverlapping(q.as_ptr(), out.get().add(r0 * row_bytes), q.len())
            };
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    qtensor_from_ggml(
        GgmlDType::Q8_0,
        &bytes,
        vec![rows, cols],
        &candle_core::Device::Cpu,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::blocks::testing::{check_format, lcg};

    #[test]
    fn kernels_match_the_layout_and_each_other() {
        let deq =
            |b: &BlockQ8_0| -> Vec<f32> { b.qs.iter().map(|&q| b.d.to_f32() * q as f32).collect() };
        let tame = |b: &mut BlockQ8_0, seed: &mut u64| {
            b.d = f16::from_f32(lcg(seed) * 0.01);
            // The extreme value must not overflow the pair sums.
            b.qs[0] = -128;
        };
        check_format(Some(candle_core::quantized::GgmlDType::Q8_0), tame, deq);
        #[cfg(target_arch = "x86_64")]
        crate::formats::wide::testing::check_pairs(tame);
    }
}

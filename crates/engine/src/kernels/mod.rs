//! Our own CPU matmul kernels for block formats where candle's generic path is slow
//! or loses precision. Each takes packed weights as stored in GGUF and f32
//! activations; activations are quantized to 8 bits per block of 32 (with an exact
//! f32 block sum), weights are unpacked in registers. x86-64 picks AVX2 at run time
//! (the build baseline is x86-64-v3); other targets use the portable loop.

pub mod q4_1;

use rayon::prelude::*;

/// Activations quantized for integer dot products: 32 values, their scale, and the
/// exact sum of the original values (so weight minimums add no rounding error).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale: value ≈ d × q.
    pub d: f32,
    /// Sum of the 32 original values.
    pub s: f32,
    /// Quantized values.
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8>() == 40);

/// Quantizes one row (length a multiple of 32) into `out`.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (xs, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        b.d = d;
        b.s = xs.iter().sum();
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
        }
    }
}

/// `y[m, n] = x[m, k] · W[n, k]ᵀ`, rows of W dotted by `dot(row_index, x_blocks)`.
/// Rows are split over the rayon pool; each task handles a run of rows for all m
/// activation rows so a weight row is read from memory once.
pub(crate) fn matmul_rows(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    y: &mut [f32],
    dot: impl Fn(usize, &[BlockQ8]) -> f32 + Sync,
) {
    let kb = k / 32;
    let mut xq = vec![
        BlockQ8 {
            d: 0.0,
            s: 0.0,
            qs: [0; 32]
        };
        m * kb
    ];
    xq.par_chunks_mut(kb)
        .zip(x.par_chunks(k))
        .for_each(|(q, row)| quantize_row_q8(row, q));
    const ROWS: usize = 16;
    // Results land transposed ([n, m]) so each task writes one contiguous piece.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(ROWS * m)
        .enumerate()
        .for_each(|(c, out)| {
            let r0 = c * ROWS;
            for (i, o) in out.chunks_mut(m).enumerate() {
                for (j, v) in o.iter_mut().enumerate() {
                    *v = dot(r0 + i, &xq[j * kb..(j + 1) * kb]);
                }
            }
        });
    for (r, row) in yt.chunks(m).enumerate() {
        for (j, v) in row.iter().enumerate() {
            y[j * n + r] = *v;
        }
    }
}

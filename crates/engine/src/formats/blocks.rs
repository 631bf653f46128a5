//! The GGUF block formats our kernels multiply (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K), and the
//! driver they share. Activations are quantized to **16** bits per block of 32 (with
//! an exact f32 block sum), not to 8 bits as llama.cpp does: 8-bit activations put
//! about ±0.3 logits of noise on Gemma 3 270M, enough to flip greedy choices whose
//! margin is 0.25, while 16 bits cost a few more instructions per block and keep
//! results within float32 rounding of the exact product. Weights are unpacked in
//! registers. Each format's file holds its block layout and its dot products (a
//! portable reference, and AVX2 where [`crate::cpu`] finds it); the driver here is
//! written once against [`BlockFormat`].

use super::parallel::{by_fours, for_row_runs, SyncPtr};

/// Activations quantized for integer dot products, as one format's kernels read them.
pub trait Activation: Copy + Sync + Send {
    /// Values per block.
    const WEIGHTS: usize;
    /// A block of zeros (to allocate before quantizing).
    const ZERO: Self;
    /// Quantizes one row (length a multiple of [`Activation::WEIGHTS`]) into `out`.
    fn quantize_row(x: &[f32], out: &mut [Self]);
}

/// Activations for the 32-weight formats: 32 values, their scale, and the exact sum
/// of the original values (so weight minimums and offsets add no rounding).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ16 {
    /// Scale: value ≈ d × q.
    pub d: f32,
    /// Sum of the 32 original values.
    pub s: f32,
    /// Quantized values.
    pub qs: [i16; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ16>() == 72);

/// The 16-bit quantization of 32 values: scale `amax / 32767`, values rounded.
#[inline(always)]
pub(crate) fn q16_block(xs: &[f32]) -> (f32, impl Iterator<Item = i16> + '_) {
    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 32767.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    (d, xs.iter().map(move |v| (v * id).round() as i16))
}

/// Quantizes one row (length a multiple of 32) into `out`.
pub fn quantize_row_q16(x: &[f32], out: &mut [BlockQ16]) {
    for (xs, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let (d, qs) = q16_block(xs);
        b.d = d;
        b.s = xs.iter().sum();
        for (q, v) in b.qs.iter_mut().zip(qs) {
            *q = v;
        }
    }
}

impl Activation for BlockQ16 {
    const WEIGHTS: usize = 32;
    const ZERO: Self = Self {
        d: 0.0,
        s: 0.0,
        qs: [0; 32],
    };
    fn quantize_row(x: &[f32], out: &mut [Self]) {
        quantize_row_q16(x, out)
    }
}

/// Activations for the k-quant formats: 256 values quantized exactly as eight
/// [`BlockQ16`] (a 16-bit value and a scale per 32), but with each value split into
/// its low byte (unsigned) and high byte (signed), `q = lo + 256·hi`. Byte dot
/// products (`vpdpbusd`, `vpmaddubsw`) then multiply 4-bit or 6-bit weights with
/// 16-bit activations in two passes and no widening, and the scales sit in arrays a
/// vector load reads. Results equal [`BlockQ16`]'s up to float summation order.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub struct BlockQ16K {
    /// Low bytes of the 256 quantized values.
    pub lo: [u8; 256],
    /// High bytes (signed) of the 256 quantized values.
    pub hi: [i8; 256],
    /// Scale of each block of 32: value ≈ d × q.
    pub d: [f32; 8],
    /// Sum of the 32 original values of each block of 32.
    pub s: [f32; 8],
    /// Sum of the quantized values of each group of 16 (exact: at most 16 × 32767).
    pub qsum16: [f32; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ16K>() == 640);

impl BlockQ16K {
    /// Quantized value `i` (0..256).
    #[inline(always)]
    pub fn q(&self, i: usize) -> i32 {
        self.lo[i] as i32 + 256 * self.hi[i] as i32
    }
}

impl Activation for BlockQ16K {
    const WEIGHTS: usize = 256;
    const ZERO: Self = Self {
        lo: [0; 256],
        hi: [0; 256],
        d: [0.0; 8],
        s: [0.0; 8],
        qsum16: [0.0; 16],
    };
    fn quantize_row(x: &[f32], out: &mut [Self]) {
        for (xs, b) in x.chunks_exact(256).zip(out.iter_mut()) {
            for (j, xs) in xs.chunks_exact(32).enumerate() {
                let (d, qs) = q16_block(xs);
                b.d[j] = d;
                b.s[j] = xs.iter().sum();
                for (l, q) in qs.enumerate() {
                    b.lo[32 * j + l] = q as u8;
                    b.hi[32 * j + l] = (q >> 8) as i8;
                }
            }
            for g in 0..16 {
                b.qsum16[g] = (16 * g..16 * g + 16).map(|i| b.q(i)).sum::<i32>() as f32;
            }
        }
    }
}

/// A GGUF block format our kernels multiply. Each format's file implements it; the
/// drivers below are written once against it. A new format is one file and one
/// [`Rows`] variant.
pub trait BlockFormat: Copy + Sync {
    /// Weights per block: 32, or 256 for k-quants (whose rows are a multiple of 256).
    const WEIGHTS: usize;
    /// The activations this format's kernels read.
    type Act: Activation;
    /// The matrix as the [`Rows`] variant of this format.
    fn rows(w: &[Self]) -> Rows<'_>;
    /// Portable dot product of one weight row with one activation row.
    fn dot_scalar(w: &[Self], x: &[Self::Act]) -> f32;
    /// Portable dot products of one weight row with four activation rows.
    fn dot4_scalar(w: &[Self], x: [&[Self::Act]; 4]) -> [f32; 4] {
        std::array::from_fn(|r| Self::dot_scalar(w, x[r]))
    }
    /// AVX2 + FMA [`BlockFormat::dot_scalar`].
    ///
    /// # Safety
    /// Only where AVX2 and FMA were detected.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2(w: &[Self], x: &[Self::Act]) -> f32;
    /// AVX2 + FMA [`BlockFormat::dot4_scalar`].
    ///
    /// # Safety
    /// Only where AVX2 and FMA were detected.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot4_avx2(w: &[Self], x: [&[Self::Act]; 4]) -> [f32; 4];
    /// AVX-512 (F, BW, VNNI) [`BlockFormat::dot_scalar`]; formats without one use AVX2.
    ///
    /// # Safety
    /// Only where AVX-512F, BW and VNNI, AVX2 and FMA were detected.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn dot_avx512(w: &[Self], x: &[Self::Act]) -> f32 {
        Self::dot_avx2(w, x)
    }
    /// AVX-512 [`BlockFormat::dot4_scalar`]; formats without one use AVX2.
    ///
    /// # Safety
    /// As [`BlockFormat::dot_avx512`].
    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn dot4_avx512(w: &[Self], x: [&[Self::Act]; 4]) -> [f32; 4] {
        Self::dot4_avx2(w, x)
    }
}

/// Which kernels a matmul runs: the widest this CPU has ([`Simd::best`]), or a
/// narrower one (tests run each against the portable reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// Portable Rust.
    Portable,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512F, BW and VNNI (k-quants; other formats take their AVX2 path).
    Avx512,
}

impl Simd {
    /// The widest path this CPU runs.
    pub fn best() -> Self {
        let cpu = crate::cpu::features();
        if cpu.avx512vnni && cpu.avx2_fma {
            Self::Avx512
        } else if cpu.avx2_fma {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// Every path this CPU runs, narrowest first.
    pub fn available() -> Vec<Self> {
        [Self::Portable, Self::Avx2, Self::Avx512]
            .into_iter()
            .filter(|&s| s as u8 <= Self::best() as u8)
            .collect()
    }
}

/// Implements [`BlockFormat`] for a format file's block type by delegating to the
/// file's `dot_scalar`, and either (with `Block32`, on [`BlockQ16`] activations) to
/// the shared kernels of the 32-weight formats, [`dot_block32_avx2`] and
/// [`dot4_block32_avx2`], or (with `KQuant`, on [`BlockQ16K`]) to the file's
/// `dot_avx2`, `dot4_avx2`, `dot_avx512` and `dot4_avx512`. Every kernel function is
/// `#[inline]`: it is then compiled into the driver's codegen unit and inlined there,
/// whichever module it lives in (across units it stayed a call, measured 10-15 %
/// slower at prefill).
macro_rules! block_format {
    ($block:ty, $variant:ident, 32, Block32) => {
        $crate::formats::blocks::block_format!(@impl $block, $variant, 32,
            $crate::formats::blocks::BlockQ16,
            $crate::formats::blocks::dot_block32_avx2,
            $crate::formats::blocks::dot4_block32_avx2, {});
    };
    ($block:ty, $variant:ident, 256, KQuant) => {
        $crate::formats::blocks::block_format!(@impl $block, $variant, 256,
            $crate::formats::blocks::BlockQ16K, dot_avx2, dot4_avx2, {
            #[cfg(target_arch = "x86_64")]
            #[inline]
            unsafe fn dot_avx512(w: &[Self], x: &[Self::Act]) -> f32 {
                dot_avx512(w, x)
            }
            #[cfg(target_arch = "x86_64")]
            #[inline]
            unsafe fn dot4_avx512(w: &[Self], x: [&[Self::Act]; 4]) -> [f32; 4] {
                dot4_avx512(w, x)
            }
        });
    };
    (@impl $block:ty, $variant:ident, $weights:expr, $act:ty, $dot:path, $dot4:path, { $($extra:tt)* }) => {
        impl $crate::formats::blocks::BlockFormat for $block {
            const WEIGHTS: usize = $weights;
            type Act = $act;
            fn rows(w: &[Self]) -> $crate::formats::blocks::Rows<'_> {
                $crate::formats::blocks::Rows::$variant(w)
            }
            fn dot_scalar(w: &[Self], x: &[Self::Act]) -> f32 {
                dot_scalar(w, x)
            }
            #[cfg(target_arch = "x86_64")]
            #[inline]
            unsafe fn dot_avx2(w: &[Self], x: &[Self::Act]) -> f32 {
                $dot(w, x)
            }
            #[cfg(target_arch = "x86_64")]
            #[inline]
            unsafe fn dot4_avx2(w: &[Self], x: [&[Self::Act]; 4]) -> [f32; 4] {
                $dot4(w, x)
            }
            $($extra)*
        }
    };
}
pub(crate) use block_format;

/// One weight row by one activation row on the `simd` path (which must be one this
/// CPU runs: [`Simd::best`] or narrower).
#[inline(always)]
pub(crate) fn dot<B: BlockFormat>(w: &[B], x: &[B::Act], simd: Simd) -> f32 {
    match simd {
        // SAFETY: only paths this CPU runs are ever chosen (Simd::best).
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { B::dot_avx512(w, x) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { B::dot_avx2(w, x) },
        _ => B::dot_scalar(w, x),
    }
}

/// One weight row by four activation rows on the `simd` path (see [`dot`]).
#[inline(always)]
pub(crate) fn dot4<B: BlockFormat>(w: &[B], x: [&[B::Act]; 4], simd: Simd) -> [f32; 4] {
    match simd {
        // SAFETY: only paths this CPU runs are ever chosen (Simd::best).
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { B::dot4_avx512(w, x) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { B::dot4_avx2(w, x) },
        _ => B::dot4_scalar(w, x),
    }
}

/// `y[m, n] = x[m, k] · W[n, k]ᵀ` for one matrix (row-major, k/32 blocks a row).
pub fn matmul<B: BlockFormat>(x: &[f32], m: usize, k: usize, w: &[B], n: usize, y: &mut [f32]) {
    let out = matmul_many(x, m, m, k, &[(B::rows(w), n)]);
    y.copy_from_slice(&out[0]);
}

/// A quantized matrix our kernels multiply: its rows as blocks of one format.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'a> {
    /// Q4_0 blocks.
    Q4_0(&'a [super::q4_0::BlockQ4_0]),
    /// Q4_1 blocks.
    Q4_1(&'a [super::q4_1::BlockQ4_1]),
    /// Q5_0 blocks.
    Q5_0(&'a [super::q5_0::BlockQ5_0]),
    /// Q8_0 blocks.
    Q8_0(&'a [super::q8_0::BlockQ8_0]),
    /// Q4_K super-blocks.
    Q4K(&'a [super::q4_k::BlockQ4K]),
    /// Q6_K super-blocks.
    Q6K(&'a [super::q6_k::BlockQ6K]),
}

impl Rows<'_> {
    /// Number of weights stored.
    fn weights(&self) -> usize {
        match self {
            Self::Q4_0(w) => w.len() * 32,
            Self::Q4_1(w) => w.len() * 32,
            Self::Q5_0(w) => w.len() * 32,
            Self::Q8_0(w) => w.len() * 32,
            Self::Q4K(w) => w.len() * 256,
            Self::Q6K(w) => w.len() * 256,
        }
    }

    /// Whether this format's kernels read [`BlockQ16K`] activations (else [`BlockQ16`]).
    fn k_activations(&self) -> bool {
        matches!(self, Self::Q4K(_) | Self::Q6K(_))
    }

    /// Rows `rows` dotted with every activation row of `acts`; `out(j, r, v)` stores
    /// a result. The format is matched once per run of rows.
    fn dot_rows(
        &self,
        rows: std::ops::Range<usize>,
        acts: &Acts,
        simd: Simd,
        out: impl FnMut(usize, usize, f32),
    ) {
        // Kept out of line: inlined into the work-item closure it was measured 1.8x
        // slower (prefill), depending on unrelated code elsewhere.
        #[inline(never)]
        fn run<B: BlockFormat>(
            w: &[B],
            rows: std::ops::Range<usize>,
            k: usize,
            xq: &[B::Act],
            simd: Simd,
            out: impl FnMut(usize, usize, f32),
        ) {
            let kb = k / <B::Act as Activation>::WEIGHTS; // activation blocks per row
            let m = xq.len() / kb;
            let wb = k / B::WEIGHTS; // weight blocks per row
            debug_assert_eq!(wb, kb, "one weight block per activation block");
            let act = |j: usize| &xq[j * kb..(j + 1) * kb];
            let row = |r: usize| &w[r * wb..(r + 1) * wb];
            let mut out = out;
            // A long row along k in chunks whose activations stay in L1 while every
            // weight row of the item meets them. A whole row of Gemma 3 27B's
            // FFN-down input (21504 values, 54 KB) does not fit, and each weight row
            // re-read it from L2: that matmul ran at 12 GB/s of weights where the
            // others ran at 26-30 (one core), 22 GB/s in chunks. Groups of four take
            // the same chunks in the same order, so their sums are bit-identical to
            // single rows' (a batched decode step gives each sequence what it would
            // get alone).
            let act_bytes = std::mem::size_of_val(act(0));
            let chunk = if act_bytes > ACT_L1_BYTES {
                (ACT_CHUNK_BYTES / std::mem::size_of::<B::Act>()).max(1)
            } else {
                kb
            };
            let fours = m - m % 4;
            by_fours(
                fours,
                rows.clone(),
                |r, j| {
                    let mut acc = [0f32; 4];
                    for c in (0..kb).step_by(chunk) {
                        let e = (c + chunk).min(kb);
                        let d = dot4(
                            &row(r)[c..e],
                            std::array::from_fn(|i| &act(j + i)[c..e]),
                            simd,
                        );
                        for (a, d) in acc.iter_mut().zip(d) {
                            *a += d;
                        }
                    }
                    acc
                },
                |r, j| dot(row(r), act(j), simd),
                &mut out,
            );
            assert!(rows.len() <= super::parallel::ROWS);
            for j in fours..m {
                let mut acc = [0f32; super::parallel::ROWS];
                for c in (0..kb).step_by(chunk) {
                    let e = (c + chunk).min(kb);
                    for (a, r) in acc.iter_mut().zip(rows.clone()) {
                        *a += dot(&row(r)[c..e], &act(j)[c..e], simd);
                    }
                }
                for (&a, r) in acc.iter().zip(rows.clone()) {
                    out(j, r, a);
                }
            }
        }
        /// The tiled prefill kernels ([`super::wide`]), AVX-512 only.
        #[cfg(target_arch = "x86_64")]
        #[inline(never)]
        fn run_tiles<B: super::wide::Tile>(
            w: &[B],
            rows: std::ops::Range<usize>,
            k: usize,
            xq: &[B::Act],
            mut out: impl FnMut(usize, usize, f32),
        ) {
            let kb = k / <B::Act as Activation>::WEIGHTS;
            let m = xq.len() / kb;
            let wb = kb * B::PER_ACT;
            let act = |j: usize| &xq[j * kb..(j + 1) * kb];
            let row = |r: usize| &w[r * wb..(r + 1) * wb];
            // Tiles of 8 weight rows (a whole work item) by 8 activation rows; the
            // ragged edges one weight row at a time, then by 4 and 1 activation rows.
            // SAFETY: tiled activations are only built where AVX-512 VNNI was
            // detected (matmul_many); every slice is one row of k values.
            let mut j = 0;
            while j < m {
                let n = if m - j >= 8 {
                    8
                } else if m - j >= 4 {
                    4
                } else {
                    1
                };
                let mut r = rows.start;
                while r < rows.end {
                    let whole = n == 8 && rows.end - r >= 8;
                    let mut put = |ri: usize, v: &[f32]| {
                        v.iter()
                            .enumerate()
                            .for_each(|(i, &v)| out(j + i, r + ri, v))
                    };
                    if whole {
                        let t = unsafe {
                            B::tile::<8, 8>(
                                std::array::from_fn(|i| row(r + i)),
                                std::array::from_fn(|i| act(j + i)),
                            )
                        };
                        t.iter().enumerate().for_each(|(ri, v)| put(ri, v));
                    } else if n == 8 {
                        let [v] = unsafe {
                            B::tile::<1, 8>([row(r)], std::array::from_fn(|i| act(j + i)))
                        };
                        put(0, &v);
                    } else if n == 4 {
                        let [v] = unsafe {
                            B::tile::<1, 4>([row(r)], std::array::from_fn(|i| act(j + i)))
                        };
                        put(0, &v);
                    } else {
                        let [v] = unsafe { B::tile::<1, 1>([row(r)], [act(j)]) };
                        put(0, &v);
                    }
                    r += if whole { 8 } else { 1 };
                }
                j += n;
            }
        }
        let k = acts.k;
        #[cfg(target_arch = "x86_64")]
        {
            let (wide, pairs) = (&acts.wide, &acts.pairs);
            match self {
                Self::Q4K(w) if !wide.is_empty() => return run_tiles(w, rows, k, wide, out),
                Self::Q6K(w) if !wide.is_empty() => return run_tiles(w, rows, k, wide, out),
                Self::Q4_0(w) if !pairs.is_empty() => return run_tiles(w, rows, k, pairs, out),
                Self::Q4_1(w) if !pairs.is_empty() => return run_tiles(w, rows, k, pairs, out),
                Self::Q5_0(w) if !pairs.is_empty() => return run_tiles(w, rows, k, pairs, out),
                Self::Q8_0(w) if !pairs.is_empty() => return run_tiles(w, rows, k, pairs, out),
                _ => {}
            }
        }
        match self {
            Self::Q4_0(w) => run(w, rows, k, &acts.q16, simd, out),
            Self::Q4_1(w) => run(w, rows, k, &acts.q16, simd, out),
            Self::Q5_0(w) => run(w, rows, k, &acts.q16, simd, out),
            Self::Q8_0(w) => run(w, rows, k, &acts.q16, simd, out),
            Self::Q4K(w) => run(w, rows, k, &acts.q16k, simd, out),
            Self::Q6K(w) => run(w, rows, k, &acts.q16k, simd, out),
        }
    }
}

/// One matmul's activations, quantized once for every kind of kernel that reads them
/// (only the kinds its matrices need).
struct Acts {
    /// Values per row.
    k: usize,
    q16: Vec<BlockQ16>,
    q16k: Vec<BlockQ16K>,
    /// For the k-quants at prefill with AVX-512 (then `q16k` is empty).
    wide: Vec<super::wide::BlockQ16W>,
    /// For the 32-weight formats at prefill with AVX-512 (then `q16` is empty).
    pairs: Vec<super::wide::BlockQ16P>,
}

/// A decode activation row larger than this is taken in chunks of
/// [`ACT_CHUNK_BYTES`]: it would not stay in L1 (32-48 KB) while weights stream
/// past. Smaller rows go whole (chunks then only cost: measured at 4B's shapes).
const ACT_L1_BYTES: usize = 32 << 10;
/// See [`ACT_L1_BYTES`]: measured best of 4, 8, 16 and 32 KB at 27B's FFN-down.
const ACT_CHUNK_BYTES: usize = 4 << 10;

/// Activation rows from which the tiled prefill kernels ([`super::wide`]) run: a
/// block's widening then serves at least four rows.
const WIDE_MIN_ROWS: usize = 4;

/// `x` (`m` rows of `k`) quantized to `A`, rows in parallel when there are many.
fn quantize_rows<A: Activation>(x: &[f32], m: usize, k: usize) -> Vec<A> {
    let kb = k / A::WEIGHTS;
    let mut xq = vec![A::ZERO; m * kb];
    if m <= 4 {
        // A few rows quantize faster than the pool can be woken.
        for (r, out) in xq.chunks_mut(kb).enumerate() {
            A::quantize_row(&x[r * k..(r + 1) * k], out);
        }
    } else {
        let xq_ptr = SyncPtr(xq.as_mut_ptr());
        crate::pool::run_chunked(m, |rows| {
            for r in rows {
                // SAFETY: each activation row r is written by exactly one work item.
                let out = unsafe { std::slice::from_raw_parts_mut(xq_ptr.get().add(r * kb), kb) };
                A::quantize_row(&x[r * k..(r + 1) * k], out);
            }
        });
    }
    xq
}

/// `y_i[m, n_i] = x[m, k] · W_iᵀ` for matrices that share their input (q, k, v; gate
/// and up): x is quantized once (per kind of activation the formats read) and all
/// rows run in one parallel region of our pool, so the many small matmuls of a
/// decode step pay microseconds, not thread wake-ups. Each work item is a run of rows
/// for all m activation rows, so a weight row is read once.
///
/// `seq_rows`: the rows one sequence brings (m itself outside batching). The tiled
/// prefill kernels run when it is at least [`WIDE_MIN_ROWS`]; a batch of decoding
/// sequences (one row each) keeps the decode kernels, whose results for a row are
/// the same whatever else is in the batch.
pub fn matmul_many(
    x: &[f32],
    m: usize,
    seq_rows: usize,
    k: usize,
    mats: &[(Rows<'_>, usize)],
) -> Vec<Vec<f32>> {
    assert!(
        k.is_multiple_of(32) && x.len() == m * k,
        "activations [{m}, {k}] do not fit {}",
        x.len()
    );
    for (w, n) in mats {
        assert_eq!(
            w.weights(),
            n * k,
            "matrix of {n} rows does not match k = {k}"
        );
    }
    let simd = Simd::best();
    // A k-quant matrix has rows of whole 256-weight blocks (checked above through
    // its weight count), so k is a multiple of 256 wherever q16k is built.
    let k_quants = mats.iter().any(|(w, _)| w.k_activations());
    let blocks32 = mats.iter().any(|(w, _)| !w.k_activations());
    assert!(
        !k_quants || k.is_multiple_of(256),
        "k-quant rows of {k} weights"
    );
    let tiles = cfg!(target_arch = "x86_64")
        && simd == Simd::Avx512
        && m >= WIDE_MIN_ROWS
        && seq_rows >= WIDE_MIN_ROWS;
    let wide = k_quants && tiles;
    let pairs = blocks32 && tiles && k.is_multiple_of(64);
    let acts = Acts {
        k,
        q16: if blocks32 && !pairs {
            quantize_rows(x, m, k)
        } else {
            Vec::new()
        },
        pairs: if pairs {
            quantize_rows(x, m, k)
        } else {
            Vec::new()
        },
        q16k: if k_quants && !wide {
            quantize_rows(x, m, k)
        } else {
            Vec::new()
        },
        wide: if wide {
            quantize_rows(x, m, k)
        } else {
            Vec::new()
        },
    };
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|(_, n)| vec![0f32; m * n]).collect();
    let ptrs: Vec<SyncPtr<f32>> = outs.iter_mut().map(|o| SyncPtr(o.as_mut_ptr())).collect();
    let ns: Vec<usize> = mats.iter().map(|(_, n)| *n).collect();
    for_row_runs(&ns, |i, rows| {
        let (w, n) = mats[i];
        let out = ptrs[i];
        w.dot_rows(rows, &acts, simd, |j, r, v| {
            // SAFETY: output (j, r) of matrix i is written by the one item owning row r.
            unsafe { *out.get().add(j * n + r) = v };
        });
    });
    outs
}

/// A 32-weight block (Q4_0, Q4_1, Q5_0, Q8_0) as the shared AVX2 kernels see it: its dot
/// with an activation block `a` is `scale·a.d·Σ q·y + OFFSET_FACTOR·offset·a.s`,
/// where `a.s` is the exact sum of `a`'s quants (Q4_1: offset m; Q5_0, stored as
/// q + 16: offset d and factor −16, applied once at the end as its scalar path does;
/// Q8_0: none). Each format says only how its quants unpack.
#[cfg(target_arch = "x86_64")]
pub trait Block32: Copy {
    /// Whether the dot has an offset term (without one the kernels leave it out).
    const OFFSET: bool;
    /// Multiplies the summed offset terms once per row.
    const OFFSET_FACTOR: f32 = 1.0;
    /// Where the offset is d·OFFSET_FACTOR, the integer −OFFSET_FACTOR each quant
    /// is stored above its value (Q4_0: 8, Q5_0: 16; else 0): the prefill kernels
    /// subtract it from the widened quants instead of carrying an offset term.
    const ZERO_POINT: i16 = 0;
    /// The 32 quants widened to i16: elements 0..16 and 16..32.
    ///
    /// # Safety
    /// Only where AVX2 was detected (called from the kernels below, where it inlines).
    unsafe fn quants(&self) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i);
    /// The block's scale.
    fn scale(&self) -> half::f16;
    /// The coefficient of the activations' sum (unused without [`Block32::OFFSET`]).
    fn offset(&self) -> half::f16;
}

/// 16 bytes of packed nibbles (low nibble = element j, high = element j + 16, as
/// Q4_0 and Q4_1 store them) widened to i16: elements 0..16 and 16..32.
///
/// # Safety
/// Only where AVX2 was detected (inlined into the kernels).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn nibbles_avx2(
    qs: &[u8; 16],
) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let low = _mm_set1_epi8(0x0F);
    let packed = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    (
        _mm256_cvtepu8_epi16(_mm_and_si128(packed, low)),
        _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low)),
    )
}

/// How far ahead (bytes) the 32-weight decode kernel asks for weights: Gemma 3 4B
/// Q4_0 decode 12.0 -> 13.3 tok/s (512 bytes: 13.0), SmolLM2 Q4_1 +10 %.
const PREFETCH32: usize = 1024;

/// AVX2 dot product of one row of a [`Block32`] format with one activation row.
///
/// # Safety
/// Only where AVX2 and FMA were detected.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_block32_avx2<B: Block32>(w: &[B], x: &[BlockQ16]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut offset = _mm256_setzero_ps();
    for (b, a) in w.iter().zip(x) {
        _mm_prefetch::<_MM_HINT_T0>((b as *const B as *const i8).wrapping_add(PREFETCH32));
        let (q0, q1) = b.quants();
        let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
        // 8 lanes of 4 products each: |q| ≤ 128 and |y| ≤ 32767 cannot overflow i32.
        let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
        let d = _mm256_mul_ps(splat_f16(b.scale()), _mm256_set1_ps(a.d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
        if B::OFFSET {
            offset = _mm256_fmadd_ps(splat_f16(b.offset()), _mm256_set1_ps(a.s), offset);
        }
    }
    hsum_avx(acc) + B::OFFSET_FACTOR * _mm256_cvtss_f32(offset)
}

/// [`dot_block32_avx2`] for four activation rows: each weight block is unpacked
/// once and used four times (prefill's shape).
///
/// # Safety
/// Only where AVX2 and FMA were detected.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot4_block32_avx2<B: Block32>(w: &[B], x: [&[BlockQ16]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offset = [_mm256_setzero_ps(); 4];
    for (i, b) in w.iter().enumerate() {
        let (q0, q1) = b.quants();
        let d = splat_f16(b.scale());
        let c = splat_f16(b.offset());
        for r in 0..4 {
            let a = &x[r][i];
            let y0 = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(16) as *const __m256i);
            let p = _mm256_add_epi32(_mm256_madd_epi16(q0, y0), _mm256_madd_epi16(q1, y1));
            let da = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
            acc[r] = _mm256_fmadd_ps(da, _mm256_cvtepi32_ps(p), acc[r]);
            if B::OFFSET {
                offset[r] = _mm256_fmadd_ps(c, _mm256_set1_ps(a.s), offset[r]);
            }
        }
    }
    std::array::from_fn(|r| hsum_avx(acc[r]) + B::OFFSET_FACTOR * _mm256_cvtss_f32(offset[r]))
}

/// An f16 scale in all 8 lanes: a broadcast load writes the whole register.
/// Converting to a scalar f32 instead (the `half` crate, or `vcvtph2ps` on one
/// lane) lets LLVM insert the 16 bits into whichever register it likes, and when
/// that was a loop's accumulator every block waited for the one before it (SmolLM2's
/// Q4_1 decode ran 1.5x slower after an unrelated change moved registers).
///
/// # Safety
/// Only where AVX2 and F16C were detected (every x86-64-v3 build).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn splat_f16(h: half::f16) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16))
}

/// Σ w·q over 32 activation values as 8 i32 lanes (4 values each), from 32 weight
/// bytes (0..=63, unsigned) and the activations' low and high bytes
/// ([`BlockQ16K`]): byte products summed in pairs (at most 2·255·63 and 2·63·128,
/// so no i16 saturation), then pairs of pairs, the high bytes' weighted by 256.
///
/// # Safety
/// Only where AVX2 was detected (inlined into the kernels); `lo` and `hi` must
/// point to 32 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn bytes_dot_avx2(
    w: std::arch::x86_64::__m256i,
    lo: *const u8,
    hi: *const i8,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let l = _mm256_maddubs_epi16(_mm256_loadu_si256(lo as *const __m256i), w);
    let h = _mm256_maddubs_epi16(w, _mm256_loadu_si256(hi as *const __m256i));
    _mm256_add_epi32(
        _mm256_madd_epi16(l, ones),
        _mm256_slli_epi32::<8>(_mm256_madd_epi16(h, ones)),
    )
}

/// [`bytes_dot_avx2`] over 64 values with AVX-512 VNNI: two `vpdpbusd`, the high
/// bytes' sums shifted into the accumulator the low bytes' add to (16 lanes of 4
/// values; at most 4·63·128·256 + 4·255·63, far inside i32).
///
/// # Safety
/// Only where AVX-512F, BW and VNNI were detected; `lo` and `hi` must point to 64
/// readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn bytes_dot_avx512(
    w: std::arch::x86_64::__m512i,
    lo: *const u8,
    hi: *const i8,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let h = _mm512_dpbusd_epi32(
        _mm512_setzero_si512(),
        w,
        _mm512_loadu_si512(hi as *const _),
    );
    _mm512_dpbusd_epi32(
        _mm512_slli_epi32::<8>(h),
        _mm512_loadu_si512(lo as *const _),
        w,
    )
}

/// Sum of the 8 lanes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum_avx(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

/// Reinterprets GGUF tensor bytes as blocks of `B`; `None` unless the length is whole
/// blocks and the start is aligned for `B`.
pub fn blocks<B: Copy>(bytes: &[u8]) -> Option<&[B]> {
    let size = std::mem::size_of::<B>();
    if size == 0
        || !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: callers only use plain-old-data block structs (repr(C), every bit
    // pattern valid); length and alignment were checked above.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / size) })
}

#[cfg(test)]
pub(crate) mod testing {
    use super::{Activation, BlockFormat};

    pub fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// `n` blocks of random bytes, each then made usable by `tame` (finite f16
    /// scales of a sensible size, extreme quants).
    pub fn random_blocks<B: BlockFormat>(
        n: usize,
        seed: &mut u64,
        tame: &impl Fn(&mut B, &mut u64),
    ) -> Vec<B> {
        let size = std::mem::size_of::<B>();
        let bytes: Vec<u8> = (0..size * n)
            .map(|_| ((lcg(seed) + 1.0) * 127.9) as u8)
            .collect();
        bytes
            .chunks_exact(size)
            .map(|c| {
                // SAFETY: blocks are plain old data; every bit pattern is a valid value.
                let mut b = unsafe { std::ptr::read_unaligned(c.as_ptr() as *const B) };
                tame(&mut b, seed);
                b
            })
            .collect()
    }

    fn quantized<A: Activation>(x: &[f32]) -> Vec<A> {
        let mut q = vec![A::ZERO; x.len() / A::WEIGHTS];
        A::quantize_row(x, &mut q);
        q
    }

    /// The k-quant activations hold exactly the 32-value blocks' quantization, split
    /// into bytes, with exact group sums; extremes (±32767, a zero block) included.
    #[test]
    fn split_activations_equal_the_16_bit_blocks() {
        let mut seed = 5;
        let mut x: Vec<f32> = (0..512).map(|_| lcg(&mut seed) * 7.0).collect();
        x[3] = -40.0;
        x[300] = 1e-30;
        x[256..288].iter_mut().for_each(|v| *v = 0.0);
        let blocks: Vec<super::BlockQ16> = quantized(&x);
        let split: Vec<super::BlockQ16K> = quantized(&x);
        for (i, b) in blocks.iter().enumerate() {
            let a = &split[i / 8];
            let j = i % 8;
            assert_eq!((a.d[j], a.s[j]), (b.d, b.s), "block {i}");
            for l in 0..32 {
                assert_eq!(a.q(32 * j + l), b.qs[l] as i32, "block {i} value {l}");
            }
        }
        assert!(blocks.iter().any(|b| b.qs.contains(&-32767)));
        for a in &split {
            for g in 0..16 {
                let sum: i32 = (16 * g..16 * g + 16).map(|i| a.q(i)).sum();
                assert_eq!(a.qsum16[g], sum as f32);
            }
        }
    }

    /// A format's kernels on random blocks: our reading of its layout (`dequant`)
    /// against candle's independent dequantizer (when `candle` names the type), the
    /// matmul against f32 math on the dequantized weights (bounded by the 16-bit
    /// activation rounding), and the SIMD path against the portable reference.
    pub fn check_format<B: BlockFormat>(
        candle: Option<candle_core::quantized::GgmlDType>,
        tame: impl Fn(&mut B, &mut u64),
        dequant: impl Fn(&B) -> Vec<f32>,
    ) {
        let mut seed = 17;
        if let Some(dtype) = candle {
            use candle_core::quantized::{QStorage, QTensor};
            let blocks: Vec<B> = random_blocks(3, &mut seed, &tame);
            // SAFETY: the blocks' bytes are their GGUF encoding.
            let raw = unsafe {
                std::slice::from_raw_parts(
                    blocks.as_ptr() as *const u8,
                    std::mem::size_of_val(blocks.as_slice()),
                )
            };
            let dev = candle_core::Device::Cpu;
            let storage =
                QStorage::from_data(std::borrow::Cow::Borrowed(raw), &dev, dtype).unwrap();
            let q = QTensor::new(storage, (3, B::WEIGHTS)).unwrap();
            let theirs = q
                .dequantize(&dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let ours: Vec<f32> = blocks.iter().flat_map(&dequant).collect();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "weight {i}: {a} vs candle {b}"
                );
            }
        }
        // Six activation rows: one group of four (the prefill path) and two single rows.
        let (m, n) = (6, 37);
        let k = if B::WEIGHTS == 32 { 320 } else { 512 };
        let wb = k / B::WEIGHTS;
        let w: Vec<B> = random_blocks(n * wb, &mut seed, &tame);
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 3.0).collect();
        let mut y = vec![0f32; m * n];
        super::matmul(&x, m, k, &w, n, &mut y);
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            for r in 0..n {
                let row = &w[r * wb..(r + 1) * wb];
                let wr: Vec<f32> = row.iter().flat_map(&dequant).collect();
                let exact: f32 = wr.iter().zip(xi).map(|(a, b)| a * b).sum();
                let scale: f32 = wr.iter().zip(xi).map(|(a, b)| (a * b).abs()).sum();
                let got = y[i * n + r];
                // Each value is off by at most half a step of 16-bit quantization
                // over its row (a bound for 32- and 256-value scales alike); the
                // kernels against the portable reference are checked below, per path.
                let amax = xi.iter().fold(0f32, |m, v| m.max(v.abs()));
                let bound = wr.iter().map(|w| w.abs()).sum::<f32>() * amax / 65534.0;
                assert!(
                    (got - exact).abs() <= 1.01 * bound + 1e-5 * scale,
                    "row {r}: {got} vs {exact} (bound {bound})"
                );
            }
        }
        // Decode over a row too long for L1 (taken in chunks along k) equals the
        // portable dot of the whole row.
        let long = 16384; // 64 super-blocks, 512 blocks of 32: > ACT_L1_BYTES either way
        let lw: Vec<B> = random_blocks(3 * long / B::WEIGHTS, &mut seed, &tame);
        let lx: Vec<f32> = (0..long).map(|_| lcg(&mut seed)).collect();
        let mut ly = vec![0f32; 3];
        super::matmul(&lx, 1, long, &lw, 3, &mut ly);
        let lq: Vec<B::Act> = quantized(&lx);
        assert!(std::mem::size_of_val(lq.as_slice()) > super::ACT_L1_BYTES);
        for (r, got) in ly.iter().enumerate() {
            let row = &lw[r * long / B::WEIGHTS..(r + 1) * long / B::WEIGHTS];
            let want = B::dot_scalar(row, &lq);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "long row {r}: {got} vs {want}"
            );
        }
        // Every path this CPU runs (not only the widest, which the matmul took),
        // one row and four rows at a time, against the portable reference.
        let xq: Vec<Vec<B::Act>> = (0..4).map(|i| quantized(&x[i * k..(i + 1) * k])).collect();
        for simd in super::Simd::available() {
            for r in 0..n {
                let row = &w[r * wb..(r + 1) * wb];
                let four = super::dot4(row, std::array::from_fn(|i| xq[i].as_slice()), simd);
                for i in 0..4 {
                    let reference = B::dot_scalar(row, &xq[i]);
                    let close = |v: f32| (v - reference).abs() <= 1e-4 * reference.abs().max(1.0);
                    let one = super::dot(row, &xq[i], simd);
                    // Bit-identical: a batched decode step relies on it.
                    assert_eq!(
                        one.to_bits(),
                        four[i].to_bits(),
                        "{simd:?} row {r}: dot {one} vs dot4 {}",
                        four[i]
                    );
                    assert!(close(one), "{simd:?} row {r}: {one} vs scalar {reference}");
                    assert!(
                        close(four[i]),
                        "{simd:?} dot4 row {r}: {} vs scalar {reference}",
                        four[i]
                    );
                }
            }
        }
    }
}

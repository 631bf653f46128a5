//! NF4 with double quantization, byte for byte as bitsandbytes 0.50 writes it
//! (`quantize_4bit(quant_type="nf4", compress_statistics=True)`):
//!
//! - blocks of `blocksize` (64 by default) run over the flattened tensor, across row
//!   boundaries; the last block may be short;
//! - each block is scaled by `1 / absmax` (a reciprocal, then a product), clamped to
//!   [-1, 1], and every value takes the nearest of the 16 NF4 levels (the lower one on
//!   a tie; an all-zero block gives the 0.0 level, code 7, and absmax 0);
//! - two codes per byte, element 2i in the high nibble; an odd count is padded with a
//!   zero weight (code 7);
//! - double quantization: `offset = mean(absmax)`, then `absmax - offset` is quantized
//!   to 8 bits with the signed dynamic map in blocks of 256 (each divided by its own
//!   absmax, binary search, nearest with ties to the left), keeping one f32 per block.
//!
//! Dequantized value = `NF4[code] · absmax[block]`, with
//! `absmax = dynamic[qabsmax] · nested_absmax[block / 256] + offset`.
//!
//! This folder is NF4's one home: the format here, the matmul on packed codes
//! ([`kernel`]; on NVIDIA GPUs `cuda` and `nf4.cu`), reading bitsandbytes tensors
//! from an HF folder ([`load`]) and writing them ([`export`]).

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod export;
pub mod kernel;
pub mod load;

/// The 16 NF4 levels (normal-float quantiles), as bitsandbytes stores `quant_map`
/// (written with bitsandbytes' digits; they round to its float32 table exactly).
#[allow(clippy::excessive_precision)]
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// Blocks of absmax values per nested (8-bit) block.
pub const NESTED_BLOCKSIZE: usize = 256;

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`: for
/// each of 7 decades the midpoints of an even split of [0.1, 1], both signs, then 0
/// and 1, sorted), as f32 bit patterns. The values depend on how torch's vectorised
/// `linspace` rounds in float32, so they are kept as the format's constant, like
/// the NF4 table, and the tests check them against bitsandbytes' own output.
const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// The dynamic map as floats.
pub fn dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// A tensor in NF4, possibly with double-quantized block scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4 {
    /// Two codes per byte, element 2i in the high nibble: `ceil(n / 2)` bytes.
    pub packed: Vec<u8>,
    /// Weights per block.
    pub blocksize: usize,
    /// Number of weights.
    pub len: usize,
    /// The block scales: plain f32, or double-quantized.
    pub absmax: Absmax,
}

/// Block scales.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 per block.
    Plain(Vec<f32>),
    /// 8-bit codes into the dynamic map, one f32 scale per 256 blocks, and the mean.
    Double {
        /// Codes.
        codes: Vec<u8>,
        /// Scale of each group of 256 codes.
        nested: Vec<f32>,
        /// The mean of the block scales, added back.
        offset: f32,
    },
}

/// Nearest NF4 level of a value in [-1, 1] (lower index on a tie).
fn nf4_code(v: f32) -> u8 {
    let mut best = 0;
    let mut best_d = f32::INFINITY;
    for (i, &c) in NF4.iter().enumerate() {
        let d = (v - c).abs();
        if d < best_d {
            best_d = d;
            best = i;
        }
    }
    best as u8
}

/// The mean as torch computes it for a float32 tensor on the CPU: eight running lane
/// sums (element i into lane i mod 8), folded in halves, divided in f32. This matched
/// every reference offset; torch's multi-level cascade for very long tensors may
/// differ in the last bit.
fn torch_mean_f32(a: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (i, v) in a.iter().enumerate() {
        lanes[i % 8] += v;
    }
    let s4: [f32; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    (s2[0] + s2[1]) / a.len() as f32
}

/// What double quantization subtracts from a tensor's block scales before coding
/// them: their mean, as torch computes it. From the scales alone, so an exporter can
/// know it (and the quant state's length) before it quantizes.
pub fn double_quant_offset(absmax: &[f32]) -> f32 {
    torch_mean_f32(absmax)
}

/// The scale (largest magnitude) of each block of `blocksize` values, the last
/// block possibly shorter.
pub fn block_absmax(x: &[f32], blocksize: usize) -> impl Iterator<Item = f32> + '_ {
    x.chunks(blocksize)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
}

/// Entries of bitsandbytes' quantization table over [-1, 1].
const LUT_SIZE: usize = 65536;

/// bitsandbytes 0.50's CPU blockwise 8-bit quantizer (`quantize_cpu_impl`): each
/// value divided by its block's absmax indexes a table of 65 536 grid points over
/// [-1, 1], each holding the code whose midpoints enclose it, so near a midpoint the
/// farther neighbour can win. An all-zero block is all code 0.
fn quantize_blockwise(x: &[f32], code: &[f32; 256], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let mids: [f32; 255] = std::array::from_fn(|i| 0.5 * (code[i] + code[i + 1]));
    let mut lut = vec![0u8; LUT_SIZE];
    let mut ci = 0;
    for (i, slot) in lut.iter_mut().enumerate() {
        let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
        while ci < 255 && mids[ci] < val {
            ci += 1;
        }
        *slot = ci as u8;
    }
    let mut out = Vec::with_capacity(x.len());
    let mut absmax = Vec::with_capacity(x.len().div_ceil(blocksize));
    for block in x.chunks(blocksize) {
        let a = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        absmax.push(a);
        if a == 0.0 {
            out.extend(std::iter::repeat_n(0u8, block.len()));
            continue;
        }
        let inv = 1.0 / a;
        for &v in block {
            let n = (v * inv).clamp(-1.0, 1.0);
            let idx = ((n + 1.0) * 0.5 * (LUT_SIZE - 1) as f32 + 0.5) as usize;
            out.push(lut[idx.min(LUT_SIZE - 1)]);
        }
    }
    (out, absmax)
}

impl Nf4 {
    /// Quantizes `x` (a flattened tensor) like bitsandbytes.
    pub fn quantize(x: &[f32], blocksize: usize, double_quant: bool) -> Self {
        use crate::pool::SyncPtr;
        // Blocks are independent: groups of them run on the pool, each writing its
        // own codes and scale.
        let blocks = x.len().div_ceil(blocksize);
        // bitsandbytes pads an odd count with a zero weight: the 0.0 level, code 7.
        let mut codes = vec![7u8; x.len().next_multiple_of(2)];
        let mut absmax = vec![0f32; blocks];
        let (codes_ptr, absmax_ptr) = (SyncPtr(codes.as_mut_ptr()), SyncPtr(absmax.as_mut_ptr()));
        const GROUP: usize = 256;
        crate::pool::run_chunked(blocks.div_ceil(GROUP), |groups| {
            for g in groups {
                for b in g * GROUP..((g + 1) * GROUP).min(blocks) {
                    let block = &x[b * blocksize..((b + 1) * blocksize).min(x.len())];
                    let a = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    // SAFETY: block b's scale and codes are written by this item only.
                    let out = unsafe {
                        *absmax_ptr.get().add(b) = a;
                        std::slice::from_raw_parts_mut(
                            codes_ptr.get().add(b * blocksize),
                            block.len(),
                        )
                    };
                    if a == 0.0 {
                        // An all-zero block: every weight is the 0.0 level.
                        out.fill(7);
                        continue;
                    }
                    let inv = 1.0 / a;
                    for (c, &v) in out.iter_mut().zip(block) {
                        *c = nf4_code((v * inv).clamp(-1.0, 1.0));
                    }
                }
            }
        });
        let packed = codes.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect();
        let absmax = if double_quant {
            let offset = torch_mean_f32(&absmax);
            let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
            let (codes, nested) = quantize_blockwise(&centered, &dynamic_map(), NESTED_BLOCKSIZE);
            Absmax::Double {
                codes,
                nested,
                offset,
            }
        } else {
            Absmax::Plain(absmax)
        };
        Self {
            packed,
            blocksize,
            len: x.len(),
            absmax,
        }
    }

    /// The f32 block scales.
    pub fn block_scales(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::Plain(a) => a.clone(),
            Absmax::Double {
                codes,
                nested,
                offset,
            } => {
                let map = dynamic_map();
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| map[c as usize] * nested[i / NESTED_BLOCKSIZE] + offset)
                    .collect()
            }
        }
    }

    /// Σ (x − dequantized)² and Σ x² over the tensor (its quality report), without
    /// building the dequantized copy.
    pub fn error_sums(&self, x: &[f32]) -> (f64, f64) {
        let scales = self.block_scales();
        let (mut err2, mut sig2) = (0f64, 0f64);
        for (i, &v) in x.iter().enumerate().take(self.len) {
            let b = self.packed[i / 2];
            let c = if i % 2 == 0 { b >> 4 } else { b & 0xF };
            let back = NF4[c as usize] * scales[i / self.blocksize];
            err2 += ((v - back) as f64).powi(2);
            sig2 += (v as f64).powi(2);
        }
        (err2, sig2)
    }

    /// The weights back in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let scales = self.block_scales();
        (0..self.len)
            .map(|i| {
                let b = self.packed[i / 2];
                let c = if i % 2 == 0 { b >> 4 } else { b & 0xF };
                NF4[c as usize] * scales[i / self.blocksize]
            })
            .collect()
    }
}

/// An NF4 weight matrix `[rows, cols]` kept packed for matmuls: the codes as stored,
/// and the block scales (double quantization resolved once at load).
#[derive(Debug, Clone)]
pub struct Nf4Matrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Weights per block (blocks run over the flattened matrix).
    pub blocksize: usize,
    /// Two codes per byte, element 2i in the high nibble.
    pub packed: Vec<u8>,
    /// One f32 scale per block.
    pub scales: Vec<f32>,
}

impl Nf4Matrix {
    /// From a quantized tensor of `rows × cols` weights.
    pub fn new(q: &Nf4, rows: usize, cols: usize) -> Option<Self> {
        (q.len == rows * cols && q.packed.len() == q.len.div_ceil(2)).then(|| Self {
            rows,
            cols,
            blocksize: q.blocksize,
            packed: q.packed.clone(),
            scales: q.block_scales(),
        })
    }

    /// Bytes held (codes and scales).
    pub fn bytes(&self) -> usize {
        self.packed.len() + self.scales.len() * 4
    }

    /// Code of flat element `i`.
    fn code(&self, i: usize) -> usize {
        let b = self.packed[i / 2];
        (if i.is_multiple_of(2) { b >> 4 } else { b & 0xF }) as usize
    }

    /// Row `row` in f32 (into a reused buffer the size of one row).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let start = row * self.cols;
        let bs = self.blocksize;
        if bs.is_multiple_of(2) && start.is_multiple_of(bs) && self.cols.is_multiple_of(bs) {
            // Whole blocks of whole bytes: one scaled 16-entry table per block.
            for (b, chunk) in out.chunks_exact_mut(bs).enumerate() {
                let scale = self.scales[start / bs + b];
                let t: [f32; 16] = std::array::from_fn(|i| NF4[i] * scale);
                let bytes = &self.packed[(start + b * bs) / 2..(start + (b + 1) * bs) / 2];
                for (pair, &byte) in chunk.chunks_exact_mut(2).zip(bytes) {
                    pair[0] = t[(byte >> 4) as usize];
                    pair[1] = t[(byte & 0xF) as usize];
                }
            }
            return;
        }
        for (j, o) in out.iter_mut().enumerate() {
            let i = start + j;
            *o = NF4[self.code(i)] * self.scales[i / self.blocksize];
        }
    }
}

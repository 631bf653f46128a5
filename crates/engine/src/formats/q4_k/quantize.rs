//! The Q4_K quantizer, as llama-quantize's reference (see [`crate::formats::kquant`]).

use crate::formats::kquant::{k_scales, QK_K};

/// Q4_K blocks (144 bytes per 256 weights) of `x` (a multiple of 256 long).
pub fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 144);
    for b in x.chunks_exact(QK_K) {
        let (d, dmin, scales, l) = k_scales(b, 15, -1.0, 20);
        out.extend(d.to_bits().to_le_bytes());
        out.extend(dmin.to_bits().to_le_bytes());
        out.extend(scales);
        for j in (0..QK_K).step_by(64) {
            out.extend((0..32).map(|i| l[j + i] | (l[j + i + 32] << 4)));
        }
    }
    out
}

//! Q5_K (llama.cpp `block_q5_K`): the quantizer only, as llama-quantize's reference
//! (see [`crate::formats::kquant`]). Files with Q5_K tensors run through candle's
//! kernel; we write them for the Q5_K_M and Q5_K_S mixes.

use super::kquant::{k_scales, QK_K};

/// Q5_K blocks (176 bytes per 256 weights).
pub fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 176);
    for b in x.chunks_exact(QK_K) {
        let (d, dmin, scales, l) = k_scales(b, 31, -0.5, 15);
        let mut qh = [0u8; 32];
        let mut qs = [0u8; 128];
        for (k, n) in (0..QK_K).step_by(64).enumerate() {
            let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
            for j in 0..32 {
                let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * k + j] = l1 | (l2 << 4);
            }
        }
        out.extend(d.to_bits().to_le_bytes());
        out.extend(dmin.to_bits().to_le_bytes());
        out.extend(scales);
        out.extend(qh);
        out.extend(qs);
    }
    out
}

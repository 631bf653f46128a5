//! The Q6_K quantizer, as llama-quantize's reference (see [`crate::formats::kquant`]).

use crate::formats::kquant::{make_qx_quants, nearest_int, QK_K};
use half::f16;

/// Q6_K blocks (210 bytes per 256 weights).
pub fn quantize(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * 210);
    for b in x.chunks_exact(QK_K) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs) = (0f32, 0f32);
        for ib in 0..16 {
            scales[ib] =
                make_qx_quants(32, &b[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            if scales[ib].abs() > max_abs {
                max_abs = scales[ib].abs();
                max_scale = scales[ib];
            }
        }
        if max_abs < 1e-15 {
            out.extend([0u8; 210]);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let mut lv = [0u8; QK_K];
        for j in 0..16 {
            let dd = d.to_f32() * sc[j] as f32;
            if dd == 0.0 {
                // ggml keeps the levels of the search here.
                for i in 0..16 {
                    lv[16 * j + i] = l[16 * j + i] as u8;
                }
                continue;
            }
            for i in 0..16 {
                lv[16 * j + i] = (nearest_int(b[16 * j + i] / dd).clamp(-32, 31) + 32) as u8;
            }
        }
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (k, j) in (0..QK_K).step_by(128).enumerate() {
            for i in 0..32 {
                let q = |o: usize| lv[j + i + o];
                ql[64 * k + i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
                ql[64 * k + i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
                qh[32 * k + i] =
                    (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
            }
        }
        out.extend(ql);
        out.extend(qh);
        out.extend(sc.map(|s| s as u8));
        out.extend(d.to_bits().to_le_bytes());
    }
    out
}

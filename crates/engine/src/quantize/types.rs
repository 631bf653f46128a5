//! Which GGML type each tensor gets for a requested file type: llama.cpp's rules
//! (`llama_tensor_get_type` in llama-quant.cpp), re-derived and kept in this one
//! place so the mixes can be read and tested.
//!
//! - Vectors (norms, biases) stay F32.
//! - The output projection (or the token embedding when the output is tied to it)
//!   gets Q6_K, unless the file type is Q8_0 or a float type.
//! - `*_M` mixes promote `attn_v` and `ffn_down` on the layers `use_more_bits` picks
//!   (the first and last eighth, and every third layer between): Q4_K_M and Q5_K_M to
//!   Q6_K. Q4_K_S promotes the first four `attn_v` and the first eighth of
//!   `ffn_down` to Q5_K. Q3_K_M uses Q5_K for the first two `attn_v` / first
//!   sixteenth of `ffn_down`, Q4_K for the rest of them and for `attn_output`. Q2_K
//!   uses Q3_K for `ffn_down` and `attn_output`, and Q4_K (GQA ≥ 4) or Q3_K for `attn_v`.
//! - k-quants need rows (the input width) divisible by 256. Otherwise llama.cpp
//!   falls back: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K / Q3_K → IQ4_NL. We
//!   have no IQ4_NL and use Q4_0 there (same 4.5 bits per weight). The output
//!   projection falls back to Q8_0. A width not divisible by 32 stays F16.

use candle_core::quantized::GgmlDType;

/// A file type the user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// float32: an exact GGUF of the source (a reference for other tools).
    F32,
    /// Half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// 8.5 bits per weight.
    Q8_0,
    /// 6.56 bits per weight.
    Q6K,
    /// Q5_K with Q6_K promotions.
    Q5KM,
    /// Q5_K throughout.
    Q5KS,
    /// Q4_K with Q6_K promotions (the usual choice).
    Q4KM,
    /// Q4_K with a few Q5_K promotions.
    Q4KS,
    /// 4.5 bits per weight, the legacy format every runtime supports.
    Q4_0,
    /// Q3_K with Q4_K / Q5_K promotions.
    Q3KM,
    /// Q2_K with Q3_K / Q4_K promotions.
    Q2K,
}

/// Every type, as the CLI spells them.
pub const ALL: [(&str, QuantType); 12] = [
    ("F32", QuantType::F32),
    ("F16", QuantType::F16),
    ("BF16", QuantType::Bf16),
    ("Q8_0", QuantType::Q8_0),
    ("Q6_K", QuantType::Q6K),
    ("Q5_K_M", QuantType::Q5KM),
    ("Q5_K_S", QuantType::Q5KS),
    ("Q4_K_M", QuantType::Q4KM),
    ("Q4_K_S", QuantType::Q4KS),
    ("Q4_0", QuantType::Q4_0),
    ("Q3_K_M", QuantType::Q3KM),
    ("Q2_K", QuantType::Q2K),
];

impl QuantType {
    /// From its name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        ALL.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, t)| *t)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// llama.cpp's `general.file_type` value.
    pub fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q8_0 => 7,
            Self::Q2K => 10,
            Self::Q3KM => 12,
            Self::Q4KS => 14,
            Self::Q4KM => 15,
            Self::Q5KS => 16,
            Self::Q5KM => 17,
            Self::Q6K => 18,
            Self::Bf16 => 32,
        }
    }

    fn base(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Bf16 => GgmlDType::BF16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q6K => GgmlDType::Q6K,
            Self::Q5KM | Self::Q5KS => GgmlDType::Q5K,
            Self::Q4KM | Self::Q4KS => GgmlDType::Q4K,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q3KM => GgmlDType::Q3K,
            Self::Q2K => GgmlDType::Q2K,
        }
    }
}

/// llama.cpp's choice of layers that get more bits in the `_M` mixes.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// What the rules need to know about one tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorRole<'a> {
    /// llama.cpp name (`blk.3.attn_v.weight`).
    pub name: &'a str,
    /// Row-major shape.
    pub shape: &'a [usize],
    /// Layer count.
    pub n_layers: usize,
    /// Query heads / key-value heads.
    pub n_gqa: usize,
    /// Whether the model has a separate output projection (else the embedding is it).
    pub has_output: bool,
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The GGML type of one tensor under file type `qt`.
pub fn tensor_type(qt: QuantType, t: TensorRole<'_>) -> GgmlDType {
    if t.shape.len() < 2 || !t.name.ends_with(".weight") {
        return GgmlDType::F32;
    }
    if matches!(qt, QuantType::F32 | QuantType::F16 | QuantType::Bf16) {
        return qt.base();
    }
    let cols = *t.shape.last().unwrap_or(&0);
    let is_output = t.name == "output.weight" || (!t.has_output && t.name == "token_embd.weight");
    if is_output {
        return if !cols.is_multiple_of(256) || qt == QuantType::Q8_0 {
            GgmlDType::Q8_0
        } else {
            GgmlDType::Q6K
        };
    }
    let layer = layer_of(t.name);
    let n = t.n_layers.max(1);
    let mut ty = qt.base();
    if t.name.contains("attn_v.weight") {
        let i = layer.unwrap_or(0);
        ty = match qt {
            QuantType::Q2K if t.n_gqa >= 4 => GgmlDType::Q4K,
            QuantType::Q2K => GgmlDType::Q3K,
            QuantType::Q3KM if i < 2 => GgmlDType::Q5K,
            QuantType::Q3KM => GgmlDType::Q4K,
            QuantType::Q4KM | QuantType::Q5KM if use_more_bits(i, n) => GgmlDType::Q6K,
            QuantType::Q4KS if i < 4 => GgmlDType::Q5K,
            _ => ty,
        };
    } else if t.name.contains("ffn_down") {
        let i = layer.unwrap_or(0);
        ty = match qt {
            QuantType::Q2K => GgmlDType::Q3K,
            QuantType::Q3KM if i < n / 16 => GgmlDType::Q5K,
            QuantType::Q3KM => GgmlDType::Q4K,
            QuantType::Q4KM | QuantType::Q5KM if use_more_bits(i, n) => GgmlDType::Q6K,
            QuantType::Q4KS if i < n / 8 => GgmlDType::Q5K,
            _ => ty,
        };
    } else if t.name.contains("attn_output.weight") {
        ty = match qt {
            QuantType::Q2K => GgmlDType::Q3K,
            QuantType::Q3KM => GgmlDType::Q4K,
            _ => ty,
        };
    }
    fallback(ty, cols)
}

/// The type a row of `cols` weights can actually be stored in.
fn fallback(ty: GgmlDType, cols: usize) -> GgmlDType {
    let ty = if !cols.is_multiple_of(256) {
        match ty {
            GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
            GgmlDType::Q4K => GgmlDType::Q5_0,
            GgmlDType::Q5K => GgmlDType::Q5_1,
            GgmlDType::Q6K => GgmlDType::Q8_0,
            t => t,
        }
    } else {
        ty
    };
    if !cols.is_multiple_of(ty.block_size()) {
        GgmlDType::F16
    } else {
        ty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(
        qt: QuantType,
        name: &str,
        shape: &[usize],
        n_layers: usize,
        has_output: bool,
    ) -> GgmlDType {
        tensor_type(
            qt,
            TensorRole {
                name,
                shape,
                n_layers,
                n_gqa: 4,
                has_output,
            },
        )
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_on_18_and_30_layers() {
        let picked = |n: usize| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(picked(18), vec![0, 1, 4, 7, 10, 13, 15, 16, 17]);
        assert_eq!(
            picked(30),
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

    /// Gemma 3 270M (hidden 640, 18 layers, tied output): what llama.cpp's Q4_K_M
    /// file we test with holds, tensor for tensor.
    #[test]
    fn q4_k_m_on_gemma3_270m_falls_back_like_llama_cpp() {
        let q = QuantType::Q4KM;
        assert_eq!(
            ty(q, "token_embd.weight", &[262144, 640], 18, false),
            GgmlDType::Q8_0
        );
        assert_eq!(
            ty(q, "blk.0.attn_q.weight", &[1024, 640], 18, false),
            GgmlDType::Q5_0
        );
        assert_eq!(
            ty(q, "blk.0.attn_v.weight", &[256, 640], 18, false),
            GgmlDType::Q8_0
        );
        assert_eq!(
            ty(q, "blk.2.attn_v.weight", &[256, 640], 18, false),
            GgmlDType::Q5_0
        );
        assert_eq!(
            ty(q, "blk.0.ffn_down.weight", &[640, 2048], 18, false),
            GgmlDType::Q6K
        );
        assert_eq!(
            ty(q, "blk.2.ffn_down.weight", &[640, 2048], 18, false),
            GgmlDType::Q4K
        );
        assert_eq!(
            ty(q, "blk.0.attn_output.weight", &[640, 1024], 18, false),
            GgmlDType::Q4K
        );
        assert_eq!(
            ty(q, "blk.0.attn_norm.weight", &[640], 18, false),
            GgmlDType::F32
        );
    }

    #[test]
    fn mixes_promote_where_llama_cpp_does() {
        let s = [4096, 4096];
        assert_eq!(
            ty(QuantType::Q4KS, "blk.3.attn_v.weight", &s, 32, true),
            GgmlDType::Q5K
        );
        assert_eq!(
            ty(QuantType::Q4KS, "blk.4.attn_v.weight", &s, 32, true),
            GgmlDType::Q4K
        );
        assert_eq!(
            ty(QuantType::Q3KM, "blk.1.attn_v.weight", &s, 32, true),
            GgmlDType::Q5K
        );
        assert_eq!(
            ty(QuantType::Q3KM, "blk.9.attn_output.weight", &s, 32, true),
            GgmlDType::Q4K
        );
        assert_eq!(
            ty(QuantType::Q3KM, "blk.9.ffn_up.weight", &s, 32, true),
            GgmlDType::Q3K
        );
        assert_eq!(
            ty(QuantType::Q2K, "blk.9.ffn_down.weight", &s, 32, true),
            GgmlDType::Q3K
        );
        assert_eq!(
            ty(QuantType::Q5KM, "blk.31.ffn_down.weight", &s, 32, true),
            GgmlDType::Q6K
        );
        assert_eq!(
            ty(QuantType::Q5KS, "blk.31.ffn_down.weight", &s, 32, true),
            GgmlDType::Q5K
        );
        assert_eq!(
            ty(QuantType::Q8_0, "output.weight", &s, 32, true),
            GgmlDType::Q8_0
        );
        assert_eq!(
            ty(QuantType::Q4_0, "output.weight", &s, 32, true),
            GgmlDType::Q6K
        );
        assert_eq!(
            ty(QuantType::Q4_0, "token_embd.weight", &s, 32, true),
            GgmlDType::Q4_0
        );
        assert_eq!(
            ty(QuantType::Bf16, "blk.0.ffn_up.weight", &s, 32, true),
            GgmlDType::BF16
        );
        assert_eq!(
            ty(QuantType::Q2K, "blk.0.ffn_up.weight", &[64, 640], 32, true),
            GgmlDType::Q4_0
        );
        assert_eq!(
            ty(QuantType::Q8_0, "blk.0.ffn_up.weight", &[64, 48], 32, true),
            GgmlDType::F16
        );
    }
}

//! Rotary position embeddings, and the ways checkpoints stretch them past the context
//! they were trained on: linear, Llama 3 and YaRN. This file owns the concept: the
//! frequencies each scheme gives, how `config.json` and GGUF metadata spell it (both
//! ways), and llama.cpp's `rope_freqs.weight` form of Llama 3's per-pair factors.

use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Result, Tensor};
use serde_json::json;
use std::f64::consts::PI;
use std::sync::Arc;

/// The GGUF tensor in which llama.cpp stores Llama 3's per-pair frequency divisors.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// How a model's rope frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain rope.
    None,
    /// Positions divided by `factor` (Gemma 3's global layers).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1+: long wavelengths divided by `factor`, short ones kept, a smooth
    /// blend between `original_context / high_freq_factor` and
    /// `original_context / low_freq_factor`.
    Llama3 {
        /// Divisor of the long wavelengths.
        factor: f64,
        /// Wavelengths above `original_context / low_freq_factor` are divided.
        low_freq_factor: f64,
        /// Wavelengths below `original_context / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context the model was first trained on.
        original_context: usize,
    },
    /// YaRN (Qwen 2.5 long context, DeepSeek): per-pair blend of interpolated and
    /// original frequencies by wavelength, and cos/sin multiplied by
    /// `attention_factor`.
    Yarn {
        /// Divisor of the interpolated frequencies.
        factor: f64,
        /// The context the model was first trained on.
        original_context: usize,
        /// Pairs rotating more than this often over the original context keep
        /// their frequency.
        beta_fast: f64,
        /// Pairs rotating less than this often are fully interpolated.
        beta_slow: f64,
        /// cos and sin are multiplied by it (q·k by its square).
        attention_factor: f64,
        /// Round the correction range to whole pairs (transformers' `truncate`).
        truncate: bool,
    },
    /// Per-pair divisors stored in the GGUF's [`ROPE_FREQS`] tensor (llama.cpp's form
    /// of Llama 3 scaling), read when the weights load.
    Stored,
}

/// Unscaled rope: the frequency `base^(-2i/dim)` of each of the `dim / 2` pairs.
fn plain_frequencies(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
        .collect()
}

/// transformers' and llama.cpp's YaRN magnitude correction: `0.1·m·ln(s) + 1`.
fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

impl RopeScaling {
    /// The frequency of each of the `dim / 2` rotated pairs for base `base`, and the
    /// factor cos and sin are multiplied by. `stored`: the [`ROPE_FREQS`] divisors of
    /// a [`RopeScaling::Stored`] model.
    pub fn frequencies(
        &self,
        base: f64,
        dim: usize,
        stored: Option<&[f32]>,
    ) -> std::result::Result<(Vec<f64>, f64), String> {
        let half = dim / 2;
        let plain = plain_frequencies(base, dim);
        let divided = |d: &dyn Fn(usize, f64) -> f64| {
            plain
                .iter()
                .enumerate()
                .map(|(i, &f)| f / d(i, f))
                .collect::<Vec<f64>>()
        };
        Ok(match *self {
            Self::None => (plain, 1.0),
            Self::Linear { factor } => (divided(&|_, _| factor), 1.0),
            Self::Llama3 { .. } => (divided(&|_, f| self.llama3_divisor(f)), 1.0),
            Self::Stored => {
                let s = stored.ok_or(format!("{ROPE_FREQS} was not read"))?;
                if s.len() != half {
                    return Err(format!(
                        "{ROPE_FREQS} has {} values, expected {half}",
                        s.len()
                    ));
                }
                if let Some(x) = s.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                    return Err(format!("{ROPE_FREQS} holds {x}: expected positive factors"));
                }
                (divided(&|i, _| s[i] as f64), 1.0)
            }
            Self::Yarn {
                factor,
                original_context,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                // The pair index at which a wavelength fits `rotations` times into the
                // original context.
                let corr = |rotations: f64| {
                    dim as f64 * (original_context as f64 / (rotations * 2.0 * PI)).ln()
                        / (2.0 * base.ln())
                };
                let (mut low, mut high) = (corr(beta_fast), corr(beta_slow));
                if truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, high) = (low.max(0.0), high.min(dim as f64 - 1.0));
                let span = if low == high { 0.001 } else { high - low };
                let inv = plain
                    .iter()
                    .enumerate()
                    .map(|(i, &f)| {
                        let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                        // 1 keeps the original frequency; 0 interpolates it.
                        let extrapolate = 1.0 - ramp;
                        f / factor * (1.0 - extrapolate) + f * extrapolate
                    })
                    .collect();
                (inv, attention_factor)
            }
        })
    }

    /// Llama 3's divisor of one frequency.
    fn llama3_divisor(&self, freq: f64) -> f64 {
        let Self::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        } = *self
        else {
            return 1.0;
        };
        let old = original_context as f64;
        let wavelen = 2.0 * PI / freq;
        if wavelen < old / high_freq_factor {
            1.0
        } else if wavelen > old / low_freq_factor {
            factor
        } else {
            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            1.0 / ((1.0 - smooth) / factor + smooth)
        }
    }

    /// The [`ROPE_FREQS`] values llama.cpp's converter writes for Llama 3 scaling
    /// (`None` for every other kind, which GGUF spells in metadata).
    pub fn gguf_factors(&self, base: f64, dim: usize) -> Option<Vec<f32>> {
        matches!(self, Self::Llama3 { .. }).then(|| {
            plain_frequencies(base, dim)
                .into_iter()
                .map(|f| self.llama3_divisor(f) as f32)
                .collect()
        })
    }

    /// Llama 3 parameters that give the stored divisors of a [`ROPE_FREQS`] tensor, so
    /// that a GGUF can be written back as a `config.json` (which has no way to list
    /// divisors). Every Llama 3.x uses low 1 and high 4; the original context comes
    /// from a pair in the blend, or is a common one when no pair falls there. `None`
    /// when no such parameters reproduce the divisors.
    pub fn llama3_from_factors(factors: &[f32], base: f64, dim: usize) -> Option<Self> {
        let factor = factors.iter().copied().fold(1f32, f32::max) as f64;
        if factor <= 1.0 || factors.len() != dim / 2 {
            return None;
        }
        let (low, high) = (1.0, 4.0);
        let freq = plain_frequencies(base, dim);
        let mut candidates: Vec<usize> = factors
            .iter()
            .enumerate()
            .filter(|(_, &f)| f > 1.0 && (f as f64) < factor * (1.0 - 1e-6))
            .map(|(i, &f)| {
                let s = (1.0 / f as f64 - 1.0 / factor) / (1.0 - 1.0 / factor);
                let wavelen = 2.0 * PI / freq[i];
                (wavelen * (s * (high - low) + low)).round() as usize
            })
            .collect();
        candidates.extend([8192, 4096, 2048, 16_384, 32_768, 131_072]);
        candidates.into_iter().find_map(|original_context| {
            let s = Self::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_context,
            };
            let want = s.gguf_factors(base, dim)?;
            want.iter()
                .zip(factors)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs())
                .then_some(s)
        })
    }

    /// Reads a `rope_scaling` / `rope_parameters` object of `config.json`.
    /// `max_positions`: `max_position_embeddings`, which YaRN falls back on. Errors
    /// are (key, message).
    pub fn from_hf(
        s: Option<&serde_json::Value>,
        max_positions: Option<usize>,
    ) -> std::result::Result<Self, (String, String)> {
        let Some(s) = s.filter(|s| !s.is_null()) else {
            return Ok(Self::None);
        };
        // Anything but an object would read as no scaling: refuse it instead.
        if !s.is_object() {
            return Err((
                "rope_scaling".into(),
                format!("expected an object, found {s}"),
            ));
        }
        let err = |key: &str, m: &str| (format!("rope_scaling.{key}"), m.to_string());
        let num = |key: &str| -> std::result::Result<Option<f64>, (String, String)> {
            match s.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
                    _ => Err(err(
                        key,
                        &format!("expected a positive finite number, found {v}"),
                    )),
                },
            }
        };
        let context = |key: &str| -> std::result::Result<Option<usize>, (String, String)> {
            match num(key)? {
                Some(x) if x.fract() == 0.0 && x <= crate::models::MAX_CONTEXT as f64 => {
                    Ok(Some(x as usize))
                }
                Some(x) => Err(err(key, &format!("{x:e} is not a context length"))),
                None => Ok(None),
            }
        };
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default");
        let factor = num("factor")?;
        let needs = |k: &str| err(k, &format!("{kind} scaling without a {k}"));
        Ok(match kind {
            "default" => Self::None,
            "linear" => Self::Linear {
                factor: factor.ok_or_else(|| needs("factor"))?,
            },
            "llama3" => Self::Llama3 {
                factor: factor.ok_or_else(|| needs("factor"))?,
                low_freq_factor: num("low_freq_factor")?.ok_or_else(|| needs("low_freq_factor"))?,
                high_freq_factor: num("high_freq_factor")?
                    .ok_or_else(|| needs("high_freq_factor"))?,
                original_context: context("original_max_position_embeddings")?
                    .ok_or_else(|| needs("original_max_position_embeddings"))?,
            },
            "yarn" => {
                let original_context = context("original_max_position_embeddings")?
                    .or(max_positions)
                    .ok_or_else(|| needs("original_max_position_embeddings"))?;
                let factor = match (factor, max_positions) {
                    (Some(f), _) => f,
                    (None, Some(m)) => m as f64 / original_context as f64,
                    (None, None) => return Err(needs("factor")),
                };
                let attention_factor = match num("attention_factor")? {
                    Some(a) => a,
                    // transformers takes mscale and mscale_all_dim only when both
                    // are set and non-zero.
                    None => match (
                        s.get("mscale")
                            .and_then(serde_json::Value::as_f64)
                            .filter(|&m| m > 0.0),
                        s.get("mscale_all_dim")
                            .and_then(serde_json::Value::as_f64)
                            .filter(|&m| m > 0.0),
                    ) {
                        (Some(m), Some(all)) => yarn_mscale(factor, m) / yarn_mscale(factor, all),
                        _ => yarn_mscale(factor, 1.0),
                    },
                };
                let truncate = match s.get("truncate") {
                    None | Some(serde_json::Value::Null) => true,
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| err("truncate", "expected true or false"))?,
                };
                Self::Yarn {
                    factor,
                    original_context,
                    beta_fast: num("beta_fast")?.unwrap_or(32.0),
                    beta_slow: num("beta_slow")?.unwrap_or(1.0),
                    attention_factor,
                    truncate,
                }
            }
            other => {
                return Err((
                    "rope_scaling".into(),
                    format!("rope type `{other}` is not supported (default, linear, llama3, yarn)"),
                ))
            }
        })
    }

    /// The `rope_scaling` object of `config.json` (`null` for none). A
    /// [`RopeScaling::Stored`] model must be resolved first
    /// ([`RopeScaling::llama3_from_factors`]); it is written as `null`.
    pub fn to_hf(&self) -> serde_json::Value {
        match *self {
            Self::None | Self::Stored => serde_json::Value::Null,
            Self::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_context,
            }),
            Self::Yarn {
                factor,
                original_context,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => json!({
                "rope_type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": original_context,
                "beta_fast": beta_fast,
                "beta_slow": beta_slow,
                "attention_factor": attention_factor,
                "truncate": truncate,
            }),
        }
    }

    /// Reads `{arch}.rope.scaling.*` (and whether the file has [`ROPE_FREQS`]).
    /// Errors are (key, message).
    pub fn from_gguf(
        g: &crate::gguf::GgufFile,
        arch: &str,
    ) -> std::result::Result<Self, crate::error::Error> {
        let k = |s: &str| format!("{arch}.rope.scaling.{s}");
        if g.has_tensor(ROPE_FREQS) {
            return Ok(Self::Stored);
        }
        let kind = g.string_opt(&k("type"))?;
        let factor = g.f64_opt(&k("factor"))?;
        let bad = |key: &str, message: String| crate::error::Error::Metadata {
            path: g.path().to_path_buf(),
            key: k(key),
            message,
        };
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(bad(key, format!("{v}: expected a positive finite number")))
            }
        };
        Ok(match kind.as_deref() {
            None | Some("linear") => match factor {
                None => Self::None,
                Some(1.0) => Self::None,
                Some(f) => Self::Linear {
                    factor: positive("factor", f)?,
                },
            },
            Some("none") => Self::None,
            Some("yarn") => {
                let factor = positive(
                    "factor",
                    factor.ok_or_else(|| bad("factor", "missing for yarn".into()))?,
                )?;
                if let Some(e) = g.f64_opt(&k("yarn_ext_factor"))? {
                    if e != 1.0 {
                        return Err(bad(
                            "yarn_ext_factor",
                            format!("{e}: only the full YaRN blend (1) is supported"),
                        ));
                    }
                }
                // llama.cpp falls back on the context length, as transformers on
                // max_position_embeddings.
                let original_context = match g.u64_opt(&k("original_context_length"))? {
                    Some(c) => c,
                    None => g
                        .u64_opt(&format!("{arch}.context_length"))?
                        .ok_or_else(|| bad("original_context_length", "missing for yarn".into()))?,
                };
                if original_context == 0 || original_context > crate::models::MAX_CONTEXT as u64 {
                    return Err(bad(
                        "original_context_length",
                        format!("{original_context} is not a context length"),
                    ));
                }
                let opt = |key: &str, default: f64| -> crate::error::Result<f64> {
                    match g.f64_opt(&k(key))? {
                        Some(v) => positive(key, v),
                        None => Ok(default),
                    }
                };
                Self::Yarn {
                    factor,
                    original_context: original_context as usize,
                    beta_fast: opt("yarn_beta_fast", 32.0)?,
                    beta_slow: opt("yarn_beta_slow", 1.0)?,
                    attention_factor: opt("yarn_attn_factor", yarn_mscale(factor, 1.0))?,
                    truncate: true,
                }
            }
            Some(other) => {
                return Err(bad(
                    "type",
                    format!("rope scaling `{other}` is not supported (none, linear, yarn)"),
                ))
            }
        })
    }

    /// The `{arch}.rope.scaling.*` keys llama.cpp reads (none for Llama 3, which GGUF
    /// stores as the [`ROPE_FREQS`] tensor).
    pub fn to_gguf(&self, arch: &str) -> Vec<(String, Value)> {
        let k = |s: &str| format!("{arch}.rope.scaling.{s}");
        match *self {
            Self::None | Self::Llama3 { .. } | Self::Stored => Vec::new(),
            Self::Linear { factor } => vec![
                (k("type"), Value::String("linear".into())),
                (k("factor"), Value::F32(factor as f32)),
            ],
            Self::Yarn {
                factor,
                original_context,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate: _,
            } => {
                let mut m = vec![
                    (k("type"), Value::String("yarn".into())),
                    (k("factor"), Value::F32(factor as f32)),
                    (
                        k("original_context_length"),
                        Value::U32(original_context as u32),
                    ),
                ];
                // Only what differs from the defaults, as llama.cpp's converter does:
                // a default recomputed in f64 is exact, an f32 copy of it is not.
                for (key, v, default) in [
                    ("yarn_beta_fast", beta_fast, 32.0),
                    ("yarn_beta_slow", beta_slow, 1.0),
                    (
                        "yarn_attn_factor",
                        attention_factor,
                        yarn_mscale(factor, 1.0),
                    ),
                ] {
                    if v != default {
                        m.push((k(key), Value::F32(v as f32)));
                    }
                }
                m
            }
        }
    }

    /// One phrase for `info`.
    pub fn describe(&self) -> String {
        match *self {
            Self::None => "no scaling".into(),
            Self::Linear { factor } => format!("linear scaling {factor}"),
            Self::Llama3 {
                factor,
                original_context,
                ..
            } => format!("llama3 scaling {factor} from {original_context}"),
            Self::Yarn {
                factor,
                original_context,
                ..
            } => format!("yarn scaling {factor} from {original_context}"),
            Self::Stored => format!("per-pair scaling from {ROPE_FREQS}"),
        }
    }

    /// Its factors, for validation: each must be positive and finite.
    pub fn numbers(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Self::None | Self::Stored => Vec::new(),
            Self::Linear { factor } => vec![("rope scaling factor", factor)],
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => vec![
                ("rope scaling factor", factor),
                ("rope low_freq_factor", low_freq_factor),
                (
                    "rope high_freq_factor − low_freq_factor",
                    high_freq_factor - low_freq_factor,
                ),
                ("rope original context", original_context as f64),
            ],
            Self::Yarn {
                factor,
                original_context,
                beta_fast,
                beta_slow,
                attention_factor,
                ..
            } => vec![
                ("rope scaling factor", factor),
                ("rope original context", original_context as f64),
                ("rope beta_fast", beta_fast),
                ("rope beta_slow", beta_slow),
                ("rope attention factor", attention_factor),
            ],
        }
    }
}

/// Rotary embedding of one kind of layer: the frequency of each rotated pair (with
/// its scaling applied) and how pairs are formed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    inv_freq: Arc<[f64]>,
    /// cos and sin are multiplied by this (YaRN's attention factor; 1 otherwise).
    mscale: f64,
    /// Rotated dimensions (= head_dim for every model we support).
    pub dim: usize,
    /// GPT-NeoX pairing (i with i + dim/2) when true; GGUF llama's interleaved pairs when false.
    pub neox: bool,
}

impl Rope {
    /// Rope of base θ `base` over `dim` dimensions with `scaling`; `stored`: the
    /// [`ROPE_FREQS`] divisors of a [`RopeScaling::Stored`] model.
    pub fn new(
        base: f64,
        dim: usize,
        neox: bool,
        scaling: &RopeScaling,
        stored: Option<&[f32]>,
    ) -> std::result::Result<Self, String> {
        let (inv_freq, mscale) = scaling.frequencies(base, dim, stored)?;
        Ok(Self {
            inv_freq: inv_freq.into(),
            mscale,
            dim,
            neox,
        })
    }

    /// cos and sin tables `[t, dim/2]` for positions `start .. start + t`.
    /// Angles are computed in f64 so long contexts keep full precision.
    pub fn tables(&self, start: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in start..start + t {
            for &f in self.inv_freq.iter() {
                let a = p as f64 * f;
                cos.push((a.cos() * self.mscale) as f32);
                sin.push((a.sin() * self.mscale) as f32);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3(original_context: usize) -> RopeScaling {
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_context,
        }
    }

    #[test]
    fn llama3_divisors_follow_the_bands() {
        // The golden README's table for θ 1000, head_dim 16, original context 32:
        // pair 0 kept, pair 1 blended (ratio 0.4597), pairs 2-7 divided by 8.
        let f = llama3(32).gguf_factors(1000.0, 16).unwrap();
        assert_eq!(f[0], 1.0);
        assert!((1.0 / f[1] - 0.4597).abs() < 1e-4, "{}", f[1]);
        assert!(f[2..].iter().all(|&x| x == 8.0));
    }

    #[test]
    fn llama3_parameters_come_back_from_the_stored_factors() {
        for (base, dim, ctx) in [(500_000.0, 128, 8192), (1000.0, 16, 32)] {
            let s = llama3(ctx);
            let f = s.gguf_factors(base, dim).unwrap();
            assert_eq!(RopeScaling::llama3_from_factors(&f, base, dim), Some(s));
        }
        let mut odd = llama3(8192).gguf_factors(500_000.0, 128).unwrap();
        odd[3] = 2.5;
        assert_eq!(RopeScaling::llama3_from_factors(&odd, 500_000.0, 128), None);
    }

    #[test]
    fn yarn_matches_the_golden_readme() {
        // θ 1000, d 16, factor 4, L 32: low 0, high 2; pair 1 half-way (0.625),
        // pairs 2-7 divided by 4; attention factor 0.1·ln 4 + 1.
        let s = RopeScaling::from_hf(
            Some(&json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})),
            Some(128),
        )
        .unwrap();
        let (inv, m) = s.frequencies(1000.0, 16, None).unwrap();
        let (plain, _) = RopeScaling::None.frequencies(1000.0, 16, None).unwrap();
        assert_eq!(inv[0], plain[0]);
        assert!((inv[1] / plain[1] - 0.625).abs() < 1e-12);
        assert!(inv[2..]
            .iter()
            .zip(&plain[2..])
            .all(|(a, b)| (a / b - 0.25).abs() < 1e-12));
        assert!((m - 1.138_629_4).abs() < 1e-7);
    }

    #[test]
    fn configs_round_trip_and_bad_ones_name_the_key() {
        for s in [
            RopeScaling::None,
            RopeScaling::Linear { factor: 8.0 },
            llama3(8192),
            RopeScaling::Yarn {
                factor: 4.0,
                original_context: 32_768,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: 1.2,
                truncate: false,
            },
        ] {
            assert_eq!(RopeScaling::from_hf(Some(&s.to_hf()), None), Ok(s));
        }
        for (v, key) in [
            (
                json!({"rope_type": "llama3", "factor": 8.0}),
                "low_freq_factor",
            ),
            (json!({"rope_type": "linear", "factor": -1.0}), "factor"),
            (
                json!({"rope_type": "yarn", "factor": 4.0}),
                "original_max_position_embeddings",
            ),
            (
                json!({"rope_type": "dynamic", "factor": 2.0}),
                "rope_scaling",
            ),
            (
                json!({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 1e30}),
                "original_max_position_embeddings",
            ),
        ] {
            let (k, m) = RopeScaling::from_hf(Some(&v), None).unwrap_err();
            assert!(k.ends_with(key), "{k}: {m}");
        }
    }
}

//! Turning logits into the next token: greedy, or sampling with llama.cpp's usual
//! chain (repetition penalty → top-k → top-p → min-p → temperature), seeded.

use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Sampling settings. `temperature <= 0` means greedy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SamplingParams {
    /// Softmax temperature; 0 picks the most likely token.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Random seed, for reproducible sampling.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub seed: u64,
}

/// Our sampling for a model that recommends none (the demo model's GGUF, most
/// GGUFs): what Ollama and LM Studio ship, because greedy decoding of small models
/// falls into loops ("a delicate touch" until the token limit) and a mild penalty
/// with nucleus sampling does not.
impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Plain argmax decoding (no penalty).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Self::default()
        }
    }

    /// `base` (the model's recommendation, else ours) with what the user set on top.
    /// One rule for the app, the CLI and the server: temperature 0 means argmax, so
    /// asking for it drops the default penalty unless a penalty is asked for too.
    pub fn resolve(base: Option<&SamplingParams>, set: &SamplingOverrides) -> Self {
        let base = base.cloned().unwrap_or_default();
        let temperature = set.temperature.unwrap_or(base.temperature);
        let repeat_penalty = match (set.repeat_penalty, set.temperature) {
            (Some(r), _) => r,
            (None, Some(t)) if t <= 0.0 => 1.0,
            (None, _) => base.repeat_penalty,
        };
        Self {
            temperature,
            top_k: set.top_k.unwrap_or(base.top_k),
            top_p: set.top_p.unwrap_or(base.top_p),
            min_p: set.min_p.unwrap_or(base.min_p),
            repeat_penalty,
            repeat_last_n: set.repeat_last_n.unwrap_or(base.repeat_last_n),
            seed: set.seed.unwrap_or(base.seed),
        }
    }

    /// Checks ranges, so that a bad flag is an error rather than odd output.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return Err(format!(
                "repeat penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// Sampling settings a user chose; `None` takes the model's (or our) default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingOverrides {
    /// See [`SamplingParams::temperature`].
    pub temperature: Option<f32>,
    /// See [`SamplingParams::top_k`].
    pub top_k: Option<usize>,
    /// See [`SamplingParams::top_p`].
    pub top_p: Option<f32>,
    /// See [`SamplingParams::min_p`].
    pub min_p: Option<f32>,
    /// See [`SamplingParams::repeat_penalty`].
    pub repeat_penalty: Option<f32>,
    /// See [`SamplingParams::repeat_last_n`].
    pub repeat_last_n: Option<usize>,
    /// See [`SamplingParams::seed`].
    pub seed: Option<u64>,
}

/// A sampler with its own random state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Picks the next token from `logits`, given the tokens so far (for the penalty).
    /// Runs in one pass over the vocabulary plus work on a short candidate list, so
    /// that sampling stays cheap next to a decode step even with Gemma's 262k vocabulary.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        match self.params.choices(logits, history) {
            Choices::One(t) => t,
            Choices::Weighted(cand, weights) => match WeightedIndex::new(&weights) {
                Ok(d) => cand[d.sample(&mut self.rng)].0,
                Err(_) => cand[0].0,
            },
        }
    }

    /// The distribution [`Sampler::sample`] draws from, as (token, probability) pairs
    /// with probability > 0: one token with probability 1 when greedy. Speculative
    /// decoding compares the target's and the draft's.
    pub fn distribution(&self, logits: &[f32], history: &[u32]) -> Vec<(u32, f64)> {
        match self.params.choices(logits, history) {
            Choices::One(t) => vec![(t, 1.0)],
            Choices::Weighted(cand, weights) => {
                let z: f64 = weights.iter().sum();
                if !(z.is_finite() && z > 0.0) {
                    return vec![(cand[0].0, 1.0)];
                }
                cand.iter()
                    .zip(&weights)
                    .filter(|(_, &w)| w > 0.0)
                    .map(|(c, &w)| (c.0, w / z))
                    .collect()
            }
        }
    }

    /// Draws a token from a distribution of (token, weight) pairs (weights need not
    /// sum to 1); `None` when they are all zero.
    pub fn pick(&mut self, dist: &[(u32, f64)]) -> Option<u32> {
        let weights: Vec<f64> = dist.iter().map(|d| d.1).collect();
        WeightedIndex::new(&weights)
            .ok()
            .map(|d| dist[d.sample(&mut self.rng)].0)
    }

    /// A uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        use rand::Rng;
        self.rng.random::<f64>()
    }

    /// Whether it always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0
    }
}

/// What the sampling chain leaves: one certain token, or candidates with weights.
enum Choices {
    One(u32),
    Weighted(Vec<(u32, f32)>, Vec<f64>),
}

impl SamplingParams {
    /// The sampling chain up to the final draw.
    fn choices(&self, logits: &[f32], history: &[u32]) -> Choices {
        let p = self;
        let logits: std::borrow::Cow<[f32]> = if p.repeat_penalty != 1.0 {
            let mut v = logits.to_vec();
            let from = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[from..] {
                if seen.insert(t) {
                    if let Some(l) = v.get_mut(t as usize) {
                        *l = if *l > 0.0 {
                            *l / p.repeat_penalty
                        } else {
                            *l * p.repeat_penalty
                        };
                    }
                }
            }
            v.into()
        } else {
            logits.into()
        };
        if p.temperature <= 0.0 {
            return Choices::One(argmax(&logits));
        }
        let mut cand = candidates(&logits, p.top_k);
        if cand.is_empty() {
            return Choices::One(argmax(&logits));
        }
        // Probabilities at temperature 1 decide min-p and top-p, as in llama.cpp.
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = cand.iter().map(|c| ((c.1 - max) as f64).exp()).sum();
        if p.min_p > 0.0 {
            // p ≥ min_p · p_max  ⟺  logit ≥ max + ln(min_p); the best token always stays.
            let floor = max + p.min_p.ln();
            cand.retain(|c| c.1 >= floor);
        }
        if p.top_p < 1.0 {
            // Keep the most likely tokens until their mass reaches top-p. Only a prefix
            // needs sorting: grow it until it holds that mass.
            let mut n = cand.len().min(256);
            let keep = loop {
                if n < cand.len() {
                    cand.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1));
                }
                cand[..n].sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
                let mut acc = 0f64;
                let hit = cand[..n].iter().position(|c| {
                    acc += ((c.1 - max) as f64).exp() / z;
                    acc >= p.top_p as f64
                });
                match hit {
                    Some(i) => break i + 1,
                    None if n == cand.len() => break n,
                    None => n = (n * 4).min(cand.len()),
                }
            };
            cand.truncate(keep);
        }
        let weights: Vec<f64> = cand
            .iter()
            .map(|c| (((c.1 - max) / p.temperature) as f64).exp())
            .collect();
        Choices::Weighted(cand, weights)
    }
}

/// The tokens worth considering: the top k when top-k is on (a small min-heap; most
/// tokens fail its first comparison); otherwise every token within 30 nats of the best
/// (each token further down has under e⁻³⁰ of the best one's probability, below f32
/// resolution in any top-p sum).
fn candidates(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k > 0 {
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<Ordered>> =
            std::collections::BinaryHeap::with_capacity(k + 1);
        for (i, &v) in logits.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            if heap.len() < k {
                heap.push(std::cmp::Reverse(Ordered(v, i as u32)));
            } else if heap.peek().is_some_and(|m| v > m.0 .0) {
                heap.pop();
                heap.push(std::cmp::Reverse(Ordered(v, i as u32)));
            }
        }
        return heap.into_iter().map(|r| (r.0 .1, r.0 .0)).collect();
    }
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let floor = max - 30.0;
    logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v >= floor)
        .map(|(i, &v)| (i as u32, v))
        .collect()
}

/// A logit with its token id, ordered by logit.
#[derive(PartialEq)]
struct Ordered(f32, u32);
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// Index of the largest value (the first one on ties, as torch's argmax).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.5], &[]), 1);
        }
    }

    #[test]
    fn same_seed_same_tokens_and_sampling_spreads() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let logits = [1.0, 1.0, 1.0, 1.0];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params.clone()
            });
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let seen: std::collections::HashSet<_> = draw(7).into_iter().collect();
        assert_eq!(seen.len(), 4, "uniform logits must reach every token");
    }

    #[test]
    fn repetition_penalty_moves_the_argmax() {
        let params = SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&[2.0, 1.5], &[0]), 1);
    }

    #[test]
    fn min_p_removes_unlikely_tokens() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..50 {
            assert_ne!(s.sample(&[5.0, 0.0, 4.9], &[]), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_the_mass() {
        // Probabilities ∝ 8, 4, 2, 1, 1 (of 16): top-p 0.7 keeps the first two only.
        let l: Vec<f32> = [8f32, 4.0, 2.0, 1.0, 1.0].iter().map(|x| x.ln()).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.7,
            min_p: 0.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        let seen: std::collections::HashSet<u32> = (0..300).map(|_| s.sample(&l, &[])).collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
    }

    #[test]
    fn top_p_over_a_large_vocabulary_sorts_only_what_it_needs_and_stays_exact() {
        // 100k tokens; the top 1000 hold most of the mass, so the prefix grows past 256.
        let l: Vec<f32> = (0..100_000)
            .map(|i| {
                if i < 1000 {
                    10.0 - i as f32 * 1e-3
                } else {
                    -5.0
                }
            })
            .collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.9,
            min_p: 0.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..200 {
            assert!(s.sample(&l, &[]) < 1000);
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let p = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn user_settings_override_the_model_and_temperature_zero_is_argmax() {
        let model = SamplingParams {
            temperature: 1.0,
            top_k: 64,
            repeat_penalty: 1.3,
            ..Default::default()
        };
        let set = SamplingOverrides {
            top_p: Some(0.5),
            ..Default::default()
        };
        let p = SamplingParams::resolve(Some(&model), &set);
        assert_eq!((p.temperature, p.top_k, p.top_p), (1.0, 64, 0.5));
        assert_eq!(p.repeat_penalty, 1.3);
        // No recommendation: ours, with its mild penalty.
        let ours = SamplingParams::resolve(None, &SamplingOverrides::default());
        assert_eq!(ours, SamplingParams::default());
        assert_eq!((ours.temperature, ours.repeat_penalty), (0.8, 1.1));
        // Greedy drops the default penalty, unless one is asked for.
        let greedy = SamplingOverrides {
            temperature: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            SamplingParams::resolve(Some(&model), &greedy).repeat_penalty,
            1.0
        );
        let penalised = SamplingOverrides {
            repeat_penalty: Some(1.2),
            ..greedy
        };
        assert_eq!(
            SamplingParams::resolve(None, &penalised).repeat_penalty,
            1.2
        );
    }
}

//! Choosing the next token from logits: greedy (argmax), temperature, top-k and top-p (nucleus)
//! sampling, seeded so that the same seed gives the same draws on every run and device.
//!
//! The pipeline follows Hugging Face `generate` / common PyTorch practice, applied per row:
//!
//! 1. temperature: `logits / temperature` (`temperature == 0` means greedy: argmax, no draw);
//! 2. top-k: keep the `k` largest logits (exactly `k`; ties broken towards the lower id);
//! 3. top-p: softmax over what is left, then keep the smallest set of the most likely tokens
//!    whose probability mass is `>= p` (the most likely token is always kept);
//! 4. draw one token from the renormalised distribution over the kept tokens.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rnn_models::sampling::{Sampler, SamplingConfig};
//! let logits = Tensor::new(&[[0.1f32, 2.0, -1.0], [3.0, 0.0, 0.0]], &Device::Cpu)?;
//! let mut greedy = Sampler::new(SamplingConfig::greedy(), 0)?;
//! assert_eq!(greedy.sample(&logits)?, vec![1, 0]);
//! let cfg = SamplingConfig { temperature: 0.8, top_k: Some(2), top_p: Some(0.9) };
//! let a = Sampler::new(cfg, 42)?.sample(&logits)?;
//! let b = Sampler::new(cfg, 42)?.sample(&logits)?;
//! assert_eq!(a, b); // seeded
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

fn err(message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(message.to_string())
}

fn default_temperature() -> f64 {
    1.0
}

/// How to pick a token from a row of logits (see the [module docs](self) for the order of the
/// steps). Every field has a serde default, so `{}` is plain sampling at temperature 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Divides the logits before the softmax: `< 1` sharpens, `> 1` flattens. `0.0` = greedy
    /// (argmax, no random draw). Must be finite and `>= 0`. Default 1.0.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`k >= 1`; larger than the vocabulary = all).
    /// `None` = no top-k filter. `Some(1)` is greedy whatever the temperature.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability mass is
    /// `>= p`, `p` in `(0, 1]`. `None` (or `Some(1.0)`) = no top-p filter.
    #[serde(default)]
    pub top_p: Option<f64>,
}

impl Default for SamplingConfig {
    /// Plain sampling from `softmax(logits)`: temperature 1, no top-k, no top-p.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding: always the argmax (temperature 0).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        }
    }

    /// Plain sampling at `temperature`, no filters.
    pub fn with_temperature(temperature: f64) -> Self {
        Self {
            temperature,
            ..Self::default()
        }
    }

    /// Whether this configuration always picks the argmax (temperature 0 or top-k 1), drawing no
    /// random numbers.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(err(format!(
                "SamplingConfig: temperature must be finite and >= 0 (0 = greedy), got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(err(
                "SamplingConfig: top_k must be >= 1 (or None for no top-k filter), got 0",
            ));
        }
        if let Some(p) = self.top_p {
            // `!(p > 0.0)` also rejects NaN.
            if !(p > 0.0 && p <= 1.0) {
                return Err(err(format!(
                    "SamplingConfig: top_p must be in (0, 1] (or None for no top-p filter), got {p}"
                )));
            }
        }
        Ok(())
    }

    /// The distribution a [`Sampler`] draws from for one row of `logits`: the kept token ids
    /// with their renormalised probabilities (summing to 1), most likely first. Greedy
    /// configurations give the argmax with probability 1.
    ///
    /// Errors on an empty row, a NaN or `+inf` logit, or a row with no finite logit; `-inf`
    /// logits are allowed (probability 0, never drawn).
    pub fn distribution(&self, logits: &[f64]) -> Result<Vec<(u32, f64)>> {
        self.validate()?;
        check_row(logits)?;
        if self.is_greedy() {
            return Ok(vec![(argmax(logits), 1.0)]);
        }
        // Sort ids by logit, descending; the stable sort keeps lower ids first among ties.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        // -inf logits have probability 0: never part of the candidate set.
        let finite = order
            .iter()
            .take_while(|&&i| logits[i as usize] > f64::NEG_INFINITY)
            .count();
        order.truncate(finite);
        if let Some(k) = self.top_k {
            order.truncate(k);
        }
        let t = self.temperature;
        let max = logits[order[0] as usize] / t;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| (logits[i as usize] / t - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut probs: Vec<(u32, f64)> = order
            .iter()
            .zip(&weights)
            .map(|(&i, &w)| (i, w / total))
            .collect();
        if let Some(p) = self.top_p {
            if p < 1.0 {
                // Keep token j while the mass before it is still < p: the smallest prefix whose
                // mass is >= p, and always at least the top token.
                let mut mass = 0.0;
                let mut keep = 0;
                for &(_, q) in &probs {
                    if keep > 0 && mass >= p {
                        break;
                    }
                    mass += q;
                    keep += 1;
                }
                probs.truncate(keep);
                for entry in &mut probs {
                    entry.1 /= mass;
                }
            }
        }
        // Tokens whose weight underflowed to 0 can never be drawn: drop them.
        let nonzero = probs.iter().take_while(|(_, q)| *q > 0.0).count().max(1);
        probs.truncate(nonzero);
        Ok(probs)
    }
}

/// Checks one row of logits: non-empty, no NaN or +inf, at least one finite value.
fn check_row(logits: &[f64]) -> Result<()> {
    if logits.is_empty() {
        return Err(err("sampling: logits have no classes (vocabulary size 0)"));
    }
    if let Some(i) = logits
        .iter()
        .position(|v| v.is_nan() || *v == f64::INFINITY)
    {
        return Err(err(format!(
            "sampling: logits[{i}] = {} is not allowed (NaN or +inf; use -inf to forbid a token)",
            logits[i]
        )));
    }
    if logits.iter().all(|v| *v == f64::NEG_INFINITY) {
        return Err(err("sampling: every logit is -inf; no token can be drawn"));
    }
    Ok(())
}

/// Index of the largest value; the lowest index among ties. Assumes no NaN.
fn argmax(row: &[f64]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The logits as host rows of f64: `(V,)` is one row, `(B, V)` is B rows.
fn host_rows(what: &str, logits: &Tensor) -> Result<Vec<Vec<f64>>> {
    if !logits.dtype().is_float() {
        return Err(err(format!(
            "{what}: logits must have a float dtype, got {:?}",
            logits.dtype()
        )));
    }
    let rows = match logits.rank() {
        1 => vec![logits.to_dtype(DType::F64)?.to_vec1::<f64>()?],
        2 => logits.to_dtype(DType::F64)?.to_vec2::<f64>()?,
        r => {
            return Err(err(format!(
                "{what}: logits must be (vocab,) or (batch, vocab), got rank {r} shape {:?}",
                logits.dims()
            )))
        }
    };
    if logits.dims().last() == Some(&0) {
        return Err(err(format!(
            "{what}: logits have no classes (shape {:?})",
            logits.dims()
        )));
    }
    Ok(rows)
}

/// The argmax of each row of `logits` (`(V,)` -> one id, `(B, V)` -> B ids), the lowest id
/// among ties. Any float dtype and device (the values are read on the host). NaN logits are an
/// error.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    let rows = host_rows("argmax_rows", logits)?;
    rows.iter()
        .map(|row| {
            if let Some(i) = row.iter().position(|v| v.is_nan()) {
                return Err(err(format!("argmax_rows: logits[{i}] is NaN")));
            }
            Ok(argmax(row))
        })
        .collect()
}

/// Draws token ids from logits with a [`SamplingConfig`] and a seeded ChaCha8 generator.
///
/// Each row of a stochastic configuration consumes exactly one uniform draw, greedy rows none,
/// so a run is reproducible from its seed whatever the device.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for `cfg` (validated; the error names the bad field) seeded with `seed`.
    pub fn new(cfg: SamplingConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingConfig {
        &self.cfg
    }

    /// Restarts the generator from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// One id per row of `logits`: `(V,)` gives one id, `(B, V)` gives B ids (empty for B = 0).
    /// Any float dtype and device; the values are read on the host. Errors on other ranks,
    /// integer dtypes, NaN / `+inf` logits and rows that are all `-inf`.
    pub fn sample(&mut self, logits: &Tensor) -> Result<Vec<u32>> {
        let rows = host_rows("Sampler::sample", logits)?;
        rows.iter().map(|row| self.sample_row(row)).collect()
    }

    /// One id from a host row of logits (see [`SamplingConfig::distribution`]).
    pub fn sample_row(&mut self, logits: &[f64]) -> Result<u32> {
        let dist = self.cfg.distribution(logits)?;
        if self.cfg.is_greedy() {
            return Ok(dist[0].0);
        }
        let u: f64 = self.rng.random::<f64>();
        let mut acc = 0.0;
        for &(id, q) in &dist {
            acc += q;
            if u < acc {
                return Ok(id);
            }
        }
        // Rounding left `acc` a hair below 1 and `u` above it: the last kept token.
        Ok(dist[dist.len() - 1].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn softmax(xs: &[f64], t: f64) -> Vec<f64> {
        let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = xs.iter().map(|x| ((x - m) / t).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn random_logits(rows: usize, vocab: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..rows * vocab)
            .map(|_| rng.random::<f32>() * 6.0 - 3.0)
            .collect();
        Tensor::from_vec(v, (rows, vocab), &Device::Cpu).unwrap()
    }

    #[test]
    fn greedy_is_argmax_and_top_k_one_is_greedy() {
        let logits = random_logits(20, 11, 3);
        let expected = argmax_rows(&logits).unwrap();
        let rows = logits.to_vec2::<f32>().unwrap();
        for (row, &e) in rows.iter().zip(&expected) {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
            assert_eq!(best as u32, e);
        }
        let mut greedy = Sampler::new(SamplingConfig::greedy(), 1).unwrap();
        assert_eq!(greedy.sample(&logits).unwrap(), expected);
        for t in [0.1, 1.0, 5.0, 100.0] {
            for seed in 0..3 {
                let cfg = SamplingConfig {
                    temperature: t,
                    top_k: Some(1),
                    top_p: None,
                };
                let mut s = Sampler::new(cfg, seed).unwrap();
                assert_eq!(s.sample(&logits).unwrap(), expected, "t={t}");
            }
        }
        // Rank-1 input gives one id; f64 and f16 inputs work.
        let row = Tensor::new(&[0.5f64, 3.0, -1.0], &Device::Cpu).unwrap();
        assert_eq!(greedy.sample(&row).unwrap(), vec![1]);
        let half = row.to_dtype(DType::F16).unwrap();
        assert_eq!(argmax_rows(&half).unwrap(), vec![1]);
        // Ties go to the lower id.
        let tie = Tensor::new(&[1f32, 2.0, 2.0], &Device::Cpu).unwrap();
        assert_eq!(argmax_rows(&tie).unwrap(), vec![1]);
    }

    #[test]
    fn small_top_p_only_draws_the_top_token() {
        let logits = random_logits(8, 9, 5);
        let expected = argmax_rows(&logits).unwrap();
        let cfg = SamplingConfig {
            temperature: 1.5,
            top_k: None,
            top_p: Some(1e-6),
        };
        let mut s = Sampler::new(cfg, 9).unwrap();
        for _ in 0..200 {
            assert_eq!(s.sample(&logits).unwrap(), expected);
        }
    }

    #[test]
    fn top_k_and_top_p_keep_the_right_sets() {
        // softmax of ln([0.5, 0.3, 0.15, 0.05]) is exactly those probabilities.
        let p = [0.5f64, 0.3, 0.15, 0.05];
        let logits: Vec<f64> = p.iter().map(|v| v.ln()).collect();
        let d = |top_k, top_p| {
            SamplingConfig {
                temperature: 1.0,
                top_k,
                top_p,
            }
            .distribution(&logits)
            .unwrap()
        };
        let ids = |v: Vec<(u32, f64)>| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(ids(d(None, None)), vec![0, 1, 2, 3]);
        assert_eq!(ids(d(Some(2), None)), vec![0, 1]);
        // mass 0.5 < 0.6 -> add 0.3 -> 0.8 >= 0.6
        assert_eq!(ids(d(None, Some(0.6))), vec![0, 1]);
        // exactly 0.5 is enough for p = 0.5
        assert_eq!(ids(d(None, Some(0.5))), vec![0]);
        assert_eq!(ids(d(None, Some(0.9))), vec![0, 1, 2]);
        // top-k first (renormalised to [0.625, 0.375]), then top-p 0.6 keeps only id 0.
        assert_eq!(ids(d(Some(2), Some(0.6))), vec![0]);
        let two = d(Some(2), None);
        assert!((two[0].1 - 0.625).abs() < 1e-12 && (two[1].1 - 0.375).abs() < 1e-12);
        // -inf is never a candidate.
        let masked = SamplingConfig::default()
            .distribution(&[0.0, f64::NEG_INFINITY, 0.0])
            .unwrap();
        assert_eq!(ids(masked), vec![0, 2]);
    }

    #[test]
    fn empirical_frequencies_match_softmax() {
        let logits = [1.0f64, 0.0, -0.5, 2.0, 0.3];
        let draws = 40_000;
        for t in [0.7, 1.0, 2.0] {
            let mut s = Sampler::new(SamplingConfig::with_temperature(t), 123).unwrap();
            let tensor = Tensor::new(&logits, &Device::Cpu).unwrap();
            let mut counts = [0usize; 5];
            for _ in 0..draws {
                counts[s.sample(&tensor).unwrap()[0] as usize] += 1;
            }
            let expected = softmax(&logits, t);
            for (c, e) in counts.iter().zip(&expected) {
                let freq = *c as f64 / draws as f64;
                // 4.5 standard errors of a binomial proportion.
                let tol = 4.5 * (e * (1.0 - e) / draws as f64).sqrt();
                assert!((freq - e).abs() < tol, "t={t}: {freq} vs {e}");
            }
        }
        // Top-k 3 at T = 1: the three largest, renormalised; the rest never drawn.
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: Some(3),
            top_p: None,
        };
        let mut s = Sampler::new(cfg, 7).unwrap();
        let mut counts = [0usize; 5];
        for _ in 0..draws {
            counts[s.sample_row(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(counts[1] + counts[2], 0);
        let kept = softmax(&[1.0, 2.0, 0.3], 1.0);
        for (id, e) in [0usize, 3, 4].iter().zip(kept) {
            let freq = counts[*id] as f64 / draws as f64;
            assert!((freq - e).abs() < 0.015, "{id}: {freq} vs {e}");
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let logits = random_logits(4, 30, 11);
        let cfg = SamplingConfig {
            temperature: 1.3,
            top_k: Some(20),
            top_p: Some(0.95),
        };
        let run = |seed| {
            let mut s = Sampler::new(cfg, seed).unwrap();
            (0..50)
                .flat_map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        let mut s = Sampler::new(cfg, 5).unwrap();
        let first = s.sample(&logits).unwrap();
        s.reseed(5);
        assert_eq!(s.sample(&logits).unwrap(), first);
    }

    #[test]
    fn invalid_configs_and_inputs_name_the_fault() {
        let bad = [
            (SamplingConfig::with_temperature(-0.5), "temperature"),
            (SamplingConfig::with_temperature(f64::NAN), "temperature"),
            (
                SamplingConfig::with_temperature(f64::INFINITY),
                "temperature",
            ),
            (
                SamplingConfig {
                    top_k: Some(0),
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingConfig {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingConfig {
                    top_p: Some(1.5),
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingConfig {
                    top_p: Some(f64::NAN),
                    ..Default::default()
                },
                "top_p",
            ),
        ];
        for (cfg, field) in bad {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
            let e = Sampler::new(cfg, 0).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        SamplingConfig {
            top_p: Some(1.0),
            top_k: Some(1000),
            temperature: 0.0,
        }
        .validate()
        .unwrap();

        let mut s = Sampler::new(SamplingConfig::default(), 0).unwrap();
        let dev = Device::Cpu;
        let e = s
            .sample(&Tensor::zeros((2, 2, 2), DType::F32, &dev).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 3"), "{e}");
        let e = s
            .sample(&Tensor::zeros(3, DType::U32, &dev).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("float"), "{e}");
        let e = s
            .sample(&Tensor::new(&[0f32, f32::NAN], &dev).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("logits[1]"), "{e}");
        let e = s
            .sample(&Tensor::new(&[f32::NEG_INFINITY; 2], &dev).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("-inf"), "{e}");
    }

    #[test]
    fn serde_defaults() {
        let cfg: SamplingConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, SamplingConfig::default());
        let cfg: SamplingConfig = serde_json::from_str(r#"{"top_k":5}"#).unwrap();
        assert_eq!(cfg.temperature, 1.0);
        assert_eq!(cfg.top_k, Some(5));
        let back: SamplingConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}

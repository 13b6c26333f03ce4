//! Perplexity and bits per token of a language model.

use candle_core::DType;

use super::{invalid, Metric, NllSum};
use crate::Result;

/// Perplexity and bits per token from a summed negative log-likelihood in nats.
///
/// Accumulate the *sum* of per-token NLL and the token count (e.g. from
/// [`masked_cross_entropy_sum`](super::masked_cross_entropy_sum)), not batch means, so that
/// batches with different numbers of real tokens are weighed correctly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Perplexity {
    nll_sum: f64,
    tokens: u64,
}

/// The result of [`Perplexity`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PerplexityReport {
    /// Mean negative log-likelihood per token, in nats (the cross-entropy loss).
    pub nll_per_token: f64,
    /// `exp(nll_per_token)`.
    pub perplexity: f64,
    /// `nll_per_token / ln 2`: bits per token, i.e. bits per character (BPC) for a
    /// character-level model.
    #[doc(alias = "bpc")]
    pub bits_per_token: f64,
    /// Tokens counted.
    pub tokens: u64,
}

impl Perplexity {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `nll_sum` nats of negative log-likelihood summed over `tokens` tokens.
    ///
    /// `nll_sum` must not be negative (a negative value usually means a log-likelihood was passed
    /// instead of its negation); NaN and `+inf` are accepted and propagate to the result. A
    /// positive `nll_sum` over 0 tokens is an error.
    pub fn update(&mut self, nll_sum: f64, tokens: usize) -> Result<()> {
        if nll_sum < 0.0 {
            return Err(invalid(format!(
                "Perplexity::update: `nll_sum` must be a non-negative negative log-likelihood in \
                 nats, got {nll_sum}"
            )));
        }
        if tokens == 0 && nll_sum != 0.0 {
            return Err(invalid(format!(
                "Perplexity::update: `nll_sum` is {nll_sum} but `tokens` is 0"
            )));
        }
        self.nll_sum += nll_sum;
        self.tokens += tokens as u64;
        Ok(())
    }

    /// [`Perplexity::update`] from the output of
    /// [`masked_cross_entropy_sum`](super::masked_cross_entropy_sum); copies two scalars to the
    /// host.
    pub fn update_nll_sum(&mut self, nll: &NllSum) -> Result<()> {
        let sum = nll.sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let count = nll.count.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !(count >= 0.0 && count.fract() == 0.0 && count <= usize::MAX as f64) {
            return Err(invalid(format!(
                "Perplexity::update_nll_sum: `count` must be a non-negative whole number, got {count}"
            )));
        }
        self.update(sum, count as usize)
    }

    /// Tokens counted so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

impl Metric for Perplexity {
    /// The report, or `None` if no token has been counted.
    type Output = Option<PerplexityReport>;

    fn compute(&self) -> Option<PerplexityReport> {
        (self.tokens > 0).then(|| {
            let nll_per_token = self.nll_sum / self.tokens as f64;
            PerplexityReport {
                nll_per_token,
                perplexity: nll_per_token.exp(),
                bits_per_token: nll_per_token / std::f64::consts::LN_2,
                tokens: self.tokens,
            }
        })
    }

    /// The perplexity.
    fn value(&self) -> Option<f64> {
        self.compute().map(|r| r.perplexity)
    }

    fn reset(&mut self) {
        self.nll_sum = 0.0;
        self.tokens = 0;
    }

    fn name(&self) -> &'static str {
        "perplexity"
    }
}

//! Metrics and losses.
//!
//! **Metrics** accumulate on the host over an epoch: call an inherent `update` (or one of its
//! tensor variants) once per batch, then [`Metric::compute`] for the result and
//! [`Metric::reset`] before the next epoch. Each metric's `update` takes the arguments natural to
//! it (class ids, token sequences, a summed log-likelihood), so `update` is inherent rather than
//! part of the trait; the trait holds what every metric shares. An `update` that returns an error
//! leaves the metric unchanged.
//!
//! | metric | input | result |
//! |---|---|---|
//! | [`MeanLoss`] | batch mean and item count | count-weighted running mean |
//! | [`Accuracy`] | predicted and target class ids (optional padding id or mask) | fraction correct |
//! | [`ConfusionMatrix`] | predicted and target class ids | [`ClassificationReport`]: per-class and macro precision, recall, F1 |
//! | [`Perplexity`] | summed negative log-likelihood (nats) and token count | [`PerplexityReport`]: perplexity, bits per token |
//! | [`ExactMatch`] | generated and reference sequences | fraction identical |
//! | [`CorpusBleu`] | generated and reference sequences (ids or words) | [`BleuScore`] |
//! | [`RegressionMetrics`] | predictions and targets | [`RegressionReport`]: MAE, RMSE, MAPE |
//! | [`EntityF1`] | predicted and gold tag strings per sentence (BIO / BIOES) | [`EntityReport`]: entity precision, recall, F1 by exact span |
//!
//! **Losses** live in [`rnn_core::loss`] (the models use them too) and are re-exported here:
//! [`masked_cross_entropy`] (and [`masked_cross_entropy_sum`] for perplexity), [`mse`] and
//! [`binary_cross_entropy_with_logits`].

mod classification;
pub mod entity;
mod mean_loss;
mod perplexity;
mod regression;
mod sequence;
#[cfg(test)]
mod tests;

use candle_core::{DType, Tensor, D};

use crate::{Error, Result};
pub use rnn_core::loss::{
    binary_cross_entropy_with_logits, masked_cross_entropy, masked_cross_entropy_sum, mse, NllSum,
};

pub use classification::{Accuracy, ClassMetrics, ClassificationReport, ConfusionMatrix};
pub use entity::{entity_spans, EntityCounts, EntityF1, EntityReport, Span, SpanMode, TagScheme};
pub use mean_loss::MeanLoss;
pub use perplexity::{Perplexity, PerplexityReport};
pub use regression::{RegressionMetrics, RegressionReport};
pub use sequence::{BleuScore, CorpusBleu, ExactMatch};

/// What every metric offers besides its own `update`: the result so far, a headline number for
/// logs, a reset and a stable name.
pub trait Metric {
    /// The result of [`Metric::compute`].
    type Output;

    /// The result over everything added since construction or the last [`Metric::reset`].
    fn compute(&self) -> Self::Output;

    /// The metric's headline number for logs (documented per metric), or `None` before anything
    /// counted has been added.
    fn value(&self) -> Option<f64>;

    /// Forgets everything added, keeping the configuration (number of classes, padding id,
    /// n-gram order).
    fn reset(&mut self);

    /// A short snake_case name for logs and file headers, e.g. `"accuracy"`.
    fn name(&self) -> &'static str;
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

fn check_same_len(what: &str, a_name: &str, a: usize, b_name: &str, b: usize) -> Result<()> {
    if a != b {
        return Err(invalid(format!(
            "{what}: `{a_name}` has {a} items but `{b_name}` has {b}; they must be equal"
        )));
    }
    Ok(())
}

/// Class ids from `logits` of shape `(..., C)` (argmax over the last dimension) and the `u32`
/// `targets` of the leading shape, both flattened in row-major order.
fn ids_from_logits(what: &str, logits: &Tensor, targets: &Tensor) -> Result<(Vec<u32>, Vec<u32>)> {
    let dims = logits.dims();
    if dims.len() < 2 {
        return Err(invalid(format!(
            "{what}: `logits` must have shape (N, C) or (B, T, C), got {:?}",
            logits.shape()
        )));
    }
    let lead = &dims[..dims.len() - 1];
    if targets.dims() != lead {
        return Err(invalid(format!(
            "{what}: `targets` must have the leading shape of `logits` {:?}, i.e. {lead:?}, got {:?}",
            logits.shape(),
            targets.shape()
        )));
    }
    if targets.dtype() != DType::U32 {
        return Err(invalid(format!(
            "{what}: `targets` must be u32 class ids, got dtype {:?}",
            targets.dtype()
        )));
    }
    let predictions = logits.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
    let targets = targets.flatten_all()?.to_vec1::<u32>()?;
    Ok((predictions, targets))
}

/// Divides, defining `0 / 0` (and anything over 0) as 0, like scikit-learn's `zero_division=0`.
fn ratio_or_zero(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

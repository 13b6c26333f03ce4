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
//!
//! **Losses** live in [`rnn_core::loss`] (the models use them too) and are re-exported here:
//! [`masked_cross_entropy`] (and [`masked_cross_entropy_sum`] for perplexity), [`mse`] and
//! [`binary_cross_entropy_with_logits`].

use std::collections::HashMap;
use std::hash::Hash;

use candle_core::{DType, Tensor, D};

use crate::{Error, Result};
pub use rnn_core::loss::{
    binary_cross_entropy_with_logits, masked_cross_entropy, masked_cross_entropy_sum, mse, NllSum,
};

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

// ---------------------------------------------------------------------------------------------
// MeanLoss
// ---------------------------------------------------------------------------------------------

/// Running mean of a per-batch scalar (usually the loss), weighted by how many items (tokens,
/// sequences) each batch held, so the result is the mean over items, not over batches.
///
/// A non-finite value is not an error: it makes the mean non-finite, so a diverged run shows up
/// in the logs instead of stopping inside the metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeanLoss {
    sum: f64,
    count: u64,
}

impl MeanLoss {
    /// An empty running mean.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch whose mean over `count` items is `batch_mean`. A batch with `count == 0` is
    /// ignored (it has nothing to weigh).
    pub fn update(&mut self, batch_mean: f64, count: usize) {
        if count == 0 {
            return;
        }
        self.sum += batch_mean * count as f64;
        self.count += count as u64;
    }

    /// [`MeanLoss::update`] with the batch mean read from a one-element tensor of any float
    /// dtype (such as the scalar a loss function returns). This copies the value to the host.
    pub fn update_tensor(&mut self, batch_mean: &Tensor, count: usize) -> Result<()> {
        if batch_mean.elem_count() != 1 {
            return Err(invalid(format!(
                "MeanLoss::update_tensor: `batch_mean` must hold exactly one value, got shape {:?}",
                batch_mean.shape()
            )));
        }
        let value = batch_mean
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        self.update(value[0], count);
        Ok(())
    }

    /// Items added so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl Metric for MeanLoss {
    /// The mean over all items, or `None` if none has been added.
    type Output = Option<f64>;

    fn compute(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The mean.
    fn value(&self) -> Option<f64> {
        self.compute()
    }

    fn reset(&mut self) {
        self.sum = 0.0;
        self.count = 0;
    }

    fn name(&self) -> &'static str {
        "mean_loss"
    }
}

// ---------------------------------------------------------------------------------------------
// Accuracy
// ---------------------------------------------------------------------------------------------

/// Fraction of predicted class ids equal to the target ids. For token-level accuracy on padded
/// batches, build it with [`Accuracy::with_ignore_index`] (positions whose *target* is the
/// padding id are skipped) or pass a mask to [`Accuracy::update_masked`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accuracy {
    correct: u64,
    total: u64,
    ignore_index: Option<u32>,
}

impl Accuracy {
    /// Accuracy over every position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accuracy that skips positions whose target equals `pad` (the padding id), whatever was
    /// predicted there.
    pub fn with_ignore_index(pad: u32) -> Self {
        Self {
            ignore_index: Some(pad),
            ..Self::default()
        }
    }

    /// The padding id skipped, if any.
    pub fn ignore_index(&self) -> Option<u32> {
        self.ignore_index
    }

    /// Adds a batch of `predictions` and `targets` (class ids, same length).
    pub fn update(&mut self, predictions: &[u32], targets: &[u32]) -> Result<()> {
        check_same_len(
            "Accuracy::update",
            "predictions",
            predictions.len(),
            "targets",
            targets.len(),
        )?;
        self.add(predictions, targets, None);
        Ok(())
    }

    /// Adds a batch counting only positions where `mask` is `true` (and, if set, the target is
    /// not the padding id). All three slices have the same length.
    pub fn update_masked(
        &mut self,
        predictions: &[u32],
        targets: &[u32],
        mask: &[bool],
    ) -> Result<()> {
        let what = "Accuracy::update_masked";
        check_same_len(
            what,
            "predictions",
            predictions.len(),
            "targets",
            targets.len(),
        )?;
        check_same_len(what, "mask", mask.len(), "targets", targets.len())?;
        self.add(predictions, targets, Some(mask));
        Ok(())
    }

    /// Adds a batch from `logits` of shape `(N, C)` or `(B, T, C)` (the prediction is the argmax
    /// over the last dimension, computed on the device) and `u32` `targets` of shape `(N,)` or
    /// `(B, T)`. Copies the ids to the host.
    pub fn update_logits(&mut self, logits: &Tensor, targets: &Tensor) -> Result<()> {
        let (predictions, targets) = ids_from_logits("Accuracy::update_logits", logits, targets)?;
        self.add(&predictions, &targets, None);
        Ok(())
    }

    fn add(&mut self, predictions: &[u32], targets: &[u32], mask: Option<&[bool]>) {
        for (i, (&p, &t)) in predictions.iter().zip(targets).enumerate() {
            if mask.is_some_and(|m| !m[i]) || self.ignore_index == Some(t) {
                continue;
            }
            self.total += 1;
            self.correct += u64::from(p == t);
        }
    }

    /// Counted positions predicted correctly.
    pub fn correct(&self) -> u64 {
        self.correct
    }

    /// Counted positions (padding and masked-out positions excluded).
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Metric for Accuracy {
    /// `correct / total` in `[0, 1]`, or `None` if no position has been counted.
    type Output = Option<f64>;

    fn compute(&self) -> Option<f64> {
        (self.total > 0).then(|| self.correct as f64 / self.total as f64)
    }

    /// The accuracy.
    fn value(&self) -> Option<f64> {
        self.compute()
    }

    fn reset(&mut self) {
        self.correct = 0;
        self.total = 0;
    }

    fn name(&self) -> &'static str {
        "accuracy"
    }
}

// ---------------------------------------------------------------------------------------------
// ConfusionMatrix / ClassificationReport
// ---------------------------------------------------------------------------------------------

/// Confusion matrix over `K` classes (ids `0..K`), from which [`Metric::compute`] derives a
/// [`ClassificationReport`]. Entry `(t, p)` counts positions with target `t` predicted as `p`
/// (rows are true classes, columns predictions, as in scikit-learn).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    /// Row-major `K x K` counts.
    counts: Vec<u64>,
    ignore_index: Option<u32>,
}

impl ConfusionMatrix {
    /// An empty matrix for `num_classes` classes; `num_classes` must be at least 1.
    pub fn new(num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(invalid(
                "ConfusionMatrix::new: `num_classes` must be at least 1, got 0",
            ));
        }
        let cells = num_classes.checked_mul(num_classes).ok_or_else(|| {
            invalid(format!(
                "ConfusionMatrix::new: `num_classes` {num_classes} is too large for a K x K matrix"
            ))
        })?;
        Ok(Self {
            num_classes,
            counts: vec![0; cells],
            ignore_index: None,
        })
    }

    /// Skips positions whose target equals `pad` (the padding id). `pad` may lie outside
    /// `0..K`, so a padding id that is not a class is fine.
    pub fn with_ignore_index(mut self, pad: u32) -> Self {
        self.ignore_index = Some(pad);
        self
    }

    /// Number of classes `K`.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The counts as a row-major `K x K` slice: index `target * K + predicted`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// How many positions with target `target` were predicted as `predicted` (0 for ids outside
    /// `0..K`).
    pub fn count(&self, target: usize, predicted: usize) -> u64 {
        if target < self.num_classes && predicted < self.num_classes {
            self.counts[target * self.num_classes + predicted]
        } else {
            0
        }
    }

    /// Adds a batch of `predictions` and `targets` (same length). Every counted id must be below
    /// `K`; otherwise this is an error naming the argument and position, and nothing is added.
    pub fn update(&mut self, predictions: &[u32], targets: &[u32]) -> Result<()> {
        self.add("ConfusionMatrix::update", predictions, targets)
    }

    /// Adds a batch from `logits` of shape `(N, K)` or `(B, T, K)` (argmax over the last
    /// dimension on the device) and `u32` `targets` of shape `(N,)` or `(B, T)`.
    pub fn update_logits(&mut self, logits: &Tensor, targets: &Tensor) -> Result<()> {
        let what = "ConfusionMatrix::update_logits";
        let classes = logits.dims().last().copied().unwrap_or(0);
        if classes != self.num_classes {
            return Err(invalid(format!(
                "{what}: `logits` must have {} classes in the last dimension, got shape {:?}",
                self.num_classes,
                logits.shape()
            )));
        }
        let (predictions, targets) = ids_from_logits(what, logits, targets)?;
        self.add(what, &predictions, &targets)
    }

    fn add(&mut self, what: &str, predictions: &[u32], targets: &[u32]) -> Result<()> {
        check_same_len(
            what,
            "predictions",
            predictions.len(),
            "targets",
            targets.len(),
        )?;
        let k = self.num_classes;
        // Validate everything first so a bad id leaves the matrix untouched.
        for (i, (&p, &t)) in predictions.iter().zip(targets).enumerate() {
            if self.ignore_index == Some(t) {
                continue;
            }
            for (name, id) in [("targets", t), ("predictions", p)] {
                if id as usize >= k {
                    return Err(invalid(format!(
                        "{what}: `{name}[{i}]` is {id}, expected a class id below {k}"
                    )));
                }
            }
        }
        for (&p, &t) in predictions.iter().zip(targets) {
            if self.ignore_index != Some(t) {
                self.counts[t as usize * k + p as usize] += 1;
            }
        }
        Ok(())
    }
}

/// Precision, recall and F1 of one class, in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMetrics {
    /// `true_positives / predicted`; 0 when the class was never predicted.
    pub precision: f64,
    /// `true_positives / support`; 0 when the class never occurs in the targets.
    pub recall: f64,
    /// Harmonic mean `2PR / (P + R)`; 0 when `P + R = 0`.
    pub f1: f64,
    /// Positions whose target is this class.
    pub support: u64,
    /// Positions predicted as this class.
    pub predicted: u64,
    /// Positions whose target is this class and were predicted as it.
    pub true_positives: u64,
}

/// Per-class and macro-averaged precision, recall and F1, plus accuracy.
///
/// Zero divisions are defined as 0, like scikit-learn's `zero_division=0`: a class never
/// predicted has precision 0, a class never in the targets has recall 0. Macro averages are
/// unweighted means over the classes that occur in the targets *or* the predictions, which is
/// what scikit-learn's `precision_recall_fscore_support(average="macro", zero_division=0)`
/// returns without `labels=`; classes absent from both are left out (with `labels=range(K)`
/// scikit-learn would average their zeros in).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassificationReport {
    /// One entry per class id `0..K`.
    pub per_class: Vec<ClassMetrics>,
    /// Mean precision over the present classes (0 if none).
    pub macro_precision: f64,
    /// Mean recall over the present classes (0 if none).
    pub macro_recall: f64,
    /// Mean of the per-class F1 over the present classes (0 if none); not the F1 of the macro
    /// precision and recall.
    pub macro_f1: f64,
    /// Correct positions over all counted positions (0 if none).
    pub accuracy: f64,
    /// Counted positions.
    pub total: u64,
    /// How many classes the macro averages are over.
    pub present_classes: usize,
}

impl Metric for ConfusionMatrix {
    /// The report; all zeros before anything is counted.
    type Output = ClassificationReport;

    fn compute(&self) -> ClassificationReport {
        let k = self.num_classes;
        let mut per_class = Vec::with_capacity(k);
        let (mut sum_p, mut sum_r, mut sum_f1, mut present) = (0.0, 0.0, 0.0, 0usize);
        let mut correct = 0;
        for c in 0..k {
            let tp = self.counts[c * k + c];
            let support: u64 = self.counts[c * k..(c + 1) * k].iter().sum();
            let predicted: u64 = (0..k).map(|t| self.counts[t * k + c]).sum();
            let precision = ratio_or_zero(tp, predicted);
            let recall = ratio_or_zero(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            if support > 0 || predicted > 0 {
                present += 1;
                sum_p += precision;
                sum_r += recall;
                sum_f1 += f1;
            }
            correct += tp;
            per_class.push(ClassMetrics {
                precision,
                recall,
                f1,
                support,
                predicted,
                true_positives: tp,
            });
        }
        let total: u64 = self.counts.iter().sum();
        let mean = |s: f64| if present > 0 { s / present as f64 } else { 0.0 };
        ClassificationReport {
            per_class,
            macro_precision: mean(sum_p),
            macro_recall: mean(sum_r),
            macro_f1: mean(sum_f1),
            accuracy: ratio_or_zero(correct, total),
            total,
            present_classes: present,
        }
    }

    /// The macro F1, or `None` before anything is counted.
    fn value(&self) -> Option<f64> {
        (self.counts.iter().any(|&c| c > 0)).then(|| self.compute().macro_f1)
    }

    fn reset(&mut self) {
        self.counts.fill(0);
    }

    fn name(&self) -> &'static str {
        "confusion_matrix"
    }
}

// ---------------------------------------------------------------------------------------------
// Perplexity
// ---------------------------------------------------------------------------------------------

/// Perplexity and bits per token from a summed negative log-likelihood in nats.
///
/// Accumulate the *sum* of per-token NLL and the token count (e.g. from
/// [`masked_cross_entropy_sum`]), not batch means, so that batches with different numbers of
/// real tokens are weighed correctly.
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

    /// [`Perplexity::update`] from the output of [`masked_cross_entropy_sum`]; copies two scalars
    /// to the host.
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

// ---------------------------------------------------------------------------------------------
// ExactMatch
// ---------------------------------------------------------------------------------------------

/// Fraction of generated sequences identical to their reference (same length, same tokens).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactMatch {
    matched: u64,
    total: u64,
}

impl ExactMatch {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `hypotheses[i]` compared with `references[i]`; both slices have the same length.
    /// Tokens may be ids (`Vec<u32>`) or anything comparable (`Vec<&str>`, `String`s' bytes).
    pub fn update<T, H, R>(&mut self, hypotheses: &[H], references: &[R]) -> Result<()>
    where
        T: PartialEq,
        H: AsRef<[T]>,
        R: AsRef<[T]>,
    {
        check_same_len(
            "ExactMatch::update",
            "hypotheses",
            hypotheses.len(),
            "references",
            references.len(),
        )?;
        for (h, r) in hypotheses.iter().zip(references) {
            self.matched += u64::from(h.as_ref() == r.as_ref());
        }
        self.total += hypotheses.len() as u64;
        Ok(())
    }
}

impl Metric for ExactMatch {
    /// Matched over compared sequences, or `None` if none has been compared.
    type Output = Option<f64>;

    fn compute(&self) -> Option<f64> {
        (self.total > 0).then(|| self.matched as f64 / self.total as f64)
    }

    /// The exact-match rate.
    fn value(&self) -> Option<f64> {
        self.compute()
    }

    fn reset(&mut self) {
        self.matched = 0;
        self.total = 0;
    }

    fn name(&self) -> &'static str {
        "exact_match"
    }
}

// ---------------------------------------------------------------------------------------------
// CorpusBleu
// ---------------------------------------------------------------------------------------------

/// Corpus-level BLEU (Papineni et al., 2002) with one reference per hypothesis.
///
/// For each order `n = 1..=N` (default `N = 4`) the clipped n-gram matches and the hypothesis
/// n-gram counts are summed over the whole corpus; precision `p_n` is their ratio. With the total
/// hypothesis length `c` and reference length `r`, the brevity penalty is `BP = 1` if `c > r`,
/// else `exp(1 - r / c)` (0 if `c = 0`), and `BLEU = BP * exp(sum_n ln(p_n) / N)` (uniform
/// weights). There is no smoothing: if any `p_n` is 0 the score is 0, as in sacrebleu with
/// `smooth_method="none"` (NLTK's unsmoothed `corpus_bleu` returns a number around 1e-77 there).
/// Scores are in `[0, 1]` (sacrebleu reports 100 times that).
///
/// Tokens are compared as given: ids, or words split by [`CorpusBleu::update_text`] on white
/// space (no lower-casing and no punctuation splitting, so not sacrebleu's `13a` tokenizer;
/// comparable with NLTK on `str.split()` tokens). One difference from NLTK remains: NLTK counts
/// at least one n-gram per sentence in the denominator even when the hypothesis is shorter than
/// `n`, whereas here (as in the paper and sacrebleu) the denominator is the true n-gram count;
/// the two agree when every hypothesis has at least `N` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusBleu {
    max_order: usize,
    /// Clipped matches per order (index `n - 1`).
    matches: Vec<u64>,
    /// Hypothesis n-grams per order (index `n - 1`).
    totals: Vec<u64>,
    hypothesis_length: u64,
    reference_length: u64,
    sentences: u64,
}

/// The result of [`CorpusBleu`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BleuScore {
    /// BLEU in `[0, 1]`.
    pub bleu: f64,
    /// Modified (clipped) n-gram precisions `p_1 ..= p_N`, each in `[0, 1]` (0 when the corpus
    /// has no hypothesis n-gram of that order).
    pub precisions: Vec<f64>,
    /// Brevity penalty in `[0, 1]`.
    pub brevity_penalty: f64,
    /// Total hypothesis length `c` in tokens.
    pub hypothesis_length: u64,
    /// Total reference length `r` in tokens.
    pub reference_length: u64,
}

impl Default for CorpusBleu {
    fn default() -> Self {
        Self::new()
    }
}

impl CorpusBleu {
    /// BLEU-4: n-grams up to 4 with uniform weights 1/4.
    pub fn new() -> Self {
        Self::empty(4)
    }

    /// BLEU up to `max_order`-grams with uniform weights `1 / max_order`; `max_order` must be at
    /// least 1.
    pub fn with_max_order(max_order: usize) -> Result<Self> {
        if max_order == 0 {
            return Err(invalid(
                "CorpusBleu::with_max_order: `max_order` must be at least 1, got 0",
            ));
        }
        Ok(Self::empty(max_order))
    }

    fn empty(max_order: usize) -> Self {
        Self {
            max_order,
            matches: vec![0; max_order],
            totals: vec![0; max_order],
            hypothesis_length: 0,
            reference_length: 0,
            sentences: 0,
        }
    }

    /// The largest n-gram order `N`.
    pub fn max_order(&self) -> usize {
        self.max_order
    }

    /// Adds sentence pairs: `hypotheses[i]` is scored against its single reference
    /// `references[i]`; both slices have the same length. Tokens are ids (`Vec<u32>`) or
    /// anything hashable (`Vec<&str>`).
    pub fn update<T, H, R>(&mut self, hypotheses: &[H], references: &[R]) -> Result<()>
    where
        T: Eq + Hash,
        H: AsRef<[T]>,
        R: AsRef<[T]>,
    {
        check_same_len(
            "CorpusBleu::update",
            "hypotheses",
            hypotheses.len(),
            "references",
            references.len(),
        )?;
        for (h, r) in hypotheses.iter().zip(references) {
            self.add_sentence(h.as_ref(), r.as_ref());
        }
        Ok(())
    }

    /// [`CorpusBleu::update`] on text, split into words on white space.
    pub fn update_text<S: AsRef<str>>(&mut self, hypotheses: &[S], references: &[S]) -> Result<()> {
        check_same_len(
            "CorpusBleu::update_text",
            "hypotheses",
            hypotheses.len(),
            "references",
            references.len(),
        )?;
        for (h, r) in hypotheses.iter().zip(references) {
            let h: Vec<&str> = h.as_ref().split_whitespace().collect();
            let r: Vec<&str> = r.as_ref().split_whitespace().collect();
            self.add_sentence(&h, &r);
        }
        Ok(())
    }

    fn add_sentence<T: Eq + Hash>(&mut self, hypothesis: &[T], reference: &[T]) {
        for n in 1..=self.max_order {
            let reference_counts = ngram_counts(reference, n);
            let hypothesis_counts = ngram_counts(hypothesis, n);
            // Clipping: an n-gram is credited at most as often as it occurs in the reference.
            let clipped: u64 = hypothesis_counts
                .iter()
                .map(|(gram, &count)| count.min(reference_counts.get(gram).copied().unwrap_or(0)))
                .sum();
            self.matches[n - 1] += clipped;
            self.totals[n - 1] += hypothesis.len().saturating_sub(n - 1) as u64;
        }
        self.hypothesis_length += hypothesis.len() as u64;
        self.reference_length += reference.len() as u64;
        self.sentences += 1;
    }
}

/// How often each n-gram (a window of `n >= 1` tokens) occurs in `tokens`.
fn ngram_counts<T: Eq + Hash>(tokens: &[T], n: usize) -> HashMap<&[T], u64> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

impl Metric for CorpusBleu {
    /// The score, or `None` if no sentence pair has been added.
    type Output = Option<BleuScore>;

    fn compute(&self) -> Option<BleuScore> {
        if self.sentences == 0 {
            return None;
        }
        let precisions: Vec<f64> = self
            .matches
            .iter()
            .zip(&self.totals)
            .map(|(&m, &t)| ratio_or_zero(m, t))
            .collect();
        let (c, r) = (self.hypothesis_length, self.reference_length);
        let brevity_penalty = if c == 0 {
            0.0
        } else if c > r {
            1.0
        } else {
            (1.0 - r as f64 / c as f64).exp()
        };
        let bleu = if precisions.contains(&0.0) {
            0.0
        } else {
            let mean_log = precisions.iter().map(|p| p.ln()).sum::<f64>() / self.max_order as f64;
            brevity_penalty * mean_log.exp()
        };
        Some(BleuScore {
            bleu,
            precisions,
            brevity_penalty,
            hypothesis_length: c,
            reference_length: r,
        })
    }

    /// The BLEU score in `[0, 1]`.
    fn value(&self) -> Option<f64> {
        self.compute().map(|s| s.bleu)
    }

    fn reset(&mut self) {
        *self = Self::empty(self.max_order);
    }

    fn name(&self) -> &'static str {
        "bleu"
    }
}

// ---------------------------------------------------------------------------------------------
// Regression
// ---------------------------------------------------------------------------------------------

/// Mean absolute error, root mean squared error and mean absolute percentage error of
/// real-valued predictions, in the units of the targets (MAPE as a fraction).
///
/// MAPE skips positions whose target is exactly 0 (the percentage error is undefined there);
/// it is `None` when every target so far was 0. (scikit-learn instead divides by a tiny epsilon,
/// which gives huge values.) Non-finite values are not errors: they propagate to the results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegressionMetrics {
    abs_sum: f64,
    sq_sum: f64,
    count: u64,
    ape_sum: f64,
    ape_count: u64,
}

/// The result of [`RegressionMetrics`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegressionReport {
    /// Mean of `|prediction - target|`, in target units.
    pub mae: f64,
    /// Square root of the mean of `(prediction - target)^2`, in target units.
    pub rmse: f64,
    /// Mean of `|prediction - target| / |target|` over non-zero targets, as a fraction
    /// (0.05 = 5 %); `None` if every target was 0.
    pub mape: Option<f64>,
    /// Positions counted for MAE and RMSE.
    pub count: u64,
    /// Positions counted for MAPE (non-zero targets).
    pub mape_count: u64,
}

impl RegressionMetrics {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `predictions` and `targets` (same length).
    pub fn update(&mut self, predictions: &[f64], targets: &[f64]) -> Result<()> {
        check_same_len(
            "RegressionMetrics::update",
            "predictions",
            predictions.len(),
            "targets",
            targets.len(),
        )?;
        for (&p, &t) in predictions.iter().zip(targets) {
            let err = (p - t).abs();
            self.abs_sum += err;
            self.sq_sum += err * err;
            self.count += 1;
            if t != 0.0 {
                self.ape_sum += err / t.abs();
                self.ape_count += 1;
            }
        }
        Ok(())
    }

    /// [`RegressionMetrics::update`] from float tensors of the same shape (any float dtype);
    /// copies them to the host as `f64`.
    pub fn update_tensors(&mut self, predictions: &Tensor, targets: &Tensor) -> Result<()> {
        let what = "RegressionMetrics::update_tensors";
        if predictions.shape() != targets.shape() {
            return Err(invalid(format!(
                "{what}: `predictions` has shape {:?} but `targets` has shape {:?}; they must be equal",
                predictions.shape(),
                targets.shape()
            )));
        }
        for (name, t) in [("predictions", predictions), ("targets", targets)] {
            if !t.dtype().is_float() {
                return Err(invalid(format!(
                    "{what}: `{name}` must have a float dtype, got {:?}",
                    t.dtype()
                )));
            }
        }
        let p = predictions
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let t = targets
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        self.update(&p, &t)
    }
}

impl Metric for RegressionMetrics {
    /// The report, or `None` if nothing has been counted.
    type Output = Option<RegressionReport>;

    fn compute(&self) -> Option<RegressionReport> {
        (self.count > 0).then(|| {
            let n = self.count as f64;
            RegressionReport {
                mae: self.abs_sum / n,
                rmse: (self.sq_sum / n).sqrt(),
                mape: (self.ape_count > 0).then(|| self.ape_sum / self.ape_count as f64),
                count: self.count,
                mape_count: self.ape_count,
            }
        })
    }

    /// The RMSE.
    fn value(&self) -> Option<f64> {
        self.compute().map(|r| r.rmse)
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn name(&self) -> &'static str {
        "regression"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn assert_close(a: f64, b: f64, tol: f64) {
        assert!(close(a, b, tol), "{a} vs {b} (tolerance {tol})");
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn mean_loss_is_weighted_by_count() {
        let mut m = MeanLoss::new();
        assert_eq!(m.compute(), None);
        // Batch of 1 item with mean 2.0 and batch of 3 with mean 1.0: (2*1 + 1*3) / 4 = 1.25,
        // not the mean of batch means (1.5).
        m.update(2.0, 1);
        m.update(1.0, 3);
        m.update(100.0, 0); // nothing to weigh: ignored
        assert_close(m.compute().unwrap(), 1.25, EPS);
        assert_eq!(m.count(), 4);
        // So far the sum is 5 over 4 items; one more item of 0.25 from a scalar tensor:
        // (5 + 0.25) / 5 = 1.05.
        m.update_tensor(&Tensor::new(0.25f32, &Device::Cpu).unwrap(), 1)
            .unwrap();
        assert_close(m.value().unwrap(), 5.25 / 5.0, 1e-7);
        let err = m
            .update_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_mean") && err.contains("[2]"), "{err}");
        m.reset();
        assert_eq!(m.compute(), None);
        assert_eq!(m.name(), "mean_loss");
    }

    #[test]
    fn accuracy_ignores_padding_targets() {
        let pad = 0;
        let mut acc = Accuracy::with_ignore_index(pad);
        // Positions 3 and 4 are padding (target 0): skipped whatever is predicted there.
        // Counted: (1,1) ok, (2,2) ok, (3,2) wrong -> 2 / 3.
        acc.update(&[1, 2, 3, 0, 5], &[1, 2, 2, 0, 0]).unwrap();
        assert_eq!((acc.correct(), acc.total()), (2, 3));
        assert_close(acc.compute().unwrap(), 2.0 / 3.0, EPS);

        // Without an ignore index the same batch counts 5 positions: 3 correct -> 3 / 5.
        let mut plain = Accuracy::new();
        plain.update(&[1, 2, 3, 0, 5], &[1, 2, 2, 0, 0]).unwrap();
        assert_close(plain.compute().unwrap(), 0.6, EPS);

        // Mask variant: only positions 0 and 2 counted: (1,1) ok, (3,2) wrong -> 1 / 2.
        let mut masked = Accuracy::new();
        masked
            .update_masked(&[1, 2, 3], &[1, 2, 2], &[true, false, true])
            .unwrap();
        assert_close(masked.compute().unwrap(), 0.5, EPS);

        let err = acc.update(&[1, 2], &[1]).unwrap_err().to_string();
        assert!(
            err.contains("predictions") && err.contains('2') && err.contains('1'),
            "{err}"
        );
        // A failed update changes nothing.
        assert_eq!(acc.total(), 3);

        acc.reset();
        assert_eq!(acc.compute(), None);
        assert_eq!(acc.ignore_index(), Some(pad));
    }

    #[test]
    fn accuracy_from_logits_with_padding() {
        let dev = Device::Cpu;
        // (B=1, T=3, C=3); argmax per position: 1, 0, 2. Targets 1, 2, pad(0).
        // Counted: position 0 correct, position 1 wrong; position 2 is padding -> 1 / 2.
        let logits = Tensor::new(
            &[[[0f32, 5.0, 1.0], [3.0, 1.0, 2.0], [0.0, 0.0, 9.0]]],
            &dev,
        )
        .unwrap();
        let targets = Tensor::new(&[[1u32, 2, 0]], &dev).unwrap();
        let mut acc = Accuracy::with_ignore_index(0);
        acc.update_logits(&logits, &targets).unwrap();
        assert_close(acc.compute().unwrap(), 0.5, EPS);

        let bad = Tensor::new(&[1u32, 2, 0], &dev).unwrap();
        let err = acc.update_logits(&logits, &bad).unwrap_err().to_string();
        assert!(err.contains("[1, 3, 3]") && err.contains("[3]"), "{err}");
    }

    #[test]
    fn confusion_matrix_three_classes() {
        // Checked against scikit-learn 1.9.1:
        //   t = [0,0,0,0,1,1,2,2,2]; p = [0,0,1,2,1,0,2,2,1]
        //   precision_recall_fscore_support(t, p, average="macro", zero_division=0)
        //   -> (0.5555..., 0.5555..., 0.546031746031746, None)
        let targets = [0, 0, 0, 0, 1, 1, 2, 2, 2];
        let predictions = [0, 0, 1, 2, 1, 0, 2, 2, 1];
        let mut cm = ConfusionMatrix::new(3).unwrap();
        cm.update(&predictions, &targets).unwrap();
        // rows = target, columns = prediction:
        //   t0: p0 2, p1 1, p2 1   (support 4)
        //   t1: p0 1, p1 1, p2 0   (support 2)
        //   t2: p0 0, p1 1, p2 2   (support 3)
        // column sums (predicted): 3, 3, 3
        assert_eq!(cm.counts(), &[2, 1, 1, 1, 1, 0, 0, 1, 2]);
        assert_eq!(cm.count(0, 2), 1);
        let r = cm.compute();
        // class 0: P = 2/3, R = 2/4, F1 = 2 (2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
        // class 1: P = 1/3, R = 1/2, F1 = 2 (1/6) / (5/6) = 2/5
        // class 2: P = 2/3, R = 2/3, F1 = 2/3
        let expected = [
            (2.0 / 3.0, 0.5, 4.0 / 7.0, 4),
            (1.0 / 3.0, 0.5, 0.4, 2),
            (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 3),
        ];
        for (c, &(p, rec, f1, support)) in expected.iter().enumerate() {
            let m = &r.per_class[c];
            assert_close(m.precision, p, EPS);
            assert_close(m.recall, rec, EPS);
            assert_close(m.f1, f1, EPS);
            assert_eq!(m.support, support);
            assert_eq!(m.predicted, 3);
        }
        // macro P = (2/3 + 1/3 + 2/3) / 3 = 5/9; macro R = (1/2 + 1/2 + 2/3) / 3 = 5/9
        // macro F1 = (4/7 + 2/5 + 2/3) / 3 = (60 + 42 + 70) / 105 / 3 = 172/315
        assert_close(r.macro_precision, 5.0 / 9.0, EPS);
        assert_close(r.macro_recall, 5.0 / 9.0, EPS);
        assert_close(r.macro_f1, 172.0 / 315.0, EPS);
        assert_close(r.macro_f1, 0.546031746031746, 1e-15);
        // accuracy = diagonal / total = (2 + 1 + 2) / 9
        assert_close(r.accuracy, 5.0 / 9.0, EPS);
        assert_eq!((r.total, r.present_classes), (9, 3));
        assert_close(cm.value().unwrap(), 172.0 / 315.0, EPS);

        cm.reset();
        assert!(cm.counts().iter().all(|&c| c == 0));
        assert_eq!(cm.value(), None);
        assert_eq!(cm.compute().macro_f1, 0.0);
    }

    #[test]
    fn confusion_matrix_zero_division_and_absent_classes() {
        // K = 5; t = [0,1,1,2], p = [0,1,3,1]. scikit-learn 1.9.1,
        // precision_recall_fscore_support(t, p, average="macro", zero_division=0)
        // -> (0.375, 0.375, 0.375, None)   (with labels=range(5) it would be 0.3).
        let mut cm = ConfusionMatrix::new(5).unwrap();
        cm.update(&[0, 1, 3, 1], &[0, 1, 1, 2]).unwrap();
        let r = cm.compute();
        // class 0: tp 1, predicted 1, support 1 -> P = R = F1 = 1
        // class 1: tp 1, predicted 2, support 2 -> P = R = F1 = 1/2
        // class 2: never predicted -> P = 0 (0/0 defined 0); R = 0/1 = 0; F1 = 0
        // class 3: never a target -> P = 0/1 = 0; R = 0 (0/0 defined 0); F1 = 0
        // class 4: absent from both -> left out of the macro averages
        assert_eq!(r.per_class[2].predicted, 0);
        assert_eq!(r.per_class[2].precision, 0.0);
        assert_eq!(r.per_class[3].support, 0);
        assert_eq!(r.per_class[3].recall, 0.0);
        assert_eq!(r.present_classes, 4);
        // macro = (1 + 1/2 + 0 + 0) / 4 = 3/8 for P, R and F1
        assert_close(r.macro_precision, 0.375, EPS);
        assert_close(r.macro_recall, 0.375, EPS);
        assert_close(r.macro_f1, 0.375, EPS);
        assert_close(r.accuracy, 0.5, EPS);

        // Out-of-range ids are errors naming the argument and position, and add nothing.
        let err = cm.update(&[0, 7], &[0, 1]).unwrap_err().to_string();
        assert!(err.contains("predictions[1]") && err.contains('7'), "{err}");
        assert_eq!(cm.compute().total, 4);
        // A padding id outside 0..K is fine when ignored.
        let mut padded = ConfusionMatrix::new(2).unwrap().with_ignore_index(99);
        padded.update(&[1, 0, 1], &[1, 99, 0]).unwrap();
        assert_eq!(padded.compute().total, 2);
        assert!(ConfusionMatrix::new(0).is_err());
    }

    #[test]
    fn perplexity_and_bits_per_token() {
        let mut ppl = Perplexity::new();
        assert_eq!(ppl.compute(), None);
        // 3 tokens each with p = 1/2: NLL = 3 ln 2; 1 token with p = 1/8: NLL = ln 8 = 3 ln 2.
        // Total 6 ln 2 over 4 tokens = 1.5 ln 2 nats/token
        // -> perplexity = exp(1.5 ln 2) = 2^1.5 = 2.8284..., bits/token = 1.5.
        let ln2 = std::f64::consts::LN_2;
        ppl.update(3.0 * ln2, 3).unwrap();
        ppl.update(8f64.ln(), 1).unwrap();
        let r = ppl.compute().unwrap();
        assert_close(r.nll_per_token, 1.5 * ln2, EPS);
        assert_close(r.perplexity, 2f64.powf(1.5), EPS);
        assert_close(r.bits_per_token, 1.5, EPS);
        assert_eq!(r.tokens, 4);

        let err = ppl.update(-1.0, 2).unwrap_err().to_string();
        assert!(err.contains("nll_sum") && err.contains("-1"), "{err}");
        assert!(ppl.update(1.0, 0).is_err());
        assert_eq!(ppl.tokens(), 4);
        ppl.reset();
        assert_eq!(ppl.value(), None);
    }

    #[test]
    fn perplexity_from_uniform_logits_via_loss() {
        // Uniform logits over C = 4 classes: every token has p = 1/4, NLL = ln 4,
        // so perplexity = 4 and bits/token = 2. The masked position is not counted.
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let targets = Tensor::new(&[[0u32, 1, 2], [3, 0, 0]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 1.0], [1.0, 1.0, 0.0]], &dev).unwrap();
        let nll = masked_cross_entropy_sum(&logits, &targets, Some(&mask)).unwrap();
        assert_eq!(scalar(&nll.count), 5.0);
        let mut ppl = Perplexity::new();
        ppl.update_nll_sum(&nll).unwrap();
        let r = ppl.compute().unwrap();
        assert_eq!(r.tokens, 5);
        assert_close(r.perplexity, 4.0, 1e-5);
        assert_close(r.bits_per_token, 2.0, 1e-6);
    }

    #[test]
    fn exact_match_counts_identical_sequences() {
        let mut em = ExactMatch::new();
        // [1,2,3] == [1,2,3]; [4,5] != [4,5,0] (length differs); [6] != [7] -> 1 / 3.
        let hyps = vec![vec![1u32, 2, 3], vec![4, 5], vec![6]];
        let refs = vec![vec![1u32, 2, 3], vec![4, 5, 0], vec![7]];
        em.update(&hyps, &refs).unwrap();
        assert_close(em.compute().unwrap(), 1.0 / 3.0, EPS);
        // Words work too: 1 more match -> 2 / 4.
        em.update(&[vec!["a", "b"]], &[vec!["a", "b"]]).unwrap();
        assert_close(em.value().unwrap(), 0.5, EPS);
        let err = em.update(&hyps, &refs[..2]).unwrap_err().to_string();
        assert!(
            err.contains("hypotheses") && err.contains("references"),
            "{err}"
        );
        em.reset();
        assert_eq!(em.compute(), None);
    }

    const HYPS: [&str; 4] = [
        "the cat sat on the mat",
        "a dog is in the garden",
        "he reads a book every night",
        "we love machine learning",
    ];
    const REFS: [&str; 4] = [
        "the cat is on the mat",
        "there is a dog in the garden",
        "he reads the book every night",
        "we love machine learning very much",
    ];

    #[test]
    fn corpus_bleu_matches_hand_computation_and_nltk() {
        // Hand computation (clipped matches / hypothesis n-grams per sentence):
        //              1-grams  2-grams  3-grams  4-grams   c   r
        //   sentence 1   5/6      3/5      1/4      0/3     6   6
        //   sentence 2   6/6      3/5      1/4      0/3     6   7
        //   sentence 3   5/6      3/5      1/4      0/3     6   6
        //   sentence 4   4/4      3/3      2/2      1/1     4   6
        //   corpus      20/22    12/18     5/14     1/10   22  25
        // BP = exp(1 - 25/22) = exp(-3/22)
        // BLEU = exp(-3/22) * (20/22 * 12/18 * 5/14 * 1/10)^(1/4) = exp(-3/22) * (5/231)^(1/4)
        //      = 0.33467057610252227
        let hand = (-3.0f64 / 22.0).exp() * (5.0f64 / 231.0).powf(0.25);
        // Reference value from NLTK 3.10.4 (Python 3, `pip install nltk`):
        //   from nltk.translate.bleu_score import corpus_bleu
        //   hyps = ["the cat sat on the mat", "a dog is in the garden",
        //           "he reads a book every night", "we love machine learning"]
        //   refs = ["the cat is on the mat", "there is a dog in the garden",
        //           "he reads the book every night", "we love machine learning very much"]
        //   corpus_bleu([[r.split()] for r in refs], [h.split() for h in hyps])
        //   -> 0.3346705761025222
        let nltk = 0.3346705761025222;

        let mut bleu = CorpusBleu::new();
        bleu.update_text(&HYPS, &REFS).unwrap();
        let s = bleu.compute().unwrap();
        assert_close(s.bleu, hand, 1e-12);
        assert_close(s.bleu, nltk, 1e-12);
        let expected_p = [20.0 / 22.0, 12.0 / 18.0, 5.0 / 14.0, 1.0 / 10.0];
        for (p, e) in s.precisions.iter().zip(expected_p) {
            assert_close(*p, e, EPS);
        }
        assert_close(s.brevity_penalty, (-3.0f64 / 22.0).exp(), EPS);
        assert_eq!((s.hypothesis_length, s.reference_length), (22, 25));

        // The same corpus as token ids, added in two batches, gives the same score.
        let mut vocab: HashMap<&str, u32> = HashMap::new();
        let mut ids = |s: &'static str| -> Vec<u32> {
            s.split_whitespace()
                .map(|w| {
                    let next = vocab.len() as u32;
                    *vocab.entry(w).or_insert(next)
                })
                .collect()
        };
        let hyp_ids: Vec<Vec<u32>> = HYPS.iter().map(|s| ids(s)).collect();
        let ref_ids: Vec<Vec<u32>> = REFS.iter().map(|s| ids(s)).collect();
        let mut by_id = CorpusBleu::new();
        by_id.update(&hyp_ids[..1], &ref_ids[..1]).unwrap();
        by_id.update(&hyp_ids[1..], &ref_ids[1..]).unwrap();
        assert_close(by_id.value().unwrap(), nltk, 1e-12);

        bleu.reset();
        assert_eq!(bleu.compute(), None);
        assert_eq!(bleu.max_order(), 4);
    }

    #[test]
    fn corpus_bleu_clipping_zero_precision_and_brevity() {
        // Papineni's example: "the" x7 against "the cat is on the mat". "the" occurs twice in the
        // reference, so the clipped unigram precision is 2/7; c = 7 > r = 6 so BP = 1.
        let mut b1 = CorpusBleu::with_max_order(1).unwrap();
        b1.update_text(&["the the the the the the the"], &["the cat is on the mat"])
            .unwrap();
        assert_close(b1.value().unwrap(), 2.0 / 7.0, EPS);

        // BLEU-4 of the same pair: no bigram matches ("the the" is not in the reference), so
        // p_2 = 0 and, without smoothing, BLEU = 0.
        let mut b4 = CorpusBleu::new();
        b4.update_text(&["the the the the the the the"], &["the cat is on the mat"])
            .unwrap();
        let s = b4.compute().unwrap();
        assert_close(s.precisions[0], 2.0 / 7.0, EPS);
        assert_eq!(s.precisions[1], 0.0);
        assert_eq!(s.bleu, 0.0);

        // Short hypothesis, perfect prefix, unigrams only: p_1 = 1, BP = exp(1 - 6/3) = e^-1.
        let mut short = CorpusBleu::with_max_order(1).unwrap();
        short
            .update(&[vec![1u32, 2, 3]], &[vec![1u32, 2, 3, 4, 5, 6]])
            .unwrap();
        assert_close(short.value().unwrap(), (-1.0f64).exp(), EPS);

        // An empty hypothesis: BP = 0 and BLEU = 0, not NaN.
        let mut empty = CorpusBleu::new();
        empty
            .update(&[Vec::<u32>::new()], &[vec![1u32, 2]])
            .unwrap();
        let s = empty.compute().unwrap();
        assert_eq!((s.bleu, s.brevity_penalty), (0.0, 0.0));

        assert!(CorpusBleu::with_max_order(0).is_err());
        let err = b4.update_text(&["a", "b"], &["a"]).unwrap_err().to_string();
        assert!(err.contains("hypotheses") && err.contains('2'), "{err}");
    }

    #[test]
    fn regression_mae_rmse_mape() {
        let mut reg = RegressionMetrics::new();
        // errors p - t: 2-1 = 1, 0-0 = 0, 5-4 = 1, 1-4 = -3
        // MAE = (1 + 0 + 1 + 3) / 4 = 1.25
        // RMSE = sqrt((1 + 0 + 1 + 9) / 4) = sqrt(2.75)
        // MAPE skips the zero target: (1/1 + 1/4 + 3/4) / 3 = 2/3
        reg.update(&[2.0, 0.0, 5.0, 1.0], &[1.0, 0.0, 4.0, 4.0])
            .unwrap();
        let r = reg.compute().unwrap();
        assert_close(r.mae, 1.25, EPS);
        assert_close(r.rmse, 2.75f64.sqrt(), EPS);
        assert_close(r.mape.unwrap(), 2.0 / 3.0, EPS);
        assert_eq!((r.count, r.mape_count), (4, 3));

        // Tensor variant adds |3 - (-2)| = 5 on target -2: MAE = (5 + 5) / 5 = 2,
        // MAPE = (2 + 5/2) / 4 = 1.125.
        let dev = Device::Cpu;
        reg.update_tensors(
            &Tensor::new(&[3f32], &dev).unwrap(),
            &Tensor::new(&[-2f32], &dev).unwrap(),
        )
        .unwrap();
        let r = reg.compute().unwrap();
        assert_close(r.mae, 2.0, EPS);
        assert_close(r.mape.unwrap(), 1.125, EPS);
        assert_close(reg.value().unwrap(), ((11.0 + 25.0) / 5.0f64).sqrt(), EPS);

        let err = reg
            .update_tensors(
                &Tensor::new(&[3f32, 1.0], &dev).unwrap(),
                &Tensor::new(&[-2f32], &dev).unwrap(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2]") && err.contains("[1]"), "{err}");

        // Only zero targets: MAPE undefined.
        let mut zeros = RegressionMetrics::new();
        zeros.update(&[1.0], &[0.0]).unwrap();
        assert_eq!(zeros.compute().unwrap().mape, None);

        reg.reset();
        assert_eq!(reg.compute(), None);
    }

    #[test]
    fn metric_names_are_distinct() {
        let names = [
            MeanLoss::new().name(),
            Accuracy::new().name(),
            ConfusionMatrix::new(2).unwrap().name(),
            Perplexity::new().name(),
            ExactMatch::new().name(),
            CorpusBleu::new().name(),
            RegressionMetrics::new().name(),
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }
}

//! Classification metrics over class ids: accuracy, and the confusion matrix with its
//! per-class and macro precision, recall and F1.

use candle_core::Tensor;

use super::{check_same_len, ids_from_logits, invalid, ratio_or_zero, Metric};
use crate::Result;

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

//! A running mean of the loss, weighted by the items in each batch.

use candle_core::{DType, Tensor};

use super::{invalid, Metric};
use crate::Result;

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

//! Regression metrics of real-valued predictions: MAE, RMSE, MAPE.

use candle_core::{DType, Tensor};

use super::{check_same_len, invalid, Metric};
use crate::Result;

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

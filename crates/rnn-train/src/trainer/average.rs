//! The weight average ([`WeightAverage`]): updated after every optimiser step once it has
//! started, swapped in for evaluations and the `best/` checkpoint, saved in checkpoints.

use std::collections::HashMap;

use candle_core::Tensor;

use super::{Trainer, WeightAverage};
use crate::{Error, Result};

/// Prefix of the average's tensors in a checkpoint's tensor file (then the parameter's name).
pub(super) const AVERAGE_PREFIX: &str = "trainer.average.";

/// `avg` after one more step's weights `w`: the uniform mean over `count` steps (`w` being the
/// `count`-th), or the exponential moving average with `decay`.
pub(super) fn updated(avg: &Tensor, w: &Tensor, count: u64, decay: Option<f64>) -> Result<Tensor> {
    Ok(match decay {
        // avg + (w - avg) / count, as `AveragedModel`'s default average.
        None => (avg + ((w - avg)? / count as f64)?)?,
        Some(d) => ((avg * d)? + (w * (1.0 - d))?)?,
    })
}

impl Trainer {
    /// After an optimiser step: starts or advances the average when the configuration asks for
    /// one and its start epoch has passed.
    pub(super) fn update_average(&mut self) -> Result<()> {
        let Some(WeightAverage {
            start_epoch,
            ema_decay,
        }) = self.config.average
        else {
            return Ok(());
        };
        if self.state.epoch < start_epoch {
            return Ok(());
        }
        self.state.average_count += 1;
        let count = self.state.average_count;
        self.average = Some(match self.average.take() {
            Some(avg) if count > 1 => avg
                .iter()
                .zip(&self.vars)
                .map(|(a, v)| updated(a, v.as_tensor(), count, ema_decay))
                .collect::<Result<_>>()?,
            _ => self
                .vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?,
        });
        Ok(())
    }

    /// Runs `f` with the average in place of the weights (if there is one yet), then puts the
    /// weights back, whatever `f` returned.
    pub(super) fn with_average<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let Some(avg) = self.average.clone() else {
            return f(self);
        };
        let live: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        for (v, a) in self.vars.iter().zip(&avg) {
            v.set(a)?;
        }
        let out = f(self);
        for (v, w) in self.vars.iter().zip(&live) {
            v.set(w)?;
        }
        out
    }

    /// The current weight average by parameter name, if it has started.
    pub fn weight_average(&self) -> Option<HashMap<String, Tensor>> {
        let avg = self.average.as_ref()?;
        Some(
            self.params
                .iter()
                .zip(avg)
                .map(|((name, _), a)| (name.clone(), a.clone()))
                .collect(),
        )
    }

    /// The average's tensors for a checkpoint's tensor file.
    pub(super) fn average_tensors(&self) -> Vec<(String, Tensor)> {
        self.weight_average()
            .into_iter()
            .flatten()
            .map(|(name, t)| (format!("{AVERAGE_PREFIX}{name}"), t))
            .collect()
    }

    /// Takes the average's tensors out of a checkpoint's tensor map: every parameter's, or none
    /// when `count` is 0.
    pub(super) fn take_average(
        &self,
        extra: &mut HashMap<String, Tensor>,
        count: u64,
    ) -> Result<Option<Vec<Tensor>>> {
        let mut found = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            match extra.remove(&format!("{AVERAGE_PREFIX}{name}")) {
                Some(t) if t.dims() == var.dims() && t.dtype() == var.dtype() => {
                    found.push(t.to_device(var.device())?)
                }
                Some(t) => {
                    return Err(Error::Invalid(format!(
                        "checkpoint: the weight average of `{name}` has shape {:?} ({:?}), the parameter {:?} ({:?})",
                        t.dims(),
                        t.dtype(),
                        var.dims(),
                        var.dtype()
                    )))
                }
                None if count == 0 => {}
                None => {
                    return Err(Error::Invalid(format!(
                        "checkpoint: the weight average of {count} steps has no tensor for `{name}`"
                    )))
                }
            }
        }
        Ok((count > 0).then_some(found))
    }
}

//! The weight average ([`WeightAverage`]): updated after every optimiser step once it has
//! started, swapped in for evaluations and the `best/` checkpoint, saved in checkpoints.

use std::collections::HashMap;

use candle_core::Tensor;

use super::{Trainer, WeightAverage};
use crate::optim::inplace::{par_zip, Elem, InPlace, Update2};
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

/// [`updated`] in the storage of `avg`, one parallel pass, with the composed form's arithmetic
/// (Candle's `t / c` and `t * d` are `affine(1 / c, 0)` and `affine(d, 0)`: the same roundings
/// in the same order, so the two agree bitwise). Returns false, changing nothing, where it does
/// not apply: a device other than the CPU, a dtype other than f32/f64, non-contiguous layouts.
fn update_in_place(avg: &Tensor, w: &Tensor, count: u64, decay: Option<f64>) -> Result<bool> {
    if !avg.device().is_cpu()
        || avg.dtype() != w.dtype()
        || avg.dims() != w.dims()
        || !avg.is_contiguous()
        || !w.is_contiguous()
    {
        return Ok(false);
    }
    let op = match decay {
        None => AverageStep::Uniform {
            inv: 1.0 / count as f64,
        },
        Some(d) => AverageStep::Ema { d, e: 1.0 - d },
    };
    Ok(avg.inplace_op2(w, &InPlace(op)).is_ok())
}

/// One step of the average, in place.
enum AverageStep {
    /// `a + ((w - a) * inv + 0)`.
    Uniform { inv: f64 },
    /// `(a * d + 0) + (w * e + 0)`.
    Ema { d: f64, e: f64 },
}

impl Update2 for AverageStep {
    const NAME: &'static str = "weight-average-step";

    fn run<T: Elem>(&self, a: &mut [T], w: &[T]) {
        let zero = T::of(0.0);
        match *self {
            Self::Uniform { inv } => {
                let inv = T::of(inv);
                par_zip(a, w, |a, w| *a = *a + ((w - *a) * inv + zero));
            }
            Self::Ema { d, e } => {
                let (d, e) = (T::of(d), T::of(e));
                par_zip(a, w, |a, w| *a = (*a * d + zero) + (w * e + zero));
            }
        }
    }
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
                .into_iter()
                .zip(&self.vars)
                .map(|(a, v)| {
                    // The average's tensors are this trainer's own (deep copies), so updating
                    // their storage in place changes nothing anybody else holds.
                    if update_in_place(&a, v.as_tensor(), count, ema_decay)? {
                        Ok(a)
                    } else {
                        updated(&a, v.as_tensor(), count, ema_decay)
                    }
                })
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

    /// A copy of the current weight average by parameter name, if it has started.
    pub fn weight_average(&self) -> Result<Option<HashMap<String, Tensor>>> {
        let Some(avg) = self.average.as_ref() else {
            return Ok(None);
        };
        Ok(Some(
            self.params
                .iter()
                .zip(avg)
                .map(|((name, _), a)| Ok((name.clone(), a.copy()?)))
                .collect::<Result<_>>()?,
        ))
    }

    /// The average's tensors for a checkpoint's tensor file (written before the next update).
    pub(super) fn average_tensors(&self) -> Vec<(String, Tensor)> {
        let Some(avg) = self.average.as_ref() else {
            return Vec::new();
        };
        self.params
            .iter()
            .zip(avg)
            .map(|((name, _), a)| (format!("{AVERAGE_PREFIX}{name}"), a.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The in-place update equals the composed one bit for bit (f32 and f64, uniform and EMA,
    /// over several parallel chunks), and leaves a tensor on which it does not apply unchanged.
    #[test]
    fn in_place_update_equals_the_composed_one_bitwise() {
        let n = 3 * crate::optim::inplace::CHUNK + 17;
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let a0 = Tensor::randn(0f64, 1.0, n, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let w = Tensor::randn(0.5f64, 2.0, n, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for (count, decay) in [(2, None), (7, None), (3, Some(0.9)), (5, Some(0.999))] {
                let composed = updated(&a0, &w, count, decay).unwrap();
                let a = a0.copy().unwrap();
                assert!(update_in_place(&a, &w, count, decay).unwrap());
                let bits = |t: &Tensor| -> Vec<u64> {
                    match dtype {
                        DType::F32 => t
                            .to_vec1::<f32>()
                            .unwrap()
                            .iter()
                            .map(|x| x.to_bits() as u64)
                            .collect(),
                        _ => t
                            .to_vec1::<f64>()
                            .unwrap()
                            .iter()
                            .map(|x| x.to_bits())
                            .collect(),
                    }
                };
                assert_eq!(bits(&a), bits(&composed), "{dtype:?} {count} {decay:?}");
                assert_ne!(bits(&a), bits(&a0));
            }
        }
        // A strided view: not applied, nothing changed.
        let m = Tensor::arange(0f32, 12.0, &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let t = m.t().unwrap();
        let w = Tensor::ones((4, 3), DType::F32, &dev).unwrap();
        assert!(!update_in_place(&t, &w, 2, None).unwrap());
        assert_eq!(
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..12).map(|x| x as f32).collect::<Vec<_>>()
        );
    }
}

//! The recurrent-dropout and zoneout masks inside the fused CPU recurrence
//! (`crate::regularize` has the math): [`OwnedMasks`] holds them in the op, in the problem's row
//! order, and [`KernelMasks`] is the view the kernels read.

use super::math::Float;
use super::problem::Problem;
use crate::regularize::StateMasks;
use candle_core::{DType, Result, Tensor};
use std::any::Any;

/// Views of one layer-direction's in-loop masks.
#[derive(Clone, Copy)]
pub(crate) struct KernelMasks<'a, T> {
    /// Recurrent dropout, `(batch, state)`: multiplies `h` where it enters `W_hh`.
    pub rec: Option<&'a [T]>,
    /// Zoneout weight of the previous `h`, `(rows, state)` in the problem's row order, or one
    /// value for every element (evaluation's expectation).
    pub zh: Option<&'a [T]>,
    /// Zoneout weight of the previous `c`, `(rows, hidden)` (LSTM).
    pub zc: Option<&'a [T]>,
}

impl<T: Float> KernelMasks<'_, T> {
    /// No masks: the plain recurrence.
    pub fn none() -> Self {
        Self {
            rec: None,
            zh: None,
            zc: None,
        }
    }

    /// `h` of batch rows `b0 .. b0 + n` (`width` columns each) as it enters `W_hh`: masked into
    /// `buf` with recurrent dropout, else `h` itself.
    #[inline]
    pub fn recurrent_input<'b>(
        &self,
        h: &'b [T],
        b0: usize,
        width: usize,
        buf: &'b mut [T],
    ) -> &'b [T] {
        match self.rec {
            Some(r) => {
                let r = &r[b0 * width..][..h.len()];
                for ((o, a), m) in buf.iter_mut().zip(h).zip(r) {
                    *o = *a * *m;
                }
                buf
            }
            None => h,
        }
    }

    /// `dst[j] = new[j] + m[j] * (old[j] - new[j])` with `m` row `row` of `z` (`width` columns),
    /// or `dst = new` without zoneout.
    #[inline]
    pub fn zone(z: Option<&[T]>, row: usize, new: &[T], old: &[T], dst: &mut [T]) {
        match z {
            Some([m]) => {
                for j in 0..new.len() {
                    dst[j] = new[j] + *m * (old[j] - new[j]);
                }
            }
            Some(z) => {
                let m = &z[row * new.len()..][..new.len()];
                for j in 0..new.len() {
                    dst[j] = new[j] + m[j] * (old[j] - new[j]);
                }
            }
            None => dst.copy_from_slice(new),
        }
    }

    /// [`KernelMasks::zone`] in place: `new[j] += m[j] * (old[j] - new[j])`.
    #[inline]
    pub fn zone_inplace(z: Option<&[T]>, row: usize, old: &[T], new: &mut [T]) {
        match z {
            Some([m]) => {
                for j in 0..new.len() {
                    new[j] += *m * (old[j] - new[j]);
                }
            }
            Some(z) => {
                let m = &z[row * new.len()..][..new.len()];
                for j in 0..new.len() {
                    new[j] += m[j] * (old[j] - new[j]);
                }
            }
            None => {}
        }
    }

    /// Backward of [`KernelMasks::zone`] at row `row`: splits the gradient `d` of the zoned state
    /// into the part through the new state (left in `d`) and the part kept for the previous
    /// state (written to `keep`). Without zoneout `keep` is zeroed.
    #[inline]
    pub fn unzone(z: Option<&[T]>, row: usize, d: &mut [T], keep: &mut [T]) {
        match z {
            Some([m]) => {
                for j in 0..d.len() {
                    keep[j] = *m * d[j];
                    d[j] -= keep[j];
                }
            }
            Some(z) => {
                let m = &z[row * d.len()..][..d.len()];
                for j in 0..d.len() {
                    keep[j] = m[j] * d[j];
                    d[j] -= keep[j];
                }
            }
            None => keep.fill(T::zero()),
        }
    }
}

/// The masks as the op keeps them (`Vec<T>` of the run's dtype).
pub(crate) struct OwnedMasks<T> {
    rec: Option<Vec<T>>,
    zh: Option<Vec<T>>,
    zc: Option<Vec<T>>,
}

impl<T: Float> OwnedMasks<T> {
    pub fn view(&self) -> KernelMasks<'_, T> {
        KernelMasks {
            rec: self.rec.as_deref(),
            zh: self.zh.as_deref(),
            zc: self.zc.as_deref(),
        }
    }
}

/// Copies `reg` into the op's form for `p` (zoneout masks to the problem's row order), typed by
/// `dtype`; `None` when `reg` is empty.
pub(crate) fn own(
    reg: &StateMasks,
    p: &Problem,
    dtype: DType,
) -> Result<Option<Box<dyn Any + Send + Sync>>> {
    if reg.is_empty() {
        return Ok(None);
    }
    fn typed<T: Float>(reg: &StateMasks, batch_first: bool) -> Result<OwnedMasks<T>> {
        let flat = |m: &Tensor| m.flatten_all()?.to_vec1::<T>();
        let steps = |m: &Tensor| {
            // One value broadcast to every element (zero strides): kept as that one value.
            if m.elem_count() > 1 && m.stride().iter().all(|&s| s == 0) {
                return m
                    .narrow(0, 0, 1)?
                    .narrow(1, 0, 1)?
                    .narrow(2, 0, 1)?
                    .flatten_all()?
                    .to_vec1::<T>();
            }
            if batch_first {
                flat(&m.transpose(0, 1)?.contiguous()?)
            } else {
                flat(m)
            }
        };
        Ok(OwnedMasks {
            rec: reg.recurrent.map(flat).transpose()?,
            zh: reg.zoneout_h.map(steps).transpose()?,
            zc: reg.zoneout_c.map(steps).transpose()?,
        })
    }
    Ok(Some(match dtype {
        DType::F32 => Box::new(typed::<f32>(reg, p.batch_first)?),
        DType::F64 => Box::new(typed::<f64>(reg, p.batch_first)?),
        dt => candle_core::bail!("fused recurrence: f32 or f64 only, got {dt:?}"),
    }))
}

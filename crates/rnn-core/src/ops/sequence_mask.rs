//! Fused CPU variational-dropout product: `x * mask` with one `(batch, features)` mask shared by
//! every step of a `(seq_len, batch, features)` or `(batch, seq_len, features)` sequence, forward
//! and backward (the input's gradient is the same product of the output's gradient).
//!
//! Candle's `broadcast_mul` walks the broadcast mask element by element on one thread; this op
//! multiplies contiguous rows in parallel. [`mask_sequence`] falls back to `broadcast_mul` (the
//! composed twin; tests hold the two equal) wherever the op does not apply: other devices and
//! dtypes, or a mask that is itself differentiated.

use super::cpu::cpu_slice;
use super::math::Float;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task: enough work per task to amortise the scheduling.
const TASK_ELEMS: usize = 32 * 1024;

/// The op: a contiguous 3-D `x` times `mask (batch, features)`, broadcast over the time axis.
#[derive(Clone, Copy)]
struct SequenceMask {
    batch_first: bool,
    batch: usize,
    features: usize,
}

impl SequenceMask {
    fn forward<T: Float>(&self, x: &[T], mask: &[T]) -> Vec<T> {
        let mut out = vec![T::zero(); x.len()];
        let (block, f) = (self.batch * self.features, self.features);
        if block == 0 || x.is_empty() {
            return out;
        }
        if self.batch_first {
            // Batch row b is one `(seq_len, features)` block, every row of it times mask row b.
            let per_b = x.len() / self.batch;
            out.par_chunks_mut(per_b)
                .zip(x.par_chunks(per_b))
                .zip(mask.par_chunks(f))
                .for_each(|((o, x), m)| {
                    for (o, x) in o.chunks_mut(f).zip(x.chunks(f)) {
                        mul_into(o, x, m);
                    }
                });
        } else {
            // Every step is one `(batch, features)` block: times the whole mask.
            let per_task = block * (TASK_ELEMS / block).max(1);
            out.par_chunks_mut(per_task)
                .zip(x.par_chunks(per_task))
                .for_each(|(o, x)| {
                    for (o, x) in o.chunks_mut(block).zip(x.chunks(block)) {
                        mul_into(o, x, mask);
                    }
                });
        }
        out
    }
}

#[inline]
fn mul_into<T: Float>(out: &mut [T], x: &[T], m: &[T]) {
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(m) {
        *o = a * b;
    }
}

impl CustomOp2 for SequenceMask {
    fn name(&self) -> &'static str {
        "sequence-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.forward::<f32>(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.forward::<f64>(cpu_slice(s1, l1)?, cpu_slice(s2, l2)?))
            }
            _ => bail!("sequence mask: f32 or f64 only, both arguments of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?.apply_op2_no_bwd(mask, self)?;
        Ok((Some(grad), None))
    }
}

/// `x * mask` with `mask (batch, features)` shared by every step of `x`, which is time-major
/// `(seq_len, batch, features)` or, with `batch_first`, `(batch, seq_len, features)`: the fused
/// op on f32/f64 CPU tensors with a constant mask, else `broadcast_mul`. Shapes are checked.
pub(crate) fn mask_sequence(x: &Tensor, mask: &Tensor, batch_first: bool) -> Result<Tensor> {
    let (d0, d1, features) = x.dims3()?;
    let batch = if batch_first { d0 } else { d1 };
    if mask.dims() != [batch, features] {
        bail!(
            "sequence mask: the mask is {:?}, the sequence {:?} needs ({batch}, {features})",
            mask.dims(),
            x.dims()
        );
    }
    let fused = x.device().is_cpu()
        && mask.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && mask.dtype() == x.dtype()
        && !mask.track_op();
    if !fused {
        return mask_sequence_composed(x, mask, batch_first);
    }
    let op = SequenceMask {
        batch_first,
        batch,
        features,
    };
    x.contiguous()?.apply_op2(&mask.contiguous()?, op)
}

/// The composed twin of [`mask_sequence`]: Candle's `broadcast_mul`.
pub(crate) fn mask_sequence_composed(
    x: &Tensor,
    mask: &Tensor,
    batch_first: bool,
) -> Result<Tensor> {
    if batch_first {
        x.broadcast_mul(&mask.unsqueeze(1)?)
    } else {
        x.broadcast_mul(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seeded(shape: &[usize], seed: u64, dtype: DType) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i as u64 * 2_654_435_761 + seed * 97) % 1000) as f64 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
    }

    /// Forward and the input's gradient equal `broadcast_mul`'s, in both layouts and dtypes, on
    /// shapes with one task and with several (time-major blocks smaller and larger than a task).
    #[test]
    fn fused_sequence_mask_equals_broadcast_mul() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for &(t, b, f) in &[
                (1, 1, 1),
                (7, 3, 5),
                (64, 32, 256),
                (3, 40, 1100),
                (0, 2, 3),
            ] {
                for batch_first in [false, true] {
                    let shape = if batch_first { [b, t, f] } else { [t, b, f] };
                    let x = Var::from_tensor(&seeded(&shape, 1, dtype)?)?;
                    let mask = seeded(&[b, f], 2, dtype)?;
                    let weights = seeded(&shape, 3, dtype)?;
                    let fused = mask_sequence(x.as_tensor(), &mask, batch_first)?;
                    let composed = mask_sequence_composed(x.as_tensor(), &mask, batch_first)?;
                    let diff = (&fused - &composed)?.abs()?.flatten_all()?;
                    let max = if diff.elem_count() == 0 {
                        0.0
                    } else {
                        diff.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?
                    };
                    assert_eq!(max, 0.0, "forward {dtype:?} {shape:?}");
                    if t == 0 {
                        continue;
                    }
                    let g1 = (fused * &weights)?.sum_all()?.backward()?;
                    let g2 = (composed * &weights)?.sum_all()?.backward()?;
                    let (Some(a), Some(b)) = (g1.get(x.as_tensor()), g2.get(x.as_tensor())) else {
                        panic!("no gradient for x");
                    };
                    let d = (a - b)?.abs()?.flatten_all()?.max(0)?;
                    assert_eq!(d.to_dtype(DType::F64)?.to_scalar::<f64>()?, 0.0);
                }
            }
        }
        Ok(())
    }

    /// A differentiated mask takes the composed path, so its gradient still flows.
    #[test]
    fn a_tracked_mask_gets_its_gradient() -> Result<()> {
        let x = seeded(&[4, 2, 3], 1, DType::F64)?;
        let mask = Var::from_tensor(&seeded(&[2, 3], 2, DType::F64)?)?;
        let y = mask_sequence(&x, mask.as_tensor(), false)?;
        let g = y.sum_all()?.backward()?;
        let got = g.get(mask.as_tensor()).expect("mask gradient");
        let want = x.sum(0)?;
        let d = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        assert!(d < 1e-12);
        Ok(())
    }

    /// A mask of the wrong shape is an error that names both shapes.
    #[test]
    fn a_mask_of_the_wrong_shape_is_refused() -> Result<()> {
        let x = seeded(&[4, 2, 3], 1, DType::F32)?;
        let mask = seeded(&[3, 2], 2, DType::F32)?;
        let e = mask_sequence(&x, &mask, false).unwrap_err().to_string();
        assert!(e.contains("[3, 2]") && e.contains("(2, 3)"), "{e}");
        Ok(())
    }
}

//! Norm clipping over f32/f64 CPU gradients in two parallel passes: the sum of squares of every
//! gradient (read in place, accumulated in f64 in fixed chunks, so the result does not depend on
//! the thread count), then, where the norm exceeds the limit, every gradient scaled in its own
//! storage. The composed path (Candle's `sqr`, `sum_all`, `stack` and `broadcast_mul` per
//! gradient) allocates a squared copy and a scaled copy of each gradient and runs single-threaded
//! under `CANDLE_NUM_THREADS=1`; its result differs from this one in the rounding of the sum only.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor, Var};
use rayon::prelude::*;
use std::sync::Mutex;

use crate::optim::inplace::{Elem, CHUNK};
use crate::Result;

/// Reads a gradient's sum of squares (in f64) and where its elements lie, writing nothing.
#[derive(Default)]
struct SumOfSquares {
    /// `(sum, address of the first element, element count, element size)`.
    out: Mutex<Option<(f64, usize, usize, usize)>>,
}

fn sum_sq<T: Copy + Into<f64> + Sync>(xs: &[T]) -> f64 {
    let parts: Vec<f64> = xs
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&x| x.into() * x.into()).sum::<f64>())
        .collect();
    parts.iter().sum()
}

impl InplaceOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "grad-sum-of-squares"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("contiguous gradients only".into()))?;
        let found = match s {
            CpuStorage::F32(v) => (sum_sq(&v[a..b]), v[a..].as_ptr() as usize, b - a, 4),
            CpuStorage::F64(v) => (sum_sq(&v[a..b]), v[a..].as_ptr() as usize, b - a, 8),
            _ => candle_core::bail!("f32 or f64 gradients only"),
        };
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
        Ok(())
    }
}

/// Multiplies a gradient by `coef` in its own storage (Candle's `broadcast_mul` by a scalar,
/// element by element: the same roundings).
struct Scale(f64);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "grad-scale"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        fn run<T: Elem>(xs: &mut [T], c: T) {
            xs.par_chunks_mut(CHUNK)
                .for_each(|xs| xs.iter_mut().for_each(|x| *x = *x * c));
        }
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("contiguous gradients only".into()))?;
        match s {
            CpuStorage::F32(v) => run(&mut v[a..b], f32::of(self.0)),
            CpuStorage::F64(v) => run(&mut v[a..b], self.0),
            _ => candle_core::bail!("f32 or f64 gradients only"),
        }
        Ok(())
    }
}

/// `coef = min(1, max_norm / (total + 1e-6))` in `T`, as the composed path computes it
/// (`affine`, `recip`, `affine`, `minimum`).
fn coef<T: Elem + PartialOrd + Into<f64>>(total: T, max_norm: f64) -> f64 {
    let one = T::of(1.0);
    let c = (one / (total * one + T::of(1e-6))) * T::of(max_norm) + T::of(0.0);
    (if c < one { c } else { one }).into()
}

/// [`super::clip_grad_norm_tensor`] over CPU gradients that are all f32 or all f64 and
/// contiguous, each in a storage of its own: the total norm as a 0-dim tensor of their dtype.
/// `Ok(None)`, having written nothing, where that does not hold (or no variable has a gradient).
pub(super) fn clip_grad_norm(
    grads: &GradStore,
    vars: &[Var],
    max_norm: f64,
) -> Result<Option<Tensor>> {
    let present: Vec<&Tensor> = vars.iter().filter_map(|v| grads.get(v)).collect();
    let Some(first) = present.first() else {
        return Ok(None);
    };
    let dtype = first.dtype();
    if !matches!(dtype, DType::F32 | DType::F64)
        || present
            .iter()
            .any(|g| !g.device().is_cpu() || g.dtype() != dtype || !g.is_contiguous())
    {
        return Ok(None);
    }
    let mut sum = 0.0f64;
    let mut spans = Vec::with_capacity(present.len());
    for g in &present {
        let op = SumOfSquares::default();
        if g.inplace_op1(&op).is_err() {
            return Ok(None);
        }
        let found = op.out.into_inner().unwrap_or_else(|e| e.into_inner());
        let Some((s, start, len, size)) = found else {
            return Ok(None);
        };
        sum += s;
        if len > 0 {
            spans.push((start, start + len * size));
        }
    }
    // Scaling in place is only right when no two gradients share elements.
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Ok(None);
    }
    // The norm in the gradients' dtype, as the composed path returns it; an f32 norm that
    // overflows is infinite there too, and then, as there, nothing is scaled.
    let (total, finite, c) = match dtype {
        DType::F64 => {
            let t = sum.sqrt();
            (
                Tensor::new(t, first.device())?,
                t.is_finite(),
                coef(t, max_norm),
            )
        }
        _ => {
            let t = (sum as f32).sqrt();
            (
                Tensor::new(t, first.device())?,
                t.is_finite(),
                coef(t, max_norm),
            )
        }
    };
    if max_norm.is_finite() && finite && c < 1.0 {
        for g in &present {
            g.inplace_op1(&Scale(c))?;
        }
    }
    Ok(Some(total))
}

//! Norm clipping over f32/f64 CPU gradients in two parallel passes: the sum of squares of every
//! gradient (read in place, accumulated in f64 in fixed chunks and lanes, so the result does not
//! depend on the thread count or the instruction set), then, where the norm exceeds the limit,
//! every gradient scaled in its own storage. The composed path (Candle's `sqr`, `sum_all`, `stack` and `broadcast_mul` per
//! gradient) allocates a squared copy and a scaled copy of each gradient and runs single-threaded
//! under `CANDLE_NUM_THREADS=1`; its result differs from this one in the rounding of the sum only.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor, Var};
use rayon::prelude::*;
use std::sync::Mutex;

use crate::optim::inplace::{isa_versions, par_map, Elem, Isa, CHUNK};
use crate::Result;

/// Reads a gradient's sum of squares (in f64) and where its elements lie, writing nothing.
#[derive(Default)]
struct SumOfSquares {
    /// `(sum, address of the first element, element count, element size)`.
    out: Mutex<Option<(f64, usize, usize, usize)>>,
}

/// Lanes of a chunk's sum of squares: element `i` of a chunk adds into lane `i % LANES`, the
/// lanes are summed in order at the end. A fixed order (the same result on any thread count and
/// any instruction set) that vectorises, where one running sum would be a chain of dependent
/// additions.
const LANES: usize = 8;

/// An element whose square is summed in f64.
trait Squared: Copy + Into<f64> {}
impl<T: Copy + Into<f64>> Squared for T {}

#[inline(always)]
fn sum_sq_body<T: Squared>(xs: &[T]) -> f64 {
    let mut lanes = [0f64; LANES];
    let mut blocks = xs.chunks_exact(LANES);
    for block in &mut blocks {
        for (l, &x) in lanes.iter_mut().zip(block) {
            let x: f64 = x.into();
            *l += x * x;
        }
    }
    for (l, &x) in lanes.iter_mut().zip(blocks.remainder()) {
        let x: f64 = x.into();
        *l += x * x;
    }
    lanes.iter().sum()
}

isa_versions! {
    /// The sum of squares of one chunk, in f64, compiled for `isa` (bitwise the same for each).
    fn chunk_sum_sq<T: Squared>(xs: &[T]) -> f64 = sum_sq_body
}

fn sum_sq<T: Copy + Into<f64> + Sync>(xs: &[T]) -> f64 {
    let isa = Isa::host();
    let parts: Vec<f64> = xs.par_chunks(CHUNK).map(|c| chunk_sum_sq(isa, c)).collect();
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
            par_map(xs, |x| *x = *x * c);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_of_the_sum_of_squares_gives_the_same_bits() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let xs: Vec<f32> = (0..10_007)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 - 8e6) * 10f32.powi(i % 9 - 4)
            })
            .collect();
        for n in [0, 1, 7, 8, 9, 100, 10_007] {
            let base = chunk_sum_sq(Isa::Baseline, &xs[..n]);
            // The lanes' order, written out.
            let mut lanes = [0f64; LANES];
            for (i, &x) in xs[..n].iter().enumerate() {
                lanes[i % LANES] += f64::from(x) * f64::from(x);
            }
            assert_eq!(
                base.to_bits(),
                lanes.iter().sum::<f64>().to_bits(),
                "length {n}"
            );
            for isa in [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .filter(|i| i.supported())
            {
                assert_eq!(
                    chunk_sum_sq(isa, &xs[..n]).to_bits(),
                    base.to_bits(),
                    "{isa:?}, length {n}"
                );
            }
        }
    }
}

//! `tanh` on CPU in one vectorised pass forward and one backward.
//!
//! Candle's CPU `tanh` calls the C library's scalar `tanhf` for every element, and its backward
//! is three element-wise ops (`y²`, `- 1`, `· g`), each a fresh tensor and a pass over memory. In
//! the classifier's attention pooling (`v · tanh(W h + b)` over every step) those took about 9% of
//! a training step. Here the forward is this crate's SIMD `tanh` (the one the fused LSTM and GRU
//! use; absolute error about 1e-7 in f32, the standard library's in f64), the backward one pass
//! `g · (1 - y²)`, both split across Rayon's threads on large tensors. The composed twin is
//! Candle's `Tensor::tanh` ([`crate::activation::tanh_with`] with
//! [`crate::Implementation::Composed`]); tests hold the two equal.

use super::cpu::cpu_slice;
use super::math::Float;
use super::scratch;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task; tensors of at most this many run on the calling thread.
const PER_TASK: usize = 1 << 14;

/// `dst[i] = f(src[i])` over chunks of [`PER_TASK`], in parallel when there are several.
fn map_chunks<T: Float>(src: &[T], dst: &mut [T], f: impl Fn(&[T], &mut [T]) + Sync) {
    if src.len() <= PER_TASK {
        f(src, dst);
    } else {
        dst.par_chunks_mut(PER_TASK)
            .zip(src.par_chunks(PER_TASK))
            .for_each(|(d, s)| f(s, d));
    }
}

/// The forward op: `tanh(x)` of a contiguous tensor of f32 or f64.
pub(crate) struct FusedTanh;

impl FusedTanh {
    fn forward<T: Float>(x: &[T]) -> Vec<T> {
        // Every element is written.
        let mut y: Vec<T> = scratch::take(x.len());
        map_chunks(x, &mut y, |s, d| T::tanh_into(s, d));
        y
    }
}

impl CustomOp1 for FusedTanh {
    fn name(&self) -> &'static str {
        "fused-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(Self::forward(cpu_slice::<f32>(s, l)?)),
            CpuStorage::F64(_) => CpuStorage::F64(Self::forward(cpu_slice::<f64>(s, l)?)),
            other => bail!("fused tanh: f32 or f64 only, got {:?}", other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&grad_y.contiguous()?, &TanhGrad)?))
    }
}

/// The backward op: `g · (1 - y²)` from the forward's result `y` and the upstream gradient `g`
/// (contiguous, one shape and dtype). Not differentiable itself (no second derivatives).
pub(crate) struct TanhGrad;

impl TanhGrad {
    fn backward<T: Float>(y: &[T], g: &[T]) -> Result<Vec<T>> {
        if y.len() != g.len() {
            bail!(
                "fused tanh backward: {} results but {} gradients",
                y.len(),
                g.len()
            );
        }
        let mut dx: Vec<T> = scratch::take(y.len());
        let run = |d: &mut [T], y: &[T], g: &[T]| {
            for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
                *d = g * (T::one() - y * y);
            }
        };
        if y.len() <= PER_TASK {
            run(&mut dx, y, g);
        } else {
            dx.par_chunks_mut(PER_TASK)
                .zip(y.par_chunks(PER_TASK).zip(g.par_chunks(PER_TASK)))
                .for_each(|(d, (y, g))| run(d, y, g));
        }
        Ok(dx)
    }
}

impl CustomOp2 for TanhGrad {
    fn name(&self) -> &'static str {
        "fused-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(Self::backward(
                cpu_slice::<f32>(s1, l1)?,
                cpu_slice::<f32>(s2, l2)?,
            )?),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(Self::backward(
                cpu_slice::<f64>(s1, l1)?,
                cpu_slice::<f64>(s2, l2)?,
            )?),
            _ => bail!(
                "fused tanh backward: f32 or f64 of one dtype only, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}

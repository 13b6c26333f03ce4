//! `tanh` and `sigmoid` on CPU in one vectorised pass forward and one backward.
//!
//! Candle's CPU `tanh` calls the C library's scalar `tanhf` for every element, and its backward
//! is three element-wise ops (`y²`, `- 1`, `· g`), each a fresh tensor and a pass over memory;
//! candle-nn's `sigmoid` is a scalar `expf` per element and three ops backward. In the
//! classifier's attention pooling (`v · tanh(W h + b)` over every step) `tanh` took about 9% of
//! a training step. Here the forward is this crate's SIMD `tanh` and `sigmoid` (the fused LSTM's
//! and GRU's; absolute error about 1e-7 in f32, the standard library's arithmetic in f64), the
//! backward one pass (`g · (1 - y²)`, `g · (y · (1 - y))`), both split across Rayon's threads on
//! large tensors. The composed twins are Candle's `Tensor::tanh` and `candle_nn::ops::sigmoid`
//! ([`crate::activation`]'s `*_with` and [`crate::Implementation::Composed`]); tests hold them
//! equal.

use super::cpu::cpu_slice;
use super::math::Float;
use super::scratch;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task; tensors of at most this many run on the calling thread.
const PER_TASK: usize = 1 << 14;

/// Which function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tanh,
    Sigmoid,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Tanh => "tanh",
            Kind::Sigmoid => "sigmoid",
        }
    }

    /// `dst = f(src)` (equal lengths).
    fn apply<T: Float>(self, src: &[T], dst: &mut [T]) {
        match self {
            Kind::Tanh => T::tanh_into(src, dst),
            Kind::Sigmoid => {
                dst.copy_from_slice(src);
                T::sigmoid_inplace(dst);
            }
        }
    }

    /// `dx = g · f'(x)` from `y = f(x)`, with the composed twin's arithmetic: Candle's `tanh`
    /// backward subtracts `g · (y² - 1)`, candle-nn's `sigmoid` multiplies `g · (y · (1 - y))`.
    fn grad<T: Float>(self, y: &[T], g: &[T], dx: &mut [T]) {
        let one = T::one();
        match self {
            Kind::Tanh => {
                for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *d = g * (one - y * y);
                }
            }
            Kind::Sigmoid => {
                for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *d = g * (y * (one - y));
                }
            }
        }
    }
}

/// The forward op: `f(x)` of a contiguous tensor of f32 or f64.
pub(crate) struct Fused(pub Kind);

impl Fused {
    fn forward<T: Float>(&self, x: &[T]) -> Vec<T> {
        // Every element is written.
        let mut y: Vec<T> = scratch::take(x.len());
        if x.len() <= PER_TASK {
            self.0.apply(x, &mut y);
        } else {
            y.par_chunks_mut(PER_TASK)
                .zip(x.par_chunks(PER_TASK))
                .for_each(|(d, s)| self.0.apply(s, d));
        }
        y
    }
}

impl CustomOp1 for Fused {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Tanh => "fused-tanh",
            Kind::Sigmoid => "fused-sigmoid",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(self.forward(cpu_slice::<f32>(s, l)?)),
            CpuStorage::F64(_) => CpuStorage::F64(self.forward(cpu_slice::<f64>(s, l)?)),
            other => bail!(
                "fused {}: f32 or f64 only, got {:?}",
                self.0.name(),
                other.dtype()
            ),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            y.apply_op2_no_bwd(&grad_y.contiguous()?, &Grad(self.0))?,
        ))
    }
}

/// The backward op: `g · f'(x)` from the forward's result `y` and the upstream gradient `g`
/// (contiguous, one shape and dtype). Not differentiable itself (no second derivatives).
pub(crate) struct Grad(pub Kind);

impl Grad {
    fn backward<T: Float>(&self, y: &[T], g: &[T]) -> Result<Vec<T>> {
        if y.len() != g.len() {
            bail!(
                "fused {} backward: {} results but {} gradients",
                self.0.name(),
                y.len(),
                g.len()
            );
        }
        let mut dx: Vec<T> = scratch::take(y.len());
        if y.len() <= PER_TASK {
            self.0.grad(y, g, &mut dx);
        } else {
            dx.par_chunks_mut(PER_TASK)
                .zip(y.par_chunks(PER_TASK).zip(g.par_chunks(PER_TASK)))
                .for_each(|(d, (y, g))| self.0.grad(y, g, d));
        }
        Ok(dx)
    }
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Tanh => "fused-tanh-grad",
            Kind::Sigmoid => "fused-sigmoid-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(
                self.backward(cpu_slice::<f32>(s1, l1)?, cpu_slice::<f32>(s2, l2)?)?,
            ),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(
                self.backward(cpu_slice::<f64>(s1, l1)?, cpu_slice::<f64>(s2, l2)?)?,
            ),
            _ => bail!(
                "fused {} backward: f32 or f64 of one dtype only, got {:?} and {:?}",
                self.0.name(),
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}

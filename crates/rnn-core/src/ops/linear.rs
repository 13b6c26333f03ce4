//! A fully connected layer on CPU: `y = x · Wᵀ + b` in one op with a hand-written backward.
//!
//! Candle's CPU matmul runs the `gemm` crate, whose kernels are AVX2-wide even where the host has
//! AVX-512, and the composed layer adds the bias in a second pass (and sums it back out of a
//! broadcast in the backward). Here the forward is one product (faer, or this crate's blocked
//! kernel) into rows pre-filled with the bias, and the backward the two gradient products
//! (`dx = g · W`, `dW = gᵀ · x`) and one column sum (`db`). The composed twin is candle-nn's
//! `Linear` ([`crate::linear::Linear`] with [`crate::Implementation::Composed`]); tests hold the
//! two equal in value and every gradient.

use super::cpu::{cpu_bwd3, cpu_fwd3, TypedBackward3, TypedForward3};
use super::gemm::{matmul, MatRef};
use super::grad::colsum_into;
use super::math::Float;
use super::scratch;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output rows per parallel task of the bias fill.
const ROWS_PER_TASK: usize = 16;

/// The op. Arguments: `x (N, K)`, `weight (M, K)`, `bias (M,)` (an empty tensor when the layer
/// has none), all contiguous, one dtype. Result: `(N, M)`.
pub(crate) struct FusedLinear {
    /// Rows of `x` (N).
    pub rows: usize,
    /// Input features (K).
    pub inputs: usize,
    /// Output features (M).
    pub outputs: usize,
    /// Whether the third argument is a bias (else it is empty and gets no gradient).
    pub bias: bool,
}

impl FusedLinear {
    /// `(N, K, M)`, after checking the slices' lengths against them.
    fn dims<T>(&self, x: &[T], w: &[T], b: &[T]) -> Result<(usize, usize, usize)> {
        let (n, k, m) = (self.rows, self.inputs, self.outputs);
        let bias = if self.bias { m } else { 0 };
        if x.len() != n * k || w.len() != m * k || b.len() != bias {
            bail!(
                "fused linear: arguments of {}, {} and {} values for N={n}, K={k}, M={m}",
                x.len(),
                w.len(),
                b.len()
            );
        }
        Ok((n, k, m))
    }
}

impl TypedBackward3 for FusedLinear {
    /// `(dx, dW, db)` for the upstream gradient `g (N, M)`; `db` is empty without a bias.
    fn backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
        g: &[T],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let (n, k, m) = self.dims(x, w, b)?;
        if g.len() != n * m {
            bail!(
                "fused linear: the gradient has {} values, not {n} x {m}",
                g.len()
            );
        }
        let gm = MatRef::row_major(g, n, m);
        let mut dx = vec![T::zero(); n * k];
        matmul(&mut dx, 0, k, false, gm, MatRef::row_major(w, m, k), true);
        let mut dw = vec![T::zero(); m * k];
        matmul(
            &mut dw,
            0,
            k,
            false,
            gm.t(),
            MatRef::row_major(x, n, k),
            true,
        );
        let mut db = vec![T::zero(); if self.bias { m } else { 0 }];
        if self.bias {
            colsum_into(g, m, &mut db);
        }
        Ok((dx, dw, db))
    }
}

impl TypedForward3 for FusedLinear {
    fn forward<T: Float>(&self, x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        let (n, k, m) = self.dims(x, w, b)?;
        // Every element is written: the bias (or zero) first, then the product added to it.
        let mut y: Vec<T> = scratch::take(n * m);
        if m > 0 {
            y.par_chunks_mut(m * ROWS_PER_TASK).for_each(|rows| {
                for row in rows.chunks_mut(m) {
                    if self.bias {
                        row.copy_from_slice(b);
                    } else {
                        row.fill(T::zero());
                    }
                }
            });
        }
        matmul(
            &mut y,
            0,
            m,
            true,
            MatRef::row_major(x, n, k),
            MatRef::row_major(w, m, k).t(),
            true,
        );
        Ok(y)
    }
}

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = cpu_fwd3(self, "fused linear", (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((self.rows, self.outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = cpu_bwd3(self, "fused linear", [x, weight, bias], grad_res)?;
        // Without a bias the third argument is an empty placeholder: no gradient.
        Ok((dx, Some(dw), self.bias.then_some(db)))
    }
}

//! Fused output layer on CPU: `nll[n] = logsumexp(z[n]) - z[n, target[n]]` with
//! `z = x · Wᵀ + b`, in one op with a hand-written backward.
//!
//! A language model's output layer dominates its training step (PTB: 400 positions x 10,002
//! words per step). Composed from Candle ops it costs a broadcast matmul, a bias broadcast and a
//! dozen full passes over the `(N, V)` logits forward and backward, each allocating its own
//! tensor. Here the logits are one faer GEMM (bias pre-filled), turned in place into
//! `exp(z - max)` with each row's max and sum kept; the backward turns that buffer in place into
//! `g · (softmax - onehot)` and runs the three gradient products (`dx`, `dW`, `db`) from it.
//! The composed twin is [`crate::output::linear_nll_rows_composed`]; tests hold the two equal.

use super::cpu::{cpu_bwd3, cpu_fwd3, TypedBackward3, TypedForward3};
use super::gemm::{matmul, MatRef};
use super::grad::colsum_into;
use super::math::Float;
use super::scratch;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::any::Any;
use std::sync::Mutex;

/// What the forward keeps for the backward: `exp(z - max)` per row and each row's sum of it.
struct Saved<T> {
    exps: Vec<T>,
    sums: Vec<T>,
}

/// The op. Arguments: `x (N, H)`, `weight (V, H)`, `bias (V,)` (zeros when the layer has none),
/// all contiguous, one dtype. Result: `(N,)` negative log-likelihoods.
pub(crate) struct LinearCrossEntropy {
    pub targets: Vec<u32>,
    saved: Mutex<Option<Box<dyn Any + Send + Sync>>>,
}

/// Rows per parallel task of the pointwise passes.
const ROWS_PER_TASK: usize = 8;

impl LinearCrossEntropy {
    pub fn new(targets: Vec<u32>) -> Self {
        Self {
            targets,
            saved: Mutex::new(None),
        }
    }

    /// Logits into `z` (N x V), then each row in place to `exp(z - max)`; returns the row sums
    /// and the negative log-likelihoods.
    fn logits_to_exps<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
        z: &mut [T],
    ) -> Result<(Vec<T>, Vec<T>)> {
        let n = self.targets.len();
        let v = b.len();
        let h = x.len().checked_div(n).unwrap_or(0);
        if let Some((i, &t)) = self
            .targets
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= v)
        {
            bail!("cross-entropy: target id {t} at position {i} is not a class (there are {v})");
        }
        // The bias is added in the pass below, which reads every row anyway (no separate pass
        // writing the bias into all N rows first).
        matmul(
            z,
            0,
            v,
            false,
            MatRef::row_major(x, n, h),
            MatRef::row_major(w, v, h).t(),
            true,
        );
        let mut sums = vec![T::zero(); n];
        let mut nll = vec![T::zero(); n];
        z.par_chunks_mut(v * ROWS_PER_TASK)
            .zip(sums.par_chunks_mut(ROWS_PER_TASK))
            .zip(nll.par_chunks_mut(ROWS_PER_TASK))
            .zip(self.targets.par_chunks(ROWS_PER_TASK))
            .for_each(|(((rows, sums), nll), targets)| {
                for (((row, sum), nll), &t) in rows.chunks_mut(v).zip(sums).zip(nll).zip(targets) {
                    let (max, nan) = T::add_bias_max(row, b);
                    if nan || !max.is_finite() {
                        // Infinite or NaN logits: report a non-finite loss (as the composed
                        // form does), which the trainer catches; the gradient is NaN too.
                        row.fill(T::nan());
                        *sum = T::nan();
                        *nll = T::nan();
                        continue;
                    }
                    let target = row[t as usize];
                    let s = T::exp_shifted_inplace(row, max);
                    *sum = s;
                    *nll = max + s.ln() - target;
                }
            });
        Ok((sums, nll))
    }

    fn forward_typed<T: Float>(&self, x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        // Every element is written by the product (recycled: the backward returns it).
        let mut z = scratch::take(self.targets.len() * b.len());
        let (sums, nll) = self.logits_to_exps(x, w, b, &mut z)?;
        if let Ok(mut slot) = self.saved.lock() {
            *slot = Some(Box::new(Saved { exps: z, sums }));
        }
        Ok(nll)
    }
}

impl TypedBackward3 for LinearCrossEntropy {
    /// `(dx, dW, db)` for the upstream gradient `g (N,)`.
    fn backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        b: &[T],
        g: &[T],
    ) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
        let (n, v) = (self.targets.len(), b.len());
        let h = x.len().checked_div(n).unwrap_or(0);
        // The forward's buffer, taken (a second backward over the same graph recomputes it).
        let saved = match self.saved.lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => bail!("fused linear cross-entropy: saved buffer lock poisoned"),
        };
        let (mut d, sums) = match saved.and_then(|s| s.downcast::<Saved<T>>().ok()) {
            Some(s) => (s.exps, s.sums),
            None => {
                let mut z = scratch::take(n * v);
                let (sums, _) = self.logits_to_exps(x, w, b, &mut z)?;
                (z, sums)
            }
        };
        // d = g * (softmax - onehot), in place.
        d.par_chunks_mut(v * ROWS_PER_TASK)
            .zip(sums.par_chunks(ROWS_PER_TASK))
            .zip(g.par_chunks(ROWS_PER_TASK))
            .zip(self.targets.par_chunks(ROWS_PER_TASK))
            .for_each(|(((rows, sums), g), targets)| {
                for (((row, &s), &g), &t) in rows.chunks_mut(v).zip(sums).zip(g).zip(targets) {
                    if g == T::zero() {
                        row.fill(T::zero()); // a masked position contributes nothing
                        continue;
                    }
                    T::scale_inplace(row, g / s);
                    row[t as usize] -= g;
                }
            });
        let mut dx = vec![T::zero(); n * h];
        matmul(
            &mut dx,
            0,
            h,
            false,
            MatRef::row_major(&d, n, v),
            MatRef::row_major(w, v, h),
            true,
        );
        let mut dw = vec![T::zero(); v * h];
        matmul(
            &mut dw,
            0,
            h,
            false,
            MatRef::row_major(&d, n, v).t(),
            MatRef::row_major(x, n, h),
            true,
        );
        let mut db = vec![T::zero(); v];
        colsum_into(&d, v, &mut db);
        scratch::give(d);
        Ok((dx, dw, db))
    }
}

impl TypedForward3 for LinearCrossEntropy {
    fn forward<T: Float>(&self, x: &[T], w: &[T], b: &[T]) -> Result<Vec<T>> {
        self.forward_typed(x, w, b)
    }
}

impl CustomOp3 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-linear-cross-entropy"
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
        let out = cpu_fwd3(
            self,
            "fused linear cross-entropy",
            (s1, l1),
            (s2, l2),
            (s3, l3),
        )?;
        Ok((out, Shape::from(self.targets.len())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = cpu_bwd3(
            self,
            "fused linear cross-entropy",
            [x, weight, bias],
            grad_res,
        )?;
        Ok((dx, Some(dw), Some(db)))
    }
}

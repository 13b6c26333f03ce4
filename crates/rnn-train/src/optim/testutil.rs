//! The small fixed problem the optimiser tests share with their PyTorch snippets.
//!
//! PyTorch side (each test's snippet calls `run`):
//!
//! ```python
//! import torch
//! def run(opt_fn, dtype, steps=5):
//!     x = torch.tensor([[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0]], dtype=dtype)
//!     y = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [-1.0, 1.0, 0.5], [0.0, -0.5, 1.5]], dtype=dtype)
//!     w = torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], dtype=dtype, requires_grad=True)
//!     b = torch.tensor([0.05, -0.05, 0.0], dtype=dtype, requires_grad=True)
//!     opt = opt_fn([w, b])
//!     for s in range(steps):
//!         opt.zero_grad(set_to_none=True)
//!         if s == 2:  # b gets no gradient in the third step
//!             loss = (x @ w).pow(2).sum()
//!         else:
//!             loss = (x @ w + b - y).pow(2).sum()
//!         loss.backward()
//!         opt.step()
//!     return [repr(v) for v in w.detach().flatten().tolist()], [repr(v) for v in b.detach().tolist()]
//! ```

use std::ops::Range;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use super::StatefulOptimizer;

/// `w` (2x3) and `b` (3) fitted by least squares to fixed `x` (4x2), `y` (4x3).
pub struct Problem {
    pub w: Var,
    pub b: Var,
    x: Tensor,
    y: Tensor,
}

impl Problem {
    pub fn new(dtype: DType) -> Self {
        let dev = Device::Cpu;
        let t = |v: &[f64], dims: &[usize]| {
            Tensor::from_slice(v, dims, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let x = t(&[0.5, -1.0, 1.5, 0.25, -0.75, 2.0, 1.0, 1.0], &[4, 2]);
        let y = t(
            &[
                1.0, 0.0, -1.0, 0.5, 2.0, 0.0, -1.0, 1.0, 0.5, 0.0, -0.5, 1.5,
            ],
            &[4, 3],
        );
        let w = Var::from_tensor(&t(&[0.1, -0.2, 0.3, 0.4, 0.5, -0.6], &[2, 3])).unwrap();
        let b = Var::from_tensor(&t(&[0.05, -0.05, 0.0], &[3])).unwrap();
        Self { w, b, x, y }
    }

    /// The same problem with the parameters' current values in new `Var`s (as a model restored
    /// from a checkpoint would be).
    pub fn restored(&self) -> Self {
        Self {
            w: Var::from_tensor(&self.w.as_tensor().copy().unwrap()).unwrap(),
            b: Var::from_tensor(&self.b.as_tensor().copy().unwrap()).unwrap(),
            x: self.x.clone(),
            y: self.y.clone(),
        }
    }

    pub fn params(&self) -> Vec<(String, Var)> {
        vec![("w".into(), self.w.clone()), ("b".into(), self.b.clone())]
    }

    /// The gradients of step `s` (0-based); in step 2 the loss does not involve `b`.
    pub fn grads(&self, s: usize) -> GradStore {
        let xw = self.x.matmul(self.w.as_tensor()).unwrap();
        let loss = if s == 2 {
            xw.sqr().unwrap().sum_all().unwrap()
        } else {
            let r = (xw.broadcast_add(self.b.as_tensor()).unwrap() - &self.y).unwrap();
            r.sqr().unwrap().sum_all().unwrap()
        };
        loss.backward().unwrap()
    }

    pub fn run(&self, opt: &mut dyn StatefulOptimizer, steps: Range<usize>) {
        for s in steps {
            let grads = self.grads(s);
            opt.step(&grads).unwrap();
        }
    }

    pub fn values(&self) -> (Vec<f64>, Vec<f64>) {
        (values(&self.w), values(&self.b))
    }
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn bits(t: &Tensor) -> Vec<u64> {
    values(t).into_iter().map(f64::to_bits).collect()
}

#[track_caller]
pub fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol,
            "{what}[{i}]: got {a:e}, expected {e:e} (diff {:e} > {tol:e})",
            (a - e).abs()
        );
    }
}

/// One parameter of several parallel chunks of values (zeros of both signs among them) twice,
/// for holding an in-place update equal to its composed twin: each optimiser steps its own copy
/// with the gradient of `sum(coef * p * p)`, which follows the parameter.
pub struct Twin {
    pub a: Var,
    pub b: Var,
    start: Vec<u64>,
    coef: Tensor,
}

impl Twin {
    pub fn new(dtype: DType) -> Self {
        let n = 3 * super::inplace::CHUNK + 17;
        let value = |i: usize, salt: usize| -> f64 {
            match (i * 7 + salt) % 11 {
                0 => 0.0,
                1 => -0.0,
                k => ((i * 2654435761 + salt) % 1000) as f64 / 997.0 - 0.5 + k as f64 * 1e-3,
            }
        };
        let tensor = |salt: usize| {
            let v: Vec<f64> = (0..n).map(|i| value(i, salt)).collect();
            Tensor::from_vec(v, n, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        let p0 = tensor(1);
        Self {
            a: Var::from_tensor(&p0).unwrap(),
            b: Var::from_tensor(&p0).unwrap(),
            start: bits(&p0),
            coef: tensor(5),
        }
    }

    /// `a` and `b` as the named parameter lists of their optimisers.
    pub fn params(&self) -> [Vec<(String, Var)>; 2] {
        [&self.a, &self.b].map(|v| vec![("p".to_string(), v.clone())])
    }

    /// `steps` steps of `opt_a` on `a` and of `opt_b` on `b`, interleaved.
    pub fn run(
        &self,
        opt_a: &mut dyn StatefulOptimizer,
        opt_b: &mut dyn StatefulOptimizer,
        steps: usize,
    ) {
        let step = |opt: &mut dyn StatefulOptimizer, var: &Var| {
            let loss = (var.as_tensor().sqr().unwrap() * &self.coef)
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        };
        for _ in 0..steps {
            step(opt_a, &self.a);
            step(opt_b, &self.b);
        }
    }

    /// `a` and `b` are equal bitwise, and they moved.
    #[track_caller]
    pub fn assert_equal_and_moved(&self, what: &str) {
        let (va, vb) = (bits(self.a.as_tensor()), bits(self.b.as_tensor()));
        assert_eq!(va.len(), self.start.len());
        let differ = va.iter().zip(&vb).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{what}: {differ} values differ");
        assert_ne!(va, self.start, "{what}: nothing moved");
    }
}

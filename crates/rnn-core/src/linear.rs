//! [`Linear`]: a fully connected layer, PyTorch's `nn.Linear` and candle-nn's `Linear` (same
//! parameters, names and initialisation), whose CPU forward and backward run as one op each.

use crate::layer::Implementation;
use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `y = x · Wᵀ + b` over the last dimension of `x`, as `torch.nn.Linear`.
///
/// The parameters are `weight (out, in)` and `bias (out,)`, as candle-nn's [`candle_nn::Linear`]
/// (built by [`linear`] / [`linear_no_bias`] with the same initialisation, so a model switching
/// to this type keeps its weights and checkpoints). On the CPU in f32/f64, the forward is one
/// matrix product into rows pre-filled with the bias and the backward two products and a column
/// sum, on faer and this crate's AVX-512/AVX2 kernels (candle's own CPU matmul is AVX2-wide
/// everywhere); elsewhere, and with [`Implementation::Composed`], it is candle-nn's `Linear`,
/// the twin the tests hold it equal to.
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::{init::seeded_var_builder, linear::linear};
///
/// let varmap = VarMap::new();
/// let layer = linear(8, 3, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu).pp("head"))?;
/// let xs = Tensor::randn(0f32, 1.0, (4, 10, 8), &Device::Cpu)?;
/// assert_eq!(layer.forward(&xs)?.dims(), &[4, 10, 3]);
/// assert!(varmap.data().lock().unwrap().contains_key("head.weight"));
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    implementation: Implementation,
}

/// A [`Linear`] layer with a bias, initialised as candle-nn's `linear` (PyTorch's default).
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::from(candle_nn::linear(in_dim, out_dim, vb)?))
}

/// A [`Linear`] layer without a bias, initialised as candle-nn's `linear_no_bias`.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::from(candle_nn::linear_no_bias(
        in_dim, out_dim, vb,
    )?))
}

impl From<candle_nn::Linear> for Linear {
    fn from(inner: candle_nn::Linear) -> Self {
        Self {
            inner,
            implementation: Implementation::Auto,
        }
    }
}

impl Linear {
    /// The layer with these parameters: `weight (out, in)`, `bias (out,)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::from(candle_nn::Linear::new(weight, bias))
    }

    /// The same layer running `implementation`: `Auto` (the fused op on the CPU in f32/f64,
    /// candle-nn's ops elsewhere), `Fused` (an error elsewhere) or `Composed` (candle-nn's ops).
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// The implementation this layer runs.
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// The weight, `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    /// The bias, `(out,)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// The same parameters as candle-nn's layer.
    pub fn as_candle(&self) -> &candle_nn::Linear {
        &self.inner
    }

    /// The layer with its parameters detached from the autograd graph.
    pub fn detach(&self) -> Self {
        Self {
            inner: candle_nn::Linear::new(self.weight().detach(), self.bias().map(|b| b.detach())),
            implementation: self.implementation,
        }
    }

    fn fused(&self, xs: &Tensor) -> Result<bool> {
        let supported = crate::ops::supports(xs)
            && xs.rank() >= 2
            && self.weight().dtype() == xs.dtype()
            && self.weight().device().same_device(xs.device())
            && self
                .bias()
                .is_none_or(|b| b.dtype() == xs.dtype() && b.rank() == 1);
        Ok(match self.implementation {
            Implementation::Auto => supported,
            Implementation::Composed => false,
            Implementation::Fused => {
                if !supported {
                    bail!(
                        "Linear: the fused op needs an input of rank 2 or more and parameters of its dtype, f32 or f64, on the CPU; got {:?} {:?} on {:?} with a {:?} weight",
                        xs.dtype(),
                        xs.dims(),
                        xs.device().location(),
                        self.weight().dtype()
                    );
                }
                true
            }
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if !self.fused(xs)? {
            return self.inner.forward(xs);
        }
        let (out_dim, in_dim) = self.weight().dims2()?;
        let dims = xs.dims();
        let k = dims[dims.len() - 1];
        if k != in_dim {
            bail!(
                "Linear: the input's last dimension is {k} but the layer takes {in_dim} features (input {dims:?}, weight ({out_dim}, {in_dim}))"
            );
        }
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        let bias = match self.bias() {
            Some(b) if b.dims() != [out_dim] => bail!(
                "Linear: the bias has shape {:?}, not ({out_dim},)",
                b.dims()
            ),
            Some(b) => b.contiguous()?,
            None => Tensor::zeros(0, xs.dtype(), xs.device())?,
        };
        let op = crate::ops::linear::FusedLinear {
            rows,
            inputs: in_dim,
            outputs: out_dim,
            bias: self.bias().is_some(),
        };
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 2") = out_dim;
        xs.contiguous()?
            .reshape((rows, in_dim))?
            .apply_op3(&self.weight().contiguous()?, &bias, op)?
            .reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn layer(dtype: DType, implementation: Implementation) -> Linear {
        let w = Tensor::zeros((4, 3), dtype, &Device::Cpu).unwrap();
        Linear::new(w, None).with_implementation(implementation)
    }

    /// The fused op runs where it applies, and only there (the integration tests hold its
    /// results equal to the composed ones, which cannot tell the two paths apart).
    #[test]
    fn which_path_each_implementation_takes() {
        let cpu = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::zeros((2, 5, 3), dtype, &cpu).unwrap();
            for (imp, fused) in [
                (Implementation::Auto, true),
                (Implementation::Fused, true),
                (Implementation::Composed, false),
            ] {
                assert_eq!(
                    layer(dtype, imp).fused(&x).unwrap(),
                    fused,
                    "{dtype:?} {imp:?}"
                );
            }
            let row = Tensor::zeros(3, dtype, &cpu).unwrap();
            assert!(!layer(dtype, Implementation::Auto).fused(&row).unwrap());
        }
        let half = Tensor::zeros((2, 3), DType::BF16, &cpu).unwrap();
        assert!(!layer(DType::BF16, Implementation::Auto)
            .fused(&half)
            .unwrap());
        assert!(layer(DType::BF16, Implementation::Fused)
            .fused(&half)
            .is_err());
        let mixed = Tensor::zeros((2, 3), DType::F64, &cpu).unwrap();
        assert!(!layer(DType::F32, Implementation::Auto)
            .fused(&mixed)
            .unwrap());
    }
}

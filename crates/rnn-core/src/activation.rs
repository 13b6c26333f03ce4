//! Activation functions with a fused CPU path: [`tanh`], as `torch.tanh`.
//!
//! On CPU tensors of f32 or f64 [`tanh`] runs one vectorised pass forward and one backward
//! (`g · (1 - y²)`), on Rayon's threads for large tensors; elsewhere (CUDA, Metal, half
//! precision) it is Candle's `Tensor::tanh`, which is also the composed twin the tests compare
//! it with. Candle's own CPU `tanh` calls the C library's scalar `tanhf` per element and takes
//! three element-wise ops backward. Not differentiable twice on the fused path.

use crate::layer::Implementation;
use candle_core::{bail, Result, Tensor};

/// `tanh(xs)` element-wise, with a gradient: the fused CPU op where it applies, Candle's
/// `Tensor::tanh` elsewhere.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
/// let y = rnn_core::activation::tanh(&x)?.to_vec1::<f32>()?;
/// assert!((y[0] + 0.761_594_2).abs() < 1e-6 && y[1] == 0.0 && (y[2] - 0.964_027_6).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn tanh(xs: &Tensor) -> Result<Tensor> {
    tanh_with(xs, Implementation::Auto)
}

/// [`tanh`] with the implementation chosen: [`Implementation::Composed`] is Candle's
/// `Tensor::tanh`; [`Implementation::Fused`] is an error where the fused op does not apply
/// (a tensor not on the CPU, or not f32 or f64).
pub fn tanh_with(xs: &Tensor, implementation: Implementation) -> Result<Tensor> {
    let supported = crate::ops::supports(xs);
    let fused = match implementation {
        Implementation::Auto => supported,
        Implementation::Composed => false,
        Implementation::Fused => {
            if !supported {
                bail!(
                    "tanh: the fused op needs a CPU tensor of f32 or f64; got {:?} {:?} on {:?}",
                    xs.dtype(),
                    xs.dims(),
                    xs.device().location()
                );
            }
            true
        }
    };
    if fused {
        xs.contiguous()?.apply_op1(crate::ops::tanh::FusedTanh)
    } else {
        xs.tanh()
    }
}

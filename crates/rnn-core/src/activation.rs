//! Element-wise activations with a fused CPU path: [`tanh`] and [`sigmoid`], as `torch.tanh`
//! and `torch.sigmoid`.
//!
//! On CPU tensors of f32 or f64 each runs one vectorised pass forward and one backward
//! (`g · (1 - y²)`, `g · y (1 - y)`), on Rayon's threads for large tensors; elsewhere (CUDA,
//! Metal, half precision) and with [`Implementation::Composed`] it is Candle's `Tensor::tanh`
//! or candle-nn's `ops::sigmoid`, the composed twins the tests compare them with. Those call the
//! C library's scalar `tanhf` / `expf` per element on the CPU and take three element-wise ops
//! backward. Not differentiable twice on the fused path.

use crate::layer::Implementation;
use crate::ops::activation::{Fused, Kind};
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
    if fused(xs, implementation, Kind::Tanh)? {
        xs.contiguous()?.apply_op1(Fused(Kind::Tanh))
    } else {
        xs.tanh()
    }
}

/// `1 / (1 + exp(-xs))` element-wise, with a gradient: the fused CPU op where it applies,
/// candle-nn's `ops::sigmoid` elsewhere. In f32 on the fused path the values below about -88
/// give a subnormal (at most 6e-39) rather than 0.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[-2f32, 0.0, 3.0], &Device::Cpu)?;
/// let y = rnn_core::activation::sigmoid(&x)?.to_vec1::<f32>()?;
/// assert!((y[0] - 0.119_202_92).abs() < 1e-6 && y[1] == 0.5 && (y[2] - 0.952_574_1).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn sigmoid(xs: &Tensor) -> Result<Tensor> {
    sigmoid_with(xs, Implementation::Auto)
}

/// [`sigmoid`] with the implementation chosen: [`Implementation::Composed`] is candle-nn's
/// `ops::sigmoid`; [`Implementation::Fused`] is an error where the fused op does not apply.
pub fn sigmoid_with(xs: &Tensor, implementation: Implementation) -> Result<Tensor> {
    if fused(xs, implementation, Kind::Sigmoid)? {
        xs.contiguous()?.apply_op1(Fused(Kind::Sigmoid))
    } else {
        candle_nn::ops::sigmoid(xs)
    }
}

/// Whether `implementation` runs the fused op on `xs` (an error where it is forced and cannot).
fn fused(xs: &Tensor, implementation: Implementation, kind: Kind) -> Result<bool> {
    let supported = crate::ops::supports(xs);
    Ok(match implementation {
        Implementation::Auto => supported,
        Implementation::Composed => false,
        Implementation::Fused => {
            if !supported {
                bail!(
                    "{}: the fused op needs a CPU tensor of f32 or f64; got {:?} {:?} on {:?}",
                    kind.name(),
                    xs.dtype(),
                    xs.dims(),
                    xs.device().location()
                );
            }
            true
        }
    })
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{bail, DType, Result, Tensor};

/// Largest absolute difference between two tensors of the same shape, compared in f64.
pub fn try_max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        bail!("shape {:?} vs {:?}", a.dims(), b.dims());
    }
    (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()
}

/// [`try_max_abs_diff`], panicking on a shape mismatch.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    try_max_abs_diff(a, b).unwrap()
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{bail, DType, Device, Result, Tensor};
use rnn_core::Implementation;

/// Largest absolute difference between two tensors of the same shape, compared in f64 on the
/// CPU (the two may live on different devices).
pub fn try_max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        bail!("shape {:?} vs {:?}", a.dims(), b.dims());
    }
    let host = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F64);
    (host(a)? - host(b)?)?.abs()?.max_all()?.to_scalar::<f64>()
}

/// [`try_max_abs_diff`], panicking on a shape mismatch.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    try_max_abs_diff(a, b).unwrap()
}

/// The largest magnitude in `t`, at least 1: the scale of a relative tolerance, so that sums
/// of large terms (ReLU cells, inverted-dropout scaling) are held to the same relative error as
/// small ones.
pub fn scale(t: &Tensor) -> f64 {
    t.abs()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.max_all())
        .and_then(|t| t.to_scalar::<f64>())
        .unwrap()
        .max(1.0)
}

/// The implementations a test checks on `device`: the fused op and its composed twin on the CPU
/// and on CUDA (in a build with the `cuda` feature); elsewhere the device's default path (`Auto`)
/// and the composed twin.
pub fn implementations(device: &Device) -> [Implementation; 2] {
    if device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda()) {
        [Implementation::Fused, Implementation::Composed]
    } else {
        [Implementation::Auto, Implementation::Composed]
    }
}

/// A deterministic uniform stream in [-1, 1) from a xorshift state (Candle's CPU RNG cannot be
/// seeded); `state` must not be zero.
pub fn xorshift(mut state: u64) -> impl FnMut() -> f64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// A CPU tensor of `dims` in `dtype` whose values are the next ones of `next`, times `scale`.
pub fn tensor_from(
    next: &mut impl FnMut() -> f64,
    dims: &[usize],
    scale: f64,
    dtype: DType,
) -> Tensor {
    let n: usize = dims.iter().product();
    let data: Vec<f64> = (0..n).map(|_| next() * scale).collect();
    Tensor::from_vec(data, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// `[(out_name, out), ("dx", dx), ("dw", dw)(, ("db", db))]` from `out` and the gradients of
/// `sum(out * g)` for the variables `x`, `w` and `b` of a layer with a weight and a bias (the
/// bias's only when `bias`; without it, it must get none).
pub fn value_and_grads(
    out_name: &'static str,
    out: &Tensor,
    g: &Tensor,
    [x, w, b]: [&candle_core::Var; 3],
    bias: bool,
) -> Vec<(&'static str, Tensor)> {
    let grads = (out * g).unwrap().sum_all().unwrap().backward().unwrap();
    let mut all = vec![
        (out_name, out.clone()),
        ("dx", grads.get(x).unwrap().clone()),
        ("dw", grads.get(w).unwrap().clone()),
    ];
    if bias {
        all.push(("db", grads.get(b).unwrap().clone()));
    } else {
        assert!(grads.get(b).is_none(), "an unused bias got a gradient");
    }
    all
}

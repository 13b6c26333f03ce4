//! The output layer of a classifier or language model fused with its loss: per-row
//! cross-entropy of `x · Wᵀ + b` against class ids, without materialising the logits as Candle
//! tensors. On the CPU (f32/f64) it is one op with a hand-written backward
//! (`crate::ops::linear_ce`): the logits are one GEMM, softmax and loss one pass per row, and the
//! backward three GEMMs from one in-place `(N, V)` buffer. Everywhere else (and with
//! [`Implementation::Composed`]) it is [`linear_nll_rows_composed`], plain Candle ops; tests hold
//! the two equal in value and every gradient.

use crate::layer::Implementation;
use candle_core::{bail, DType, Result, Tensor, D};

/// Whether the fused op runs `x`: a CPU tensor of f32 or f64.
pub fn fused_supported(x: &Tensor) -> bool {
    crate::ops::supports(x)
}

fn check(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, targets: &Tensor) -> Result<()> {
    let what = "linear_nll_rows";
    let (n, h) = match x.dims() {
        &[n, h] => (n, h),
        d => bail!("{what}: `x` must be (N, H), got {d:?}"),
    };
    let v = match weight.dims() {
        &[v, wh] if wh == h && v > 0 => v,
        d => bail!("{what}: `weight` must be (V, H) = (V, {h}) with V >= 1, got {d:?}"),
    };
    if let Some(b) = bias {
        if b.dims() != [v] {
            bail!("{what}: `bias` must be (V,) = ({v},), got {:?}", b.dims());
        }
    }
    if targets.dims() != [n] || targets.dtype() != DType::U32 {
        bail!(
            "{what}: `targets` must be ({n},) u32 class ids, got {:?} {:?}",
            targets.dtype(),
            targets.dims()
        );
    }
    Ok(())
}

/// `nll[n] = logsumexp(z[n]) - z[n, targets[n]]` with `z = x · weightᵀ + bias`, differentiable in
/// `x`, `weight` and `bias`.
///
/// # Shapes
/// - `x`: `(N, H)`; `weight`: `(V, H)` (PyTorch `nn.Linear` layout); `bias`: `(V,)` or `None`
/// - `targets`: `(N,)` u32 ids in `0..V` (checked; an id out of range is an error)
/// - returns `(N,)` in the dtype of `x`
///
/// `implementation`: `Auto` picks the fused op where [`fused_supported`], `Fused` insists on it
/// (an error elsewhere), `Composed` runs the Candle-ops twin.
pub fn linear_nll_rows(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
    implementation: Implementation,
) -> Result<Tensor> {
    check(x, weight, bias, targets)?;
    let fused = match implementation {
        Implementation::Auto => fused_supported(x),
        Implementation::Fused => {
            if !fused_supported(x) {
                bail!(
                    "linear_nll_rows: the fused op needs f32 or f64 on the CPU, got {:?} on {:?}",
                    x.dtype(),
                    x.device().location()
                );
            }
            true
        }
        Implementation::Composed => false,
    };
    if !fused {
        return linear_nll_rows_composed(x, weight, bias, targets);
    }
    let v = weight.dim(0)?;
    let bias = match bias {
        Some(b) => b.to_dtype(x.dtype())?.contiguous()?,
        None => Tensor::zeros(v, x.dtype(), x.device())?,
    };
    let op = crate::ops::linear_ce::LinearCrossEntropy::new(targets.to_vec1::<u32>()?);
    x.contiguous()?
        .apply_op3(&weight.to_dtype(x.dtype())?.contiguous()?, &bias, op)
}

/// The composed twin of [`linear_nll_rows`] (Candle's matmul, log-softmax and gather): runs on
/// every device and dtype (f16/bf16 in f32).
pub fn linear_nll_rows_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
) -> Result<Tensor> {
    check(x, weight, bias, targets)?;
    let dt = match x.dtype() {
        DType::F64 => DType::F64,
        _ => DType::F32,
    };
    let v = weight.dim(0)?;
    if x.device().is_cpu() {
        let host = targets.to_vec1::<u32>()?;
        if let Some((i, &t)) = host.iter().enumerate().find(|(_, &t)| t as usize >= v) {
            bail!("cross-entropy: target id {t} at position {i} is not a class (there are {v})");
        }
    }
    let mut z = x.to_dtype(dt)?.matmul(&weight.to_dtype(dt)?.t()?)?;
    if let Some(b) = bias {
        z = z.broadcast_add(&b.to_dtype(dt)?)?;
    }
    candle_nn::ops::log_softmax(&z, D::Minus1)?
        .gather(&targets.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()
}

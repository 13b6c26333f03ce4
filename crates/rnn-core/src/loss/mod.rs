//! Losses built only from candle tensor operations, so they run on any device and
//! backpropagate: [`masked_cross_entropy`] (and [`masked_cross_entropy_sum`] for perplexity),
//! [`mse`] and [`binary_cross_entropy_with_logits`]. Errors name the function, the argument and
//! both shapes.

use crate::layer::Implementation;
use candle_core::{DType, Result, Tensor, D};

fn invalid(message: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(message.into())
}

/// Summed negative log-likelihood and the number of positions it is summed over, as scalar
/// tensors on the input's device (see [`masked_cross_entropy_sum`]).
#[derive(Debug, Clone)]
pub struct NllSum {
    /// Sum over counted positions of `-ln p(target)`, in nats; rank 0. Differentiable.
    pub sum: Tensor,
    /// Number of counted positions, as a float scalar of the same dtype (exact up to 2^24
    /// positions in f32); rank 0.
    pub count: Tensor,
}

impl NllSum {
    /// `sum / max(count, 1)`: the mean NLL per counted position, and 0 (with zero gradient)
    /// when nothing is counted, rather than a NaN that would poison the weights.
    pub fn mean(&self) -> Result<Tensor> {
        self.sum.div(&self.count.maximum(1f64)?)
    }
}

/// The dtype losses compute in: f32 and f64 as given, other floats (f16, bf16, ...) in f32 so
/// that sums and the log-sum-exp do not lose precision. Integer tensors are an error.
fn loss_input(what: &str, name: &str, t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(t.clone()),
        d if d.is_float() => Ok(t.to_dtype(DType::F32)?),
        d => Err(invalid(format!(
            "{what}: `{name}` must have a float dtype, got {d:?}"
        ))),
    }
}

fn check_same_shape(what: &str, a_name: &str, a: &Tensor, b_name: &str, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(invalid(format!(
            "{what}: `{a_name}` has shape {:?} but `{b_name}` has shape {:?}; they must be equal",
            a.shape(),
            b.shape()
        )));
    }
    if a.elem_count() == 0 {
        return Err(invalid(format!(
            "{what}: `{a_name}` and `{b_name}` are empty (shape {:?}); the mean is undefined",
            a.shape()
        )));
    }
    Ok(())
}

/// Cross-entropy of `logits` against class ids, summed over the counted positions, with the
/// number of counted positions: the pieces a perplexity metric (`rnn_train::metrics::Perplexity`) needs, and whose ratio
/// ([`NllSum::mean`]) is [`masked_cross_entropy`].
///
/// * `logits`: `(N, C)` or `(B, T, C)` (any rank >= 2; the last dimension is the `C` classes),
///   float. f16/bf16 are computed in f32.
/// * `targets`: `u32` class ids in `0..C`, shape `(N,)` or `(B, T)` (the leading shape of
///   `logits`). On the CPU an id `>= C` at a counted position is an error from the gather;
///   on other devices it is not checked. Do not use `u32::MAX` at counted positions (candle's
///   gather reads it as "no index" and yields a log-probability of 0); padding belongs in `mask`.
/// * `mask`: optional, the leading shape of `logits`, any dtype; non-zero = counted, 0 = ignored.
///   Ignored positions contribute neither loss nor gradient and their target ids need not be
///   valid classes (they are replaced by 0 before the gather). `None` counts every position.
///
/// On the CPU with f32/f64 logits the per-position losses come from one fused op (a pass per
/// row forward, the gradient `softmax - onehot` written once backward); elsewhere from the
/// composed tensor operations (log-softmax, gather, where), which run on any device. Both
/// backpropagate into `logits`; [`masked_cross_entropy_sum_with`] picks one explicitly.
pub fn masked_cross_entropy_sum(
    logits: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
) -> Result<NllSum> {
    masked_cross_entropy_sum_with(logits, targets, mask, Implementation::Auto)
}

/// [`masked_cross_entropy_sum`] with the implementation chosen: `Auto` (the fused CPU op where
/// it applies, the composed ops elsewhere), `Fused` (an error off the CPU or for other dtypes
/// than f32/f64, after the upcast of f16/bf16), or `Composed` (the reference twin).
pub fn masked_cross_entropy_sum_with(
    logits: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
    implementation: Implementation,
) -> Result<NllSum> {
    let what = "masked_cross_entropy";
    let dims = logits.dims();
    if dims.len() < 2 || dims[dims.len() - 1] == 0 {
        return Err(invalid(format!(
            "{what}: `logits` must have shape (N, C) or (B, T, C) with C >= 1, got {:?}",
            logits.shape()
        )));
    }
    let classes = dims[dims.len() - 1];
    let lead = &dims[..dims.len() - 1];
    if targets.dims() != lead {
        return Err(invalid(format!(
            "{what}: `targets` must have the leading shape of `logits` {:?}, i.e. {lead:?}, got {:?}",
            logits.shape(),
            targets.shape()
        )));
    }
    if targets.dtype() != DType::U32 {
        return Err(invalid(format!(
            "{what}: `targets` must be u32 class ids, got dtype {:?}",
            targets.dtype()
        )));
    }
    if let Some(m) = mask {
        if m.dims() != lead {
            return Err(invalid(format!(
                "{what}: `mask` must have the leading shape of `logits` {:?}, i.e. {lead:?}, got {:?}",
                logits.shape(),
                m.shape()
            )));
        }
    }
    let logits = loss_input(what, "logits", logits)?;
    let positions: usize = lead.iter().product();
    let flat = logits.reshape((positions, classes))?;
    let (targets, keep) = kept_targets(targets, mask)?;
    let fused = match implementation {
        Implementation::Auto => crate::ops::supports(&flat),
        Implementation::Fused => {
            if !crate::ops::supports(&flat) {
                return Err(invalid(format!(
                    "{what}: the fused op needs f32 or f64 logits on the CPU, got {:?} on {:?}",
                    flat.dtype(),
                    flat.device().location()
                )));
            }
            true
        }
        Implementation::Composed => false,
    };
    let nll = if fused {
        crate::ops::cross_entropy::nll_rows(&flat, &targets)?
    } else {
        candle_nn::ops::log_softmax(&flat, D::Minus1)?
            .gather(&targets.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()?
    };
    masked_sum(nll, keep.as_ref(), positions)
}

/// Flat targets and the flat "counted" mask. Masked positions often hold a padding id that
/// need not be a class; class 0 stands in there so lookups stay in range, and [`masked_sum`]
/// drops those positions.
fn kept_targets(targets: &Tensor, mask: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
    let targets = targets.flatten_all()?;
    let keep = mask.map(|m| m.flatten_all()?.ne(0f64)).transpose()?;
    let targets = match &keep {
        Some(keep) => keep.where_cond(&targets, &targets.zeros_like()?)?,
        None => targets,
    };
    Ok((targets, keep))
}

/// Sums per-position losses `nll (N,)` over the kept positions (all when `keep` is `None`).
fn masked_sum(nll: Tensor, keep: Option<&Tensor>, positions: usize) -> Result<NllSum> {
    let (nll, count) = match keep {
        // `where_cond` rather than multiplying by the mask: 0 * inf would be NaN if a masked
        // position's logits are extreme.
        Some(keep) => (
            keep.where_cond(&nll, &nll.zeros_like()?)?,
            keep.to_dtype(nll.dtype())?.sum_all()?,
        ),
        None => (
            nll.clone(),
            Tensor::new(positions as f64, nll.device())?.to_dtype(nll.dtype())?,
        ),
    };
    Ok(NllSum {
        sum: nll.sum_all()?,
        count,
    })
}

/// [`masked_cross_entropy_sum`] of the logits `x · weightᵀ + bias` of a linear output layer,
/// without building the logits as a Candle tensor on the CPU: the layer and the loss are one
/// fused op there ([`crate::output::linear_nll_rows`]: one GEMM for the logits, one pass per
/// row, a hand-written backward of three GEMMs), and the composed ops (matmul, log-softmax,
/// gather) elsewhere or with `Implementation::Composed`. Gradients reach `x`, `weight` and
/// `bias`.
///
/// * `x`: `(N, H)` or `(B, T, H)` features; `weight`: `(V, H)`; `bias`: `(V,)` or `None`
/// * `targets`: u32 ids with the leading shape of `x`; `mask` as in [`masked_cross_entropy_sum`]
///   (masked positions' ids need not be classes)
pub fn linear_cross_entropy_sum_with(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
    mask: Option<&Tensor>,
    implementation: Implementation,
) -> Result<NllSum> {
    let what = "linear_cross_entropy";
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(invalid(format!(
            "{what}: `x` must have shape (N, H) or (B, T, H), got {:?}",
            x.shape()
        )));
    }
    let lead = &dims[..dims.len() - 1];
    if targets.dims() != lead || targets.dtype() != DType::U32 {
        return Err(invalid(format!(
            "{what}: `targets` must be u32 ids of the leading shape of `x` {:?}, i.e. {lead:?}, got {:?} {:?}",
            x.shape(),
            targets.dtype(),
            targets.shape()
        )));
    }
    if let Some(m) = mask {
        if m.dims() != lead {
            return Err(invalid(format!(
                "{what}: `mask` must have the leading shape of `x` {:?}, i.e. {lead:?}, got {:?}",
                x.shape(),
                m.shape()
            )));
        }
    }
    let x = loss_input(what, "x", x)?;
    let positions: usize = lead.iter().product();
    let flat = x.reshape((positions, dims[dims.len() - 1]))?;
    let (targets, keep) = kept_targets(targets, mask)?;
    let nll = crate::output::linear_nll_rows(&flat, weight, bias, &targets, implementation)?;
    masked_sum(nll, keep.as_ref(), positions)
}

/// Mean cross-entropy (nats) of `logits` against class ids over the counted positions: a rank-0
/// tensor, `sum / max(count, 1)` (0 when nothing is counted). Shapes, dtypes and the mask are as
/// in [`masked_cross_entropy_sum`]; without a mask this equals `candle_nn::loss::cross_entropy`
/// on the flattened `(N, C)` logits, and PyTorch's `F.cross_entropy(..., ignore_index=pad)`
/// when the mask is `targets != pad`.
pub fn masked_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    masked_cross_entropy_sum(logits, targets, mask)?.mean()
}

/// Mean squared error `mean((pred - target)^2)` over all elements: a rank-0 tensor in the
/// squared units of the target. `pred` and `target` must have the same (non-empty) shape and a
/// float dtype; f16/bf16 are computed in f32.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let what = "mse";
    check_same_shape(what, "pred", pred, "target", target)?;
    let pred = loss_input(what, "pred", pred)?;
    let target = loss_input(what, "target", target)?.to_dtype(pred.dtype())?;
    pred.sub(&target)?.sqr()?.mean_all()
}

/// Binary cross-entropy on logits, averaged over all elements: a rank-0 tensor in nats.
///
/// * `logits`: any non-empty shape, float; f16/bf16 are computed in f32.
/// * `targets`: probabilities in `[0, 1]` (not checked, to stay on the device), same shape.
///
/// Uses the stable form `max(x, 0) - x*y + ln(1 + exp(-|x|))`, which never exponentiates a
/// positive number, so large `|x|` gives finite values where `-y ln(sigmoid(x)) - ...` gives
/// `inf` or NaN. `max(x, 0)` and `|x| = max(x, -x)` are built from `maximum`, whose gradient
/// splits ties evenly, so the gradient at `x = 0` is the exact `sigmoid(0) - y = 0.5 - y`
/// (with `relu`/`abs` it would be off by 0.5 there, which matters for zero-initialised layers).
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let what = "binary_cross_entropy_with_logits";
    check_same_shape(what, "logits", logits, "targets", targets)?;
    let x = loss_input(what, "logits", logits)?;
    let y = loss_input(what, "targets", targets)?.to_dtype(x.dtype())?;
    let positive_part = x.maximum(0f64)?;
    let abs = x.maximum(&x.neg()?)?;
    let log_term = abs.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let loss = positive_part.sub(&x.mul(&y)?)?.add(&log_term)?;
    loss.mean_all()
}

#[cfg(test)]
mod tests;

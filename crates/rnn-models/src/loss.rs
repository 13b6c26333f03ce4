//! Losses built only from candle tensor operations, so they run on any device and
//! backpropagate: [`masked_cross_entropy`] (and [`masked_cross_entropy_sum`] for perplexity),
//! [`mse`] and [`binary_cross_entropy_with_logits`]. Errors name the function, the argument and
//! both shapes.

use candle_core::{DType, Result, Tensor, D};
use rnn_core::Implementation;

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
        Implementation::Auto => crate::fused_ce::supports(&flat),
        Implementation::Fused => {
            if !crate::fused_ce::supports(&flat) {
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
        crate::fused_ce::nll_rows(&flat, &targets)?
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
/// fused op there (`rnn_core::output::linear_nll_rows`: one GEMM for the logits, one pass per
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
    let nll = rnn_core::output::linear_nll_rows(&flat, weight, bias, &targets, implementation)?;
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
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn assert_close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn cross_entropy_hand_value() {
        let dev = Device::Cpu;
        let ln2 = std::f64::consts::LN_2;
        // Row 0: logits [0, ln 2, 0] -> softmax [1/4, 2/4, 1/4]; target 1 -> -ln(1/2) = ln 2.
        // Row 1: logits [0, 0, 0] -> softmax [1/3, 1/3, 1/3]; target 2 -> ln 3.
        // Mean = (ln 2 + ln 3) / 2 = ln(6) / 2 = 0.8958797346...
        let logits = Tensor::new(&[[0f64, ln2, 0.0], [0.0, 0.0, 0.0]], &dev).unwrap();
        let targets = Tensor::new(&[1u32, 2], &dev).unwrap();
        let loss = masked_cross_entropy(&logits, &targets, None).unwrap();
        assert_eq!(loss.rank(), 0);
        assert_close(scalar(&loss), 6f64.ln() / 2.0, 1e-12);
        let nll = masked_cross_entropy_sum(&logits, &targets, None).unwrap();
        assert_close(scalar(&nll.sum), 6f64.ln(), 1e-12);
        assert_eq!(scalar(&nll.count), 2.0);

        // Agrees with candle_nn's unmasked cross-entropy on arbitrary values.
        let logits = Tensor::new(
            &[
                [1.5f32, -0.3, 2.0, 0.1],
                [-1.0, 0.4, 0.0, 3.0],
                [0.2, 0.2, -2.0, 1.0],
            ],
            &dev,
        )
        .unwrap();
        let targets = Tensor::new(&[2u32, 0, 3], &dev).unwrap();
        let ours = scalar(&masked_cross_entropy(&logits, &targets, None).unwrap());
        let candle = scalar(&candle_nn::loss::cross_entropy(&logits, &targets).unwrap());
        assert_close(ours, candle, 1e-6);
    }

    #[test]
    fn masked_cross_entropy_ignores_masked_positions() {
        let dev = Device::Cpu;
        // (B=2, T=2, C=3). Position (1, 1) is masked; its target 999 is not even a class.
        let base = [
            [[0f32, 1.0, 2.0], [1.0, 0.0, 0.0]],
            [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]],
        ];
        let mut changed = base;
        changed[1][1] = [50.0, -30.0, 7.0];
        let targets = Tensor::new(&[[2u32, 0], [1, 999]], &dev).unwrap();
        let mask = Tensor::new(&[[1u8, 1], [1, 0]], &dev).unwrap();
        let a = Tensor::new(&base, &dev).unwrap();
        let b = Tensor::new(&changed, &dev).unwrap();
        let la = scalar(&masked_cross_entropy(&a, &targets, Some(&mask)).unwrap());
        let lb = scalar(&masked_cross_entropy(&b, &targets, Some(&mask)).unwrap());
        assert_eq!(la, lb);

        // And it is the mean over the 3 counted positions only:
        // row [0,1,2] target 2: ln(1 + e + e^2) - 2
        // row [1,0,0] target 0: ln(e + 2) - 1
        // row [.5,.5,0] target 1: ln(2 e^.5 + 1) - 0.5
        let e = std::f64::consts::E;
        let hand = ((1.0 + e + e * e).ln() - 2.0 + (e + 2.0).ln() - 1.0
            + (2.0 * e.sqrt() + 1.0).ln()
            - 0.5)
            / 3.0;
        assert_close(la, hand, 1e-6);

        // An all-zero mask gives 0, not NaN.
        let none = Tensor::zeros((2, 2), DType::U8, &dev).unwrap();
        assert_eq!(
            scalar(&masked_cross_entropy(&a, &targets, Some(&none)).unwrap()),
            0.0
        );
    }

    #[test]
    fn masked_cross_entropy_backpropagates() {
        let dev = Device::Cpu;
        // (B=1, T=3, C=2) with the last position masked.
        let var = Var::new(&[[[0f32, 0.0], [1.0, 0.0], [3.0, -3.0]]], &dev).unwrap();
        let targets = Tensor::new(&[[0u32, 1, 0]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 0.0]], &dev).unwrap();
        let loss = masked_cross_entropy(var.as_tensor(), &targets, Some(&mask)).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("logits get a gradient")
            .to_vec3::<f32>()
            .unwrap();
        // d(mean CE)/d logits = (softmax - onehot) / count, count = 2.
        // position 0: softmax [1/2, 1/2], target 0 -> [-1/2, 1/2] / 2 = [-0.25, 0.25]
        // position 1: softmax [s, 1-s] with s = e/(e+1) = 0.7310586, target 1
        //             -> [s, -s] / 2 = [0.3655293, -0.3655293]
        // position 2: masked -> [0, 0]
        let s = (1f32).exp() / ((1f32).exp() + 1.0);
        let expected = [[-0.25, 0.25], [s / 2.0, -s / 2.0], [0.0, 0.0]];
        for (row, exp) in g[0].iter().zip(expected) {
            for (a, b) in row.iter().zip(exp) {
                assert!((a - b).abs() < 1e-6, "{g:?}");
            }
        }
    }

    #[test]
    fn cross_entropy_shape_errors_name_both_shapes() {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let targets = Tensor::zeros((3, 2), DType::U32, &dev).unwrap();
        let err = masked_cross_entropy(&logits, &targets, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("targets") && err.contains("[2, 3, 4]") && err.contains("[3, 2]"),
            "{err}"
        );
        let targets = Tensor::zeros((2, 3), DType::U32, &dev).unwrap();
        let mask = Tensor::ones(6, DType::F32, &dev).unwrap();
        let err = masked_cross_entropy(&logits, &targets, Some(&mask))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mask") && err.contains("[6]"), "{err}");
        let float_targets = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let err = masked_cross_entropy(&logits, &float_targets, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("u32") && err.contains("F32"), "{err}");
    }

    #[test]
    fn mse_hand_value_and_shape_error() {
        let dev = Device::Cpu;
        // ((1-1)^2 + (2-0)^2 + (3-6)^2) / 3 = (0 + 4 + 9) / 3 = 13/3
        let p = Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let t = Tensor::new(&[1f32, 0.0, 6.0], &dev).unwrap();
        assert_close(scalar(&mse(&p, &t).unwrap()), 13.0 / 3.0, 1e-6);
        let t2 = Tensor::new(&[[1f32, 0.0, 6.0]], &dev).unwrap();
        let err = mse(&p, &t2).unwrap_err().to_string();
        assert!(err.contains("[3]") && err.contains("[1, 3]"), "{err}");
    }

    #[test]
    fn bce_with_logits_is_stable_and_has_exact_gradient_at_zero() {
        let dev = Device::Cpu;
        // Per element: max(x,0) - x y + ln(1 + e^-|x|)
        //   x =  100, y = 1: 100 - 100 + ~0 = 0
        //   x = -100, y = 0: 0 - 0 + ~0     = 0
        //   x =  100, y = 0: 100 - 0 + ~0   = 100
        //   x = -100, y = 1: 0 + 100 + ~0   = 100
        // mean = 50 (the naive sigmoid form gives inf/NaN in f32 here).
        let x = Tensor::new(&[100f32, -100.0, 100.0, -100.0], &dev).unwrap();
        let y = Tensor::new(&[1f32, 0.0, 0.0, 1.0], &dev).unwrap();
        let loss = scalar(&binary_cross_entropy_with_logits(&x, &y).unwrap());
        assert!(loss.is_finite());
        assert_close(loss, 50.0, 1e-4);
        // Even larger logits stay finite.
        let x = Tensor::new(&[1e30f32, -1e30], &dev).unwrap();
        let y = Tensor::new(&[1f32, 0.0], &dev).unwrap();
        assert_eq!(
            scalar(&binary_cross_entropy_with_logits(&x, &y).unwrap()),
            0.0
        );

        // x = 0: ln 2 whatever y is; gradient (sigmoid(0) - y) / N = (0.5 - y) / 2.
        let var = Var::new(&[0f32, 0.0], &dev).unwrap();
        let y = Tensor::new(&[1f32, 0.0], &dev).unwrap();
        let loss = binary_cross_entropy_with_logits(var.as_tensor(), &y).unwrap();
        assert_close(scalar(&loss), std::f64::consts::LN_2, 1e-6);
        let g = loss.backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (g[0] + 0.25).abs() < 1e-7 && (g[1] - 0.25).abs() < 1e-7,
            "{g:?}"
        );

        // Moderate values agree with the naive formula -[y ln s + (1-y) ln(1-s)], s = sigmoid(x).
        let xs = [-2.0f64, 0.5, 3.0];
        let ys = [0.0f64, 1.0, 0.3];
        let naive = xs
            .iter()
            .zip(ys)
            .map(|(&x, y)| {
                let s = 1.0 / (1.0 + (-x).exp());
                -(y * s.ln() + (1.0 - y) * (1.0 - s).ln())
            })
            .sum::<f64>()
            / 3.0;
        let ours = binary_cross_entropy_with_logits(
            &Tensor::new(&xs, &dev).unwrap(),
            &Tensor::new(&ys, &dev).unwrap(),
        )
        .unwrap();
        assert_close(scalar(&ours), naive, 1e-12);

        let err = binary_cross_entropy_with_logits(&Tensor::new(&xs, &dev).unwrap(), &y)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[3]") && err.contains("[2]"), "{err}");
    }

    /// The fused CPU op and its composed twin: equal losses and gradients (f32 and f64, with a
    /// mask whose ignored positions hold an out-of-range padding id, large and tiny logits,
    /// shapes (N, C) and (B, T, C)).
    #[test]
    fn fused_cross_entropy_equals_the_composed_twin() {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            for (dims, scale) in [
                (vec![7usize, 5], 1.0),
                (vec![3, 4, 50], 30.0),
                (vec![2, 3, 1], 1.0),
            ] {
                let classes = *dims.last().unwrap();
                let lead: usize = dims[..dims.len() - 1].iter().product();
                let values: Vec<f64> = (0..lead * classes)
                    .map(|_| scale * (rng.random::<f64>() * 2.0 - 1.0))
                    .collect();
                let ids: Vec<u32> = (0..lead)
                    .map(|i| {
                        if i % 3 == 1 {
                            999
                        } else {
                            rng.random_range(0..classes as u32)
                        }
                    })
                    .collect();
                let keep: Vec<u8> = (0..lead).map(|i| u8::from(i % 3 != 1)).collect();
                let lead_dims = &dims[..dims.len() - 1];
                let targets = Tensor::from_vec(ids, lead_dims, &dev).unwrap();
                let mask = Tensor::from_vec(keep, lead_dims, &dev).unwrap();
                let run = |imp| {
                    let x = Var::from_tensor(
                        &Tensor::from_vec(values.clone(), dims.as_slice(), &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                    )
                    .unwrap();
                    let s =
                        masked_cross_entropy_sum_with(x.as_tensor(), &targets, Some(&mask), imp)
                            .unwrap();
                    // A non-uniform upstream gradient: weight the mean by 3.
                    let loss = (s.mean().unwrap() * 3.0).unwrap();
                    let g = loss.backward().unwrap();
                    let grad = g.get(&x).unwrap().flatten_all().unwrap();
                    (
                        scalar(&s.sum),
                        scalar(&s.count),
                        grad.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap(),
                    )
                };
                let (fs, fc, fg) = run(Implementation::Fused);
                let (cs, cc, cg) = run(Implementation::Composed);
                let what = format!("{dtype:?} {dims:?}");
                assert_eq!(fc, cc, "{what}");
                assert!(
                    (fs - cs).abs() <= tol * cs.abs().max(1.0),
                    "{what}: {fs} vs {cs}"
                );
                assert_eq!(fg.len(), cg.len());
                for (i, (a, b)) in fg.iter().zip(&cg).enumerate() {
                    assert!((a - b).abs() <= tol, "{what}: grad[{i}] {a} vs {b}");
                }
                // The ignored rows get no gradient at all.
                for row in (1..lead).step_by(3) {
                    assert!(fg[row * classes..(row + 1) * classes]
                        .iter()
                        .all(|&v| v == 0.0));
                }
                assert_eq!(
                    run(Implementation::Auto).0,
                    fs,
                    "{what}: Auto is the fused op on the CPU"
                );
            }
        }
    }

    #[test]
    fn fused_cross_entropy_errors() {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let targets = Tensor::new(&[0u32, 3], &dev).unwrap();
        let e = masked_cross_entropy_sum_with(&logits, &targets, None, Implementation::Fused)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("target id 3 at position 1 is not a class (there are 3)"),
            "{e}"
        );
        let ints = Tensor::zeros((2, 3), DType::U8, &dev).unwrap();
        let e = masked_cross_entropy_sum_with(&ints, &targets, None, Implementation::Fused)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must have a float dtype"), "{e}");
    }
}

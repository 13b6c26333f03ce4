//! The fused output layer + cross-entropy (`rnn_core::output::linear_nll_rows`, CPU op with a
//! hand-written backward) equals its composed twin (Candle matmul, log-softmax, gather): the
//! per-row losses and the gradients of `x`, `weight` and `bias`, for random shapes, with and
//! without a bias, with zero upstream gradients on some rows (masked positions), in f64 to
//! 1e-10 and in f32 to 1e-5 (relative to the largest gradient).

mod common;
use common::{max_abs_diff, scale, tensor_from, value_and_grads, xorshift};

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rnn_core::output::{linear_nll_rows, linear_nll_rows_composed};
use rnn_core::Implementation;

const TOL_F64: f64 = 1e-10;
const TOL_F32: f64 = 1e-5;

struct Case {
    n: usize,
    h: usize,
    v: usize,
    bias: bool,
    dtype: DType,
    seed: u64,
    /// Scale of the logits: large values test the max-shift of the log-sum-exp.
    scale: f64,
}

/// The losses and gradients `(nll, dx, dw, db)` of `sum_n g_n * nll_n` for fixed random `g`
/// (with every third row's `g` zero, as a masked position).
fn run(case: &Case, fused: bool) -> Vec<(&'static str, Tensor)> {
    let dev = Device::Cpu;
    let mut next = xorshift(case.seed);
    let mut tensor = |dims: &[usize], scale: f64| tensor_from(&mut next, dims, scale, case.dtype);
    let x = Var::from_tensor(&tensor(&[case.n, case.h], case.scale)).unwrap();
    let w = Var::from_tensor(&tensor(&[case.v, case.h], 1.0)).unwrap();
    let b = Var::from_tensor(&tensor(&[case.v], case.scale)).unwrap();
    let targets: Vec<u32> = (0..case.n)
        .map(|i| ((i * 7 + case.seed as usize) % case.v) as u32)
        .collect();
    let targets = Tensor::new(targets.as_slice(), &dev).unwrap();
    let g: Vec<f64> = (0..case.n)
        .map(|i| if i % 3 == 2 { 0.0 } else { 0.5 + i as f64 })
        .collect();
    let g = Tensor::new(g.as_slice(), &dev)
        .unwrap()
        .to_dtype(case.dtype)
        .unwrap();
    let bias = case.bias.then_some(b.as_tensor());
    let nll = if fused {
        linear_nll_rows(&x, &w, bias, &targets, Implementation::Fused).unwrap()
    } else {
        linear_nll_rows_composed(&x, &w, bias, &targets).unwrap()
    };
    value_and_grads("nll", &nll, &g, [&x, &w, &b], case.bias)
}

fn check(case: &Case) {
    let fused = run(case, true);
    let composed = run(case, false);
    let tol = if case.dtype == DType::F64 {
        TOL_F64
    } else {
        TOL_F32
    };
    for ((name, a), (_, b)) in fused.iter().zip(&composed) {
        let scale = scale(b);
        let diff = max_abs_diff(a, b);
        assert!(
            diff <= tol * scale,
            "{name}: fused and composed differ by {diff} (scale {scale}, n={} h={} v={} bias={} {:?})",
            case.n,
            case.h,
            case.v,
            case.bias,
            case.dtype
        );
    }
}

#[test]
fn language_model_shape_f32_and_f64() {
    for dtype in [DType::F32, DType::F64] {
        check(&Case {
            n: 40,
            h: 24,
            v: 1003,
            bias: true,
            dtype,
            seed: 3,
            scale: 1.0,
        });
    }
}

#[test]
fn large_logits_do_not_overflow() {
    let case = Case {
        n: 9,
        h: 5,
        v: 17,
        bias: true,
        dtype: DType::F32,
        seed: 11,
        scale: 60.0,
    };
    for (name, t) in run(&case, true) {
        let all_finite = t
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite());
        assert!(all_finite, "{name} is not finite with logits of scale 60");
    }
    check(&case);
}

#[test]
fn a_target_outside_the_classes_is_an_error() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    let targets = Tensor::new(&[1u32, 4], &dev).unwrap();
    for imp in [Implementation::Fused, Implementation::Composed] {
        let err = linear_nll_rows(&x, &w, None, &targets, imp)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target id 4 at position 1 is not a class (there are 4)"),
            "{imp:?}: {err}"
        );
    }
    let bad_w = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
    let err = linear_nll_rows(&x, &bad_w, None, &targets, Implementation::Auto)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`weight` must be (V, H) = (V, 3)"), "{err}");
}

#[test]
fn nan_inputs_give_a_nan_loss_not_a_finite_one() {
    let dev = Device::Cpu;
    let x = Tensor::new(&[[1f32, f32::NAN], [0.5, 0.25]], &dev).unwrap();
    let w = Tensor::ones((3, 2), DType::F32, &dev).unwrap();
    let targets = Tensor::new(&[0u32, 2], &dev).unwrap();
    let nll = linear_nll_rows(&x, &w, None, &targets, Implementation::Fused)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(nll[0].is_nan(), "row with a NaN feature: {}", nll[0]);
    assert!(
        (nll[1] - 3f32.ln()).abs() < 1e-6,
        "equal logits: {}",
        nll[1]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn fused_equals_composed(
        n in 1usize..30,
        h in 1usize..20,
        v in 1usize..70,
        bias in any::<bool>(),
        f64_dtype in any::<bool>(),
        seed in 1u64..1000,
    ) {
        let dtype = if f64_dtype { DType::F64 } else { DType::F32 };
        check(&Case { n, h, v, bias, dtype, seed, scale: 2.0 });
    }
}

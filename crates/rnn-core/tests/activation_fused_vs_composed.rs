//! `rnn_core::activation`'s fused CPU ops (one vectorised pass forward, one backward) equal
//! their composed twins, Candle's `Tensor::tanh` and candle-nn's `ops::sigmoid`: the value and
//! the input's gradient, in f64 bit for bit (the same arithmetic) and in f32 to 1e-6 absolute,
//! on tensors of one element to several parallel chunks, contiguous or not, over the whole
//! range (saturated values included), with NaN and infinities passed through as Candle does;
//! plus the fallbacks and the error of a forced fused op.

mod common;
use common::{max_abs_diff, tensor_from, xorshift};

use candle_core::{DType, Device, Result, Tensor, Var};
use proptest::prelude::*;
use rnn_core::activation::{sigmoid, sigmoid_with, tanh, tanh_with};
use rnn_core::Implementation;

type Function = fn(&Tensor, Implementation) -> Result<Tensor>;
const FUNCTIONS: [(&str, Function); 2] = [("tanh", tanh_with), ("sigmoid", sigmoid_with)];

/// `(y, dx)` of `sum(f(x) * g)` for the input `x` (transposed first when `transpose`: a
/// non-contiguous input) and a fixed random `g`.
fn run(
    f: Function,
    x: &Tensor,
    transpose: bool,
    implementation: Implementation,
    seed: u64,
) -> (Tensor, Tensor) {
    let var = Var::from_tensor(x).unwrap();
    let input = if transpose {
        var.as_tensor().t().unwrap()
    } else {
        var.as_tensor().clone()
    };
    let y = f(&input, implementation).unwrap();
    assert_eq!(y.dims(), input.dims(), "output shape");
    let mut next = xorshift(seed | 1);
    let g = tensor_from(&mut next, y.dims(), 1.0, x.dtype());
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(&var).unwrap().clone())
}

fn compare(dims: &[usize], scale: f64, transpose: bool, dtype: DType, seed: u64) {
    let mut next = xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let x = tensor_from(&mut next, dims, scale, dtype);
    for (name, f) in FUNCTIONS {
        let (yf, df) = run(f, &x, transpose, Implementation::Fused, seed);
        let (yc, dc) = run(f, &x, transpose, Implementation::Composed, seed);
        let tol = if dtype == DType::F64 { 0.0 } else { 1e-6 };
        let (ey, ed) = (max_abs_diff(&yf, &yc), max_abs_diff(&df, &dc));
        assert!(
            ey <= tol && ed <= tol,
            "{name} {dims:?} x{scale} transposed {transpose} {dtype:?}: value differs by {ey:e}, gradient by {ed:e}"
        );
    }
}

#[test]
fn fused_equals_candle_from_one_element_to_many_chunks() {
    for dtype in [DType::F32, DType::F64] {
        for (i, dims) in [
            vec![1],
            vec![7, 3],
            vec![32, 200, 128], // the classifier's attention pooling: 50 parallel chunks
            vec![16385],        // one element past the first chunk
        ]
        .iter()
        .enumerate()
        {
            for scale in [0.5, 3.0, 30.0] {
                compare(dims, scale, false, dtype, 11 + i as u64);
            }
        }
    }
}

#[test]
fn the_fused_ops_are_the_ones_tested() {
    // In f32 their polynomials round differently from the C library somewhere among 800,000
    // values: equal bit for bit would mean Candle's op ran under the fused name.
    let mut next = xorshift(3);
    let x = tensor_from(&mut next, &[32, 200, 128], 3.0, DType::F32);
    for (name, f) in FUNCTIONS {
        let fused = f(&x, Implementation::Fused).unwrap();
        let candle = f(&x, Implementation::Composed).unwrap();
        assert!(max_abs_diff(&fused, &candle) > 0.0, "{name}");
    }
}

#[test]
fn a_non_contiguous_input_gives_the_same_values_and_gradient() {
    for dtype in [DType::F32, DType::F64] {
        compare(&[300, 130], 2.0, true, dtype, 5);
    }
}

#[test]
fn nan_and_infinities_pass_through_as_in_candle() {
    let x = Tensor::new(
        &[
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1e-30,
            9.0,
        ],
        &Device::Cpu,
    )
    .unwrap();
    let t = tanh_with(&x, Implementation::Fused)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let s = sigmoid_with(&x, Implementation::Fused)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(
        t[0].is_nan() && s[0].is_nan(),
        "NaN became {} and {}",
        t[0],
        s[0]
    );
    assert_eq!(&t[1..3], &[1.0, -1.0]);
    // sigmoid(-inf): 0 in Candle; here 1 / (1 + e^88), a subnormal 6e-39 (the exponential is
    // clamped to stay finite), which the `rnn` binary's flush-to-zero reads as 0.
    assert_eq!(s[1], 1.0);
    assert!(
        (0.0..f32::MIN_POSITIVE).contains(&s[2]),
        "sigmoid(-inf) = {}",
        s[2]
    );
    assert_eq!(t[3].to_bits(), (-0f32).to_bits(), "the sign of -0");
    for (name, f, fused) in [
        ("tanh", FUNCTIONS[0].1, &t),
        ("sigmoid", FUNCTIONS[1].1, &s),
    ] {
        let candle = f(&x, Implementation::Composed)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, c) in fused[3..].iter().zip(&candle[3..]) {
            assert!((a - c).abs() <= 1e-6, "{name}: {a} against {c}");
        }
    }
}

#[test]
fn elsewhere_it_is_candles_op_and_a_forced_fused_op_says_why_not() {
    let x = Tensor::new(&[0.5f32, -2.0], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(max_abs_diff(&tanh(&x).unwrap(), &x.tanh().unwrap()), 0.0);
    assert_eq!(
        max_abs_diff(&sigmoid(&x).unwrap(), &candle_nn::ops::sigmoid(&x).unwrap()),
        0.0
    );
    for (name, f) in FUNCTIONS {
        let err = f(&x, Implementation::Fused).unwrap_err().to_string();
        assert!(
            err.starts_with(name) && err.contains("f32 or f64") && err.contains("BF16"),
            "unhelpful error: {err}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn fused_equals_candle_on_random_shapes(
        rows in 1usize..70,
        cols in 1usize..300,
        scale in 0.1f64..12.0,
        transpose in any::<bool>(),
        f64_ in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = if f64_ { DType::F64 } else { DType::F32 };
        compare(&[rows, cols], scale, transpose, dtype, seed);
    }
}

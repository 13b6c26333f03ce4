//! `rnn_core::activation::tanh`'s fused CPU op (one vectorised pass forward, `g · (1 - y²)`
//! backward) equals its composed twin, Candle's `Tensor::tanh`: the value and the input's
//! gradient, in f64 bit for bit (both use the standard library's `tanh`) and in f32 to 1e-6
//! absolute, on tensors of one element to several parallel chunks, contiguous or not, over the
//! whole range (saturated values included), with NaN and infinities passed through as Candle
//! does; plus the fallbacks and the error of a forced fused op.

mod common;
use common::{max_abs_diff, tensor_from, xorshift};

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rnn_core::activation::{tanh, tanh_with};
use rnn_core::Implementation;

/// `(y, dx)` of `sum(tanh(x) * g)` for the input `x` (transposed first when `transpose`: a
/// non-contiguous input) and a fixed random `g`.
fn run(x: &Tensor, transpose: bool, implementation: Implementation, seed: u64) -> (Tensor, Tensor) {
    let var = Var::from_tensor(x).unwrap();
    let input = if transpose {
        var.as_tensor().t().unwrap()
    } else {
        var.as_tensor().clone()
    };
    let y = tanh_with(&input, implementation).unwrap();
    assert_eq!(y.dims(), input.dims(), "output shape");
    let mut next = xorshift(seed | 1);
    let g = tensor_from(&mut next, y.dims(), 1.0, x.dtype());
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    (y, grads.get(&var).unwrap().clone())
}

fn compare(dims: &[usize], scale: f64, transpose: bool, dtype: DType, seed: u64) {
    let mut next = xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let x = tensor_from(&mut next, dims, scale, dtype);
    let (yf, df) = run(&x, transpose, Implementation::Fused, seed);
    let (yc, dc) = run(&x, transpose, Implementation::Composed, seed);
    let tol = if dtype == DType::F64 { 0.0 } else { 1e-6 };
    let (ey, ed) = (max_abs_diff(&yf, &yc), max_abs_diff(&df, &dc));
    assert!(
        ey <= tol && ed <= tol,
        "{dims:?} x{scale} transposed {transpose} {dtype:?}: value differs by {ey:e}, gradient by {ed:e}"
    );
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
fn the_fused_op_is_the_one_tested() {
    // In f32 its polynomial rounds differently from the C library's `tanhf` somewhere among
    // 800,000 values: equal bit for bit would mean Candle's op ran under the fused name.
    let mut next = xorshift(3);
    let x = tensor_from(&mut next, &[32, 200, 128], 3.0, DType::F32);
    let fused = tanh_with(&x, Implementation::Fused).unwrap();
    let candle = x.tanh().unwrap();
    assert!(max_abs_diff(&fused, &candle) > 0.0);
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
    let fused = tanh_with(&x, Implementation::Fused)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let candle = x.tanh().unwrap().to_vec1::<f32>().unwrap();
    assert!(fused[0].is_nan(), "NaN became {}", fused[0]);
    assert_eq!(&fused[1..3], &[1.0, -1.0]);
    assert_eq!(fused[3].to_bits(), (-0f32).to_bits(), "the sign of -0");
    for (f, c) in fused[4..].iter().zip(&candle[4..]) {
        assert!((f - c).abs() <= 1e-6, "{f} against {c}");
    }
}

#[test]
fn elsewhere_it_is_candles_tanh_and_a_forced_fused_op_says_why_not() {
    let x = Tensor::new(&[0.5f32, -2.0], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let auto = tanh(&x).unwrap();
    let candle = x.tanh().unwrap();
    assert_eq!(max_abs_diff(&auto, &candle), 0.0);
    let err = tanh_with(&x, Implementation::Fused)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("f32 or f64") && err.contains("BF16"),
        "unhelpful error: {err}"
    );
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

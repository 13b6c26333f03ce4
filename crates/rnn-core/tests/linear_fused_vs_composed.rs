//! `rnn_core::linear::Linear`'s fused CPU op (one product forward, two products and a column sum
//! backward) equals its composed twin, candle-nn's `Linear`: the output and the gradients of the
//! input, the weight and the bias, for inputs of rank 2 to 4, with and without a bias, on the
//! shapes that take each product path (a few rows, faer, the blocked weight-gradient kernel),
//! in f64 to 1e-10 and in f32 to 1e-5 (relative to the largest value); plus the errors and the
//! fallbacks.

mod common;
use common::{max_abs_diff, scale, tensor_from, value_and_grads, xorshift};

use candle_core::{DType, Device, Module, Tensor, Var};
use proptest::prelude::*;
use rnn_core::linear::Linear;
use rnn_core::Implementation;

struct Case {
    /// The input's leading dimensions (their product is the number of rows).
    lead: Vec<usize>,
    inputs: usize,
    outputs: usize,
    bias: bool,
    dtype: DType,
    seed: u64,
}

/// The test's value stream for `seed` (any value, zero included).
fn stream(seed: u64) -> impl FnMut() -> f64 {
    xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// The output and the gradients `(y, dx, dw, db)` of `sum(y * g)` for a fixed random `g`.
fn run(case: &Case, implementation: Implementation) -> Vec<(&'static str, Tensor)> {
    let mut next = stream(case.seed);
    let mut tensor = |dims: &[usize]| tensor_from(&mut next, dims, 1.0, case.dtype);
    let mut x_dims = case.lead.clone();
    x_dims.push(case.inputs);
    let x = Var::from_tensor(&tensor(&x_dims)).unwrap();
    let w = Var::from_tensor(&tensor(&[case.outputs, case.inputs])).unwrap();
    let b = Var::from_tensor(&tensor(&[case.outputs])).unwrap();
    let mut y_dims = case.lead.clone();
    y_dims.push(case.outputs);
    let g = tensor(&y_dims);
    let layer = Linear::new(
        w.as_tensor().clone(),
        case.bias.then(|| b.as_tensor().clone()),
    )
    .with_implementation(implementation);
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.dims(), y_dims.as_slice(), "output shape");
    value_and_grads("y", &y, &g, [&x, &w, &b], case.bias)
}

/// Checks the fused op against the twin.
fn check(case: &Case) {
    let fused = run(case, Implementation::Fused);
    let composed = run(case, Implementation::Composed);
    let tol = if case.dtype == DType::F64 {
        1e-10
    } else {
        1e-5
    };
    for ((name, a), (_, b)) in fused.iter().zip(&composed) {
        let diff = max_abs_diff(a, b);
        let s = scale(b);
        assert!(
            diff <= tol * s,
            "{name}: fused and composed differ by {diff} (scale {s}; rows {:?} in {} out {} bias {} {:?})",
            case.lead,
            case.inputs,
            case.outputs,
            case.bias,
            case.dtype
        );
    }
}

#[test]
fn the_translation_models_layers_in_f32_and_f64() {
    // The attention's key and combination layers and the encoder-decoder bridge of
    // RESULTS.md's translation model (batches of 64, 8 source and 9 target tokens).
    for dtype in [DType::F32, DType::F64] {
        for (lead, inputs, outputs, bias) in [
            (vec![64, 8], 512, 256, false),
            (vec![64, 9], 768, 256, true),
            (vec![1, 64], 512, 256, true),
        ] {
            check(&Case {
                lead,
                inputs,
                outputs,
                bias,
                dtype,
                seed: 5,
            });
        }
    }
}

#[test]
fn auto_gives_the_fused_results_on_the_cpu() {
    // Which path `Auto` takes is tested in the crate (`linear::tests`); here its results.
    let case = Case {
        lead: vec![2100],
        inputs: 300,
        outputs: 70,
        bias: true,
        dtype: DType::F32,
        seed: 9,
    };
    check(&case);
    let auto = run(&case, Implementation::Auto);
    let fused = run(&case, Implementation::Fused);
    for ((name, a), (_, b)) in auto.iter().zip(&fused) {
        assert_eq!(
            max_abs_diff(a, b),
            0.0,
            "{name}: Auto did not run the fused op"
        );
    }
}

#[test]
fn a_few_rows_wide_layers_and_rank_four_inputs() {
    for (lead, inputs, outputs) in [
        (vec![1], 7, 5),
        (vec![3], 1, 40),
        (vec![2, 3, 4], 6, 9),
        (vec![200], 33, 1),
        (vec![130], 64, 700),
    ] {
        for bias in [true, false] {
            check(&Case {
                lead: lead.clone(),
                inputs,
                outputs,
                bias,
                dtype: DType::F64,
                seed: 13,
            });
        }
    }
}

#[test]
fn empty_batches_give_empty_outputs_and_zero_weight_gradients() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::ones((4, 3), DType::F32, &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::ones(4, DType::F32, &dev).unwrap()).unwrap();
    let layer = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()))
        .with_implementation(Implementation::Fused);
    let x = Tensor::zeros((0, 5, 3), DType::F32, &dev).unwrap();
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.dims(), &[0, 5, 4]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dw = grads.get(&w).unwrap();
    assert_eq!(dw.dims(), &[4, 3]);
    assert_eq!(
        dw.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn a_transposed_input_is_read_as_its_values() {
    let dev = Device::Cpu;
    let mut next = stream(21);
    let data: Vec<f32> = (0..5 * 6).map(|_| next() as f32).collect();
    let x = Tensor::from_vec(data, (6, 5), &dev).unwrap().t().unwrap();
    assert!(!x.is_contiguous());
    let w: Vec<f32> = (0..4 * 6).map(|_| next() as f32).collect();
    let w = Tensor::from_vec(w, (4, 6), &dev).unwrap();
    let fused = Linear::new(w.clone(), None).with_implementation(Implementation::Fused);
    let composed = Linear::new(w, None).with_implementation(Implementation::Composed);
    let diff = max_abs_diff(&fused.forward(&x).unwrap(), &composed.forward(&x).unwrap());
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn bad_shapes_and_dtypes_are_errors_naming_them() {
    let dev = Device::Cpu;
    let w = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    let x = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
    for imp in [Implementation::Fused, Implementation::Auto] {
        let err = Linear::new(w.clone(), None)
            .with_implementation(imp)
            .forward(&x)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("last dimension is 5") && err.contains("takes 3"),
            "{imp:?}: {err}"
        );
    }
    let bad_bias = Linear::new(w.clone(), Some(Tensor::zeros(5, DType::F32, &dev).unwrap()))
        .with_implementation(Implementation::Fused);
    let err = bad_bias
        .forward(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias has shape [5], not (4,)"), "{err}");
    // Half precision: Fused refuses, Auto runs candle-nn's layer.
    let half = Linear::new(w.to_dtype(DType::BF16).unwrap(), None);
    let xh = Tensor::ones((2, 3), DType::BF16, &dev).unwrap();
    let err = half
        .clone()
        .with_implementation(Implementation::Fused)
        .forward(&xh)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32 or f64, on the CPU"), "{err}");
    assert_eq!(half.forward(&xh).unwrap().dims(), &[2, 4]);
    // Mixed dtypes: Fused refuses, Auto leaves the error to candle-nn's layer.
    let err = Linear::new(w, None)
        .with_implementation(Implementation::Fused)
        .forward(&Tensor::zeros((2, 3), DType::F64, &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("F64") && err.contains("F32 weight"), "{err}");
}

#[test]
fn the_layer_builders_match_candle_nn() {
    use candle_nn::VarMap;
    use rnn_core::init::seeded_var_builder;
    let dev = Device::Cpu;
    let (ours, theirs) = (VarMap::new(), VarMap::new());
    let a = rnn_core::linear::linear(6, 4, seeded_var_builder(&ours, 3, DType::F32, &dev)).unwrap();
    let b = candle_nn::linear(6, 4, seeded_var_builder(&theirs, 3, DType::F32, &dev)).unwrap();
    assert_eq!(max_abs_diff(a.weight(), b.weight()), 0.0);
    assert_eq!(max_abs_diff(a.bias().unwrap(), b.bias().unwrap()), 0.0);
    let nb = rnn_core::linear::linear_no_bias(
        6,
        4,
        seeded_var_builder(&ours, 3, DType::F32, &dev).pp("nb"),
    )
    .unwrap();
    assert!(nb.bias().is_none());
    let names: Vec<String> = ours.data().lock().unwrap().keys().cloned().collect();
    for name in ["weight", "bias", "nb.weight"] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn fused_equals_composed(
        rows in 1usize..70,
        inputs in 1usize..90,
        outputs in 1usize..90,
        bias in any::<bool>(),
        f32_ in any::<bool>(),
        seed in 1u64..1000,
    ) {
        check(&Case {
            lead: vec![rows],
            inputs,
            outputs,
            bias,
            dtype: if f32_ { DType::F32 } else { DType::F64 },
            seed,
        });
    }
}

//! Hand values, masking, gradients and the fused-vs-composed twin of the losses.

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
    let hand = ((1.0 + e + e * e).ln() - 2.0 + (e + 2.0).ln() - 1.0 + (2.0 * e.sqrt() + 1.0).ln()
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
                let s = masked_cross_entropy_sum_with(x.as_tensor(), &targets, Some(&mask), imp)
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

/// The fused linear layer + cross-entropy and its composed twin at a language model's scale
/// (logits of 64 x 3000, above the size whose buffers are recycled): equal losses and
/// gradients of `x`, the weight and the bias, three times in a row, so the later forwards run
/// on recycled logit buffers (NaN-filled in debug builds: an element left unwritten shows).
#[test]
fn fused_linear_cross_entropy_equals_the_composed_twin_on_recycled_buffers() {
    use rand::{Rng, SeedableRng};
    let dev = Device::Cpu;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (n, h, v) = (64usize, 40usize, 3000usize);
    let mut vals = |len: usize, scale: f64| -> Vec<f64> {
        (0..len)
            .map(|_| scale * (rng.random::<f64>() * 2.0 - 1.0))
            .collect()
    };
    let (xs, ws, bs) = (vals(n * h, 1.0), vals(v * h, 0.5), vals(v, 2.0));
    let ids: Vec<u32> = (0..n).map(|i| ((i * 977) % v) as u32).collect();
    let targets = Tensor::from_vec(ids, n, &dev).unwrap();
    for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 2e-5)] {
        let var = |data: &[f64], dims: &[usize]| {
            let t = Tensor::from_vec(data.to_vec(), dims, &dev).unwrap();
            Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
        };
        let (x, w, b) = (var(&xs, &[n, h]), var(&ws, &[v, h]), var(&bs, &[v]));
        let run = |imp| {
            let s = linear_cross_entropy_sum_with(
                x.as_tensor(),
                w.as_tensor(),
                Some(b.as_tensor()),
                &targets,
                None,
                imp,
            )
            .unwrap();
            let g = (s.mean().unwrap() * 2.0).unwrap().backward().unwrap();
            let flat = |t: &Var| {
                g.get(t)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            };
            (scalar(&s.sum), [flat(&x), flat(&w), flat(&b)])
        };
        let (cs, cg) = run(Implementation::Composed);
        for round in 0..3 {
            let (fs, fg) = run(Implementation::Fused);
            assert!(
                (fs - cs).abs() <= tol * cs.abs().max(1.0),
                "{dtype:?} round {round}: loss {fs} vs {cs}"
            );
            for (which, (a, c)) in ["x", "weight", "bias"].iter().zip(fg.iter().zip(&cg)) {
                let worst = a
                    .iter()
                    .zip(c)
                    .map(|(a, c)| (a - c).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst <= tol,
                    "{dtype:?} round {round}: gradient of {which} differs by {worst}"
                );
            }
        }
    }
}

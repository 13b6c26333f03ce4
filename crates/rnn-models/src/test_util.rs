//! Helpers shared by the models' unit tests.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::encoder::Input;

/// `(b, t)` uniform random token ids in `0..vocab`, seeded.
pub(crate) fn token_input(vocab: u32, b: usize, t: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..vocab)).collect();
    Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
}

/// `(b, t, f)` uniform random features in `[-1, 1)`, seeded.
pub(crate) fn feature_input(b: usize, t: usize, f: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let xs: Vec<f32> = (0..b * t * f)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(xs, (b, t, f), &Device::Cpu).unwrap()
}

/// A seeded `(b, t)` id or `(b, t, size)` feature batch for `input`.
pub(crate) fn make_input(input: &Input, b: usize, t: usize, seed: u64) -> Tensor {
    match *input {
        Input::Tokens { vocab_size, .. } => token_input(vocab_size as u32, b, t, seed),
        Input::Features { size, .. } => feature_input(b, t, size, seed),
    }
}

/// The largest absolute element-wise difference of two f32 tensors of one shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The gradients in `grads` of `varmap`'s parameters, by name in name order; a parameter
/// without a gradient is left out.
pub(crate) fn grads_by_name(varmap: &VarMap, grads: &GradStore) -> Vec<(String, Tensor)> {
    let mut g: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(name, v)| Some((name.clone(), grads.get(v)?.clone())))
        .collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    g
}

/// A loss and its gradients by name ([`grads_by_name`]).
pub(crate) type LossAndGrads = (f32, Vec<(String, Tensor)>);

/// Holds a fused loss path to its composed twin: the losses within 1e-5, the same parameters
/// with gradients, each gradient within 1e-5; and not one computation twice (some gradient
/// differs in its last bits, as the fused op rounds differently).
pub(crate) fn assert_fused_matches_composed(
    fused: &LossAndGrads,
    composed: &LossAndGrads,
    label: &str,
) {
    assert!(
        fused.1.iter().zip(&composed.1).any(|((_, a), (_, b))| {
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                != b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        }),
        "{label}: the fused and composed gradients are bitwise equal"
    );
    assert!(
        (fused.0 - composed.0).abs() < 1e-5,
        "{label}: {} vs {}",
        fused.0,
        composed.0
    );
    assert_eq!(fused.1.len(), composed.1.len(), "{label}");
    for ((name, a), (_, b)) in fused.1.iter().zip(&composed.1) {
        let d = max_abs_diff(a, b);
        assert!(d < 1e-5, "{label}: gradient of {name} differs by {d}");
    }
}

/// The value of a rank-0 f32 tensor.
pub(crate) fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

/// AdamW at learning rate `lr` without weight decay.
pub(crate) fn adamw(vars: Vec<Var>, lr: f64) -> AdamW {
    AdamW::new(
        vars,
        ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap()
}

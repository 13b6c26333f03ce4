//! Helpers shared by the models' unit tests.

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
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

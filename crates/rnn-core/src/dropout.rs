//! Seeded inverted dropout: every dropout mask of the workspace (the inter-layer dropout of
//! [`crate::Rnn`] and the models' [`SeededDropout`]) comes from [`mask`], so a run, and a run
//! resumed from a checkpoint that saved the call counters, draws the same masks. Candle's own
//! dropout uses the device RNG, which cannot be seeded on the CPU.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::Rng;

use crate::seed;

/// An inverted-dropout mask of `shape`: each element 0 with probability `p`, else `1 / (1 - p)`,
/// drawn in row-major order from [`seed::rng`]`(seed, call)`.
pub fn mask(
    p: f64,
    seed: u64,
    call: u64,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let mut rng = seed::rng(seed, call);
    let keep = (1.0 / (1.0 - p)) as f32;
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
}

/// Inverted dropout whose masks come from a seed and a call counter ([`mask`]), so a run (and a
/// run resumed from a checkpoint that saved [`SeededDropout::calls`]) draws the same masks.
#[derive(Debug)]
pub struct SeededDropout {
    p: f64,
    seed: u64,
    calls: AtomicU64,
}

impl Clone for SeededDropout {
    fn clone(&self) -> Self {
        Self {
            p: self.p,
            seed: self.seed,
            calls: AtomicU64::new(self.calls()),
        }
    }
}

impl SeededDropout {
    /// Dropout with probability `p` in `[0, 1)` and seed `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(candle_core::Error::Msg(format!(
                "dropout must be in [0, 1), got {p}"
            )));
        }
        Ok(Self {
            p,
            seed,
            calls: AtomicU64::new(0),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Reseeds and restarts the mask sequence.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.calls.store(0, Ordering::Relaxed);
    }

    /// How many masks have been drawn (save it in a checkpoint).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Restores the mask counter (see [`SeededDropout::calls`]).
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::Relaxed)
    }

    /// `xs` unchanged when `!train` or `p == 0`; otherwise each element is zeroed with
    /// probability `p` and the rest scaled by `1 / (1 - p)`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        xs.mul(&mask(
            self.p,
            self.seed,
            call,
            xs.shape(),
            xs.dtype(),
            xs.device(),
        )?)
    }
}

/// `forward_t(xs, train)` = [`SeededDropout::forward`]: candle-nn's train/eval protocol.
impl candle_nn::ModuleT for SeededDropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(xs, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_is_seeded_and_inverted() {
        let dev = Device::Cpu;
        let xs = Tensor::ones((4, 50), DType::F32, &dev).unwrap();
        let a = SeededDropout::new(0.5, 7).unwrap();
        let b = SeededDropout::new(0.5, 7).unwrap();
        let ya = a.forward(&xs, true).unwrap().to_vec2::<f32>().unwrap();
        let yb = b.forward(&xs, true).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(ya, yb);
        let flat: Vec<f32> = ya.concat();
        assert!(flat.iter().all(|&v| v == 0.0 || v == 2.0));
        let zeros = flat.iter().filter(|&&v| v == 0.0).count();
        assert!((60..140).contains(&zeros), "{zeros} of 200 dropped");
        // The next call draws a different mask; restoring the counter replays it.
        let second = a.forward(&xs, true).unwrap().to_vec2::<f32>().unwrap();
        assert_ne!(second, ya);
        b.set_calls(1);
        assert_eq!(
            b.forward(&xs, true).unwrap().to_vec2::<f32>().unwrap(),
            second
        );
        // Eval is the identity.
        assert_eq!(
            a.forward(&xs, false).unwrap().to_vec2::<f32>().unwrap(),
            xs.to_vec2::<f32>().unwrap()
        );
        assert!(SeededDropout::new(1.0, 0).is_err());
    }
}

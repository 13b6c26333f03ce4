//! Pieces every model shares: seeded dropout, padding masks from lengths, a small MLP head and
//! argument checks that name the model, the argument and the shape at fault.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A clear argument error: `"{model}: {message}"`.
pub fn invalid(model: &str, message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{model}: {message}"))
}

/// Inverted dropout whose masks come from a seeded generator and a call counter, so a run (and a
/// run resumed from a checkpoint that saved [`SeededDropout::calls`]) draws the same masks.
/// Candle's own dropout uses the device RNG, which cannot be seeded on the CPU.
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
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(call);
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let values: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if rng.random::<f64>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(values, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs.mul(&mask)
    }
}

/// Models whose training forward draws random numbers (dropout). The trainer seeds them at the
/// start of a run and saves / restores the counters in checkpoints, so a resumed run draws the
/// same masks as an uninterrupted one.
pub trait Stochastic {
    /// Reseeds every random source of the model and restarts its sequences.
    fn set_seed(&mut self, seed: u64);
    /// The position of every random source (e.g. [`SeededDropout::calls`] and
    /// [`rnn_core::Rnn::dropout_calls`]), in a fixed order.
    fn rng_counters(&self) -> Vec<u64>;
    /// Restores what [`Stochastic::rng_counters`] returned; an error if the count differs.
    fn set_rng_counters(&self, counters: &[u64]) -> Result<()>;
}

/// Checks `counters` has `expected` entries (for [`Stochastic::set_rng_counters`]).
pub fn check_counters(model: &str, counters: &[u64], expected: usize) -> Result<()> {
    if counters.len() != expected {
        return Err(invalid(
            model,
            format!(
                "expected {expected} random-number counters, got {} (checkpoint from another model?)",
                counters.len()
            ),
        ));
    }
    Ok(())
}

/// Checks `lengths` against a batch of `batch` sequences of at most `max_len` steps: one length
/// per sequence, each in `1..=max_len`.
pub fn check_lengths(model: &str, lengths: &[usize], batch: usize, max_len: usize) -> Result<()> {
    if lengths.len() != batch {
        return Err(invalid(
            model,
            format!(
                "`lengths` has {} entries but the batch has {batch} sequences",
                lengths.len()
            ),
        ));
    }
    if let Some((b, &l)) = lengths
        .iter()
        .enumerate()
        .find(|(_, &l)| l == 0 || l > max_len)
    {
        return Err(invalid(
            model,
            format!("`lengths[{b}]` = {l} must be in 1..={max_len} (the padded length)"),
        ));
    }
    Ok(())
}

/// A `(batch, max_len)` mask of `dtype`: 1 at valid steps (`t < lengths[b]`), 0 at padding.
/// With `lengths = None` every step is valid.
pub fn length_mask(
    lengths: Option<&[usize]>,
    batch: usize,
    max_len: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let values: Vec<f32> = match lengths {
        Some(lengths) => lengths
            .iter()
            .flat_map(|&l| (0..max_len).map(move |t| if t < l { 1.0 } else { 0.0 }))
            .collect(),
        None => vec![1.0; batch * max_len],
    };
    Tensor::from_vec(values, (batch, max_len), device)?.to_dtype(dtype)
}

/// Whether checks of tensor *values* that must read the tensor back to the host (token ids
/// against the vocabulary, class targets, end tokens) run for a tensor on `device`. They run on
/// the CPU, where reading is free; on CUDA and Metal they are skipped, because each would stall
/// the device once per forward pass. Shapes and dtypes are checked everywhere. On an
/// accelerator, validate ids on the host before uploading them (the `rnn` command's data
/// pipeline builds every id from its vocabulary, so they are in range by construction).
pub fn value_checks_on(device: &candle_core::Device) -> bool {
    device.is_cpu()
}

/// Checks that `ids` is a `(batch, seq)` tensor of `u32` token ids.
pub fn check_ids(model: &str, name: &str, ids: &Tensor) -> Result<(usize, usize)> {
    if ids.dtype() != DType::U32 {
        return Err(invalid(
            model,
            format!(
                "`{name}` must hold u32 token ids, got dtype {:?}",
                ids.dtype()
            ),
        ));
    }
    match ids.dims() {
        &[b, t] if b > 0 && t > 0 => Ok((b, t)),
        _ => Err(invalid(
            model,
            format!(
                "`{name}` must have shape (batch, seq) with both > 0, got {:?}",
                ids.shape()
            ),
        )),
    }
}

/// Activation of an [`Mlp`]'s hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// tanh
    #[default]
    Tanh,
    /// max(0, x)
    Relu,
}

/// A multi-layer perceptron head: `hidden.len()` hidden layers with an activation, then a linear
/// output layer. Parameters `layers.{i}.weight` / `layers.{i}.bias` (PyTorch `nn.Sequential`
/// numbering without the activation slots).
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
}

impl Mlp {
    /// `input -> hidden[0] -> ... -> output`.
    pub fn new(
        input: usize,
        hidden: &[usize],
        output: usize,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut sizes = vec![input];
        sizes.extend_from_slice(hidden);
        sizes.push(output);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, activation })
    }

    /// Applies the head to the last dimension of `xs`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = match self.activation {
                    Activation::Tanh => h.tanh()?,
                    Activation::Relu => h.relu()?,
                };
            }
        }
        Ok(h)
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

    #[test]
    fn masks_and_length_checks() {
        let dev = Device::Cpu;
        let m = length_mask(Some(&[2, 3]), 2, 3, DType::F32, &dev).unwrap();
        assert_eq!(
            m.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0]]
        );
        let e = check_lengths("M", &[2, 4], 2, 3).unwrap_err().to_string();
        assert!(e.contains("lengths[1]") && e.contains("4"), "{e}");
        let e = check_lengths("M", &[2], 2, 3).unwrap_err().to_string();
        assert!(e.contains("1 entries"), "{e}");
    }
}

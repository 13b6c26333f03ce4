//! Pieces every model shares: padding masks from lengths, a small MLP head, argument checks that
//! name the model, the argument and the shape at fault, and (re-exported from [`rnn_core::dropout`]
//! and [`rnn_core::seed`]) the seeded dropout and the seed/counter protocol.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Module, VarBuilder};
use rnn_core::linear::{linear, Linear};
use serde::{Deserialize, Serialize};

/// A clear argument error: `"{model}: {message}"`.
pub fn invalid(model: &str, message: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("{model}: {message}"))
}

pub use rnn_core::dropout::SeededDropout;
pub use rnn_core::seed::{check_counters, derive_seed, splitmix64, Stochastic};

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
            .map(|(i, w)| linear(w[0], w[1], vb.pp(format!("layers.{i}"))))
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
                    Activation::Tanh => rnn_core::activation::tanh(&h)?,
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

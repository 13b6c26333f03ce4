//! `RnnCell`: one step of an Elman network, as `torch.nn.RNNCell`.

use super::params::CellParams;
use super::step::checked_step;
use super::CellConfig;
use crate::config::Mode;
use crate::state::RnnState;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// Non-linearity of a vanilla RNN cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    Tanh,
    /// `relu`.
    Relu,
}

/// A single vanilla RNN cell: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`.
///
/// ```
/// use std::collections::HashMap;
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarBuilder;
/// use rnn_core::{CellConfig, Nonlinearity, RnnCell};
///
/// # fn main() -> candle_core::Result<()> {
/// let dev = Device::Cpu;
/// // Weights under PyTorch's `nn.RNNCell` names: W_ih = I, W_hh = I / 2, b_ih = 0, b_hh = -1.
/// let weights = HashMap::from([
///     ("weight_ih".to_string(), Tensor::eye(2, DType::F32, &dev)?),
///     ("weight_hh".to_string(), (Tensor::eye(2, DType::F32, &dev)? * 0.5)?),
///     ("bias_ih".to_string(), Tensor::zeros(2, DType::F32, &dev)?),
///     ("bias_hh".to_string(), Tensor::new(&[-1f32, -1.0], &dev)?),
/// ]);
/// let cfg = CellConfig::new(2, 2).with_nonlinearity(Nonlinearity::Relu);
/// let cell = RnnCell::new(&cfg, VarBuilder::from_tensors(weights, DType::F32, &dev))?;
///
/// let x = Tensor::new(&[[3f32, 0.5]], &dev)?; // (batch, input)
/// let h1 = cell.step(&x, None)?; // relu(x - 1) = [2, 0]
/// assert_eq!(h1.h.to_vec2::<f32>()?, [[2.0, 0.0]]);
/// let h2 = cell.step(&x, Some(&h1))?; // relu(x + h1 / 2 - 1) = [3, 0]
/// assert_eq!(h2.h.to_vec2::<f32>()?, [[3.0, 0.0]]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RnnCell {
    params: CellParams,
}

impl RnnCell {
    /// Loads the cell's weights from `vb` (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`), or
    /// creates them with PyTorch's default init when `vb` is backed by a `VarMap`.
    pub fn new(cfg: &CellConfig, vb: VarBuilder) -> Result<Self> {
        let (input_size, hidden_size) = (cfg.input_size, cfg.hidden_size);
        if input_size == 0 || hidden_size == 0 {
            candle_core::bail!(
                "RnnCell::new: input_size and hidden_size must be > 0, got {input_size} and {hidden_size}"
            );
        }
        if cfg.layer_norm {
            candle_core::bail!("RnnCell::new: layer_norm is supported for LSTM and GRU cells only");
        }
        let mode = match cfg.nonlinearity {
            Nonlinearity::Tanh => Mode::RnnTanh,
            Nonlinearity::Relu => Mode::RnnRelu,
        };
        let params = CellParams::load(mode, input_size, hidden_size, 0, cfg.bias, "", &vb)?;
        Ok(Self { params })
    }

    /// The former positional constructor.
    #[deprecated(
        since = "0.2.0",
        note = "use `RnnCell::new(&CellConfig::new(input_size, hidden_size).with_nonlinearity(nonlinearity).with_bias(bias), vb)`"
    )]
    pub fn from_sizes(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = CellConfig::new(input_size, hidden_size)
            .with_nonlinearity(nonlinearity)
            .with_bias(bias);
        Self::new(&cfg, vb)
    }

    /// One step.
    ///
    /// # Shapes
    /// - `x_t`: `(batch, input_size)` or unbatched `(input_size)`
    /// - `state`: `h (batch, hidden_size)`; `None` means zeros
    /// - returns the new state, same shape
    pub fn step(&self, x_t: &Tensor, state: Option<&RnnState>) -> Result<RnnState> {
        checked_step("RnnCell", &self.params, x_t, state)
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.params.hidden_size
    }

    /// Input size.
    pub fn input_size(&self) -> usize {
        self.params.input_size
    }
}

//! `CellConfig`: the sizes and options of a single cell, as the arguments of `torch.nn.LSTMCell`,
//! `GRUCell` and `RNNCell`.

use serde::{Deserialize, Serialize};

use super::Nonlinearity;

/// What [`crate::LstmCell::new`], [`crate::GruCell::new`] and [`crate::RnnCell::new`] build:
/// `CellConfig::new(input_size, hidden_size)` is PyTorch's `nn.LSTMCell(input_size,
/// hidden_size)`, with `bias = True` and, for `RnnCell`, `nonlinearity = "tanh"`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::VarMap;
/// use rnn_core::{init::seeded_var_builder, CellConfig, LstmCell};
///
/// # fn main() -> candle_core::Result<()> {
/// let varmap = VarMap::new();
/// let cell = LstmCell::new(
///     &CellConfig::new(8, 16),
///     seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
/// )?;
/// let x = Tensor::zeros((4, 8), DType::F32, &Device::Cpu)?;
/// let state = cell.step(&x, None)?;
/// assert_eq!(state.h.dims(), &[4, 16]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellConfig {
    /// Features of the input.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Whether the cell has `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// The activation of an `RnnCell` (default tanh); LSTM and GRU cells ignore it.
    pub nonlinearity: Nonlinearity,
    /// LSTM and GRU cells only: layer normalisation with the `layernorm_*` parameters, as
    /// [`crate::RnnConfig::layer_norm`] describes (default false; `RnnCell::new` refuses it).
    #[serde(default)]
    pub layer_norm: bool,
}

impl CellConfig {
    /// A cell from `input_size` to `hidden_size` features, with biases and tanh.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        Self {
            input_size,
            hidden_size,
            bias: true,
            nonlinearity: Nonlinearity::Tanh,
            layer_norm: false,
        }
    }

    /// With or without the two bias vectors.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// The activation of an `RnnCell`.
    pub fn with_nonlinearity(mut self, nonlinearity: Nonlinearity) -> Self {
        self.nonlinearity = nonlinearity;
        self
    }

    /// With or without layer normalisation (LSTM and GRU cells).
    pub fn with_layer_norm(mut self, layer_norm: bool) -> Self {
        self.layer_norm = layer_norm;
        self
    }
}

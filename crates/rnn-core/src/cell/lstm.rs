//! `LstmCell`: one step of Lstm, as `torch.nn.LSTMCell` (gate order i, f, g, o).

use super::params::CellParams;
use super::step::checked_step;
use super::CellConfig;
use crate::config::Mode;
use crate::state::RnnState;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// A single Lstm cell; weights `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` under `vb` (and
/// `layernorm_{x,h,c}_{weight,bias}` with [`CellConfig::with_layer_norm`]).
///
/// Stepping a cell through a sequence gives what the one-layer [`crate::Rnn`] gives on the whole
/// sequence, with the same weights: the cell's names are the layer's without the `_l0` suffix.
///
/// ```
/// use std::collections::HashMap;
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use rnn_core::{init::seeded_var_builder, CellConfig, LstmCell, Mode, Rnn, RnnConfig};
///
/// # fn main() -> candle_core::Result<()> {
/// let dev = Device::Cpu;
/// let varmap = VarMap::new();
/// let layer = Rnn::new(
///     &RnnConfig::new(Mode::Lstm, 3, 5),
///     seeded_var_builder(&varmap, 0, DType::F32, &dev),
/// )?;
/// // `weight_ih_l0` -> `weight_ih`, and so on.
/// let weights: HashMap<String, Tensor> = layer
///     .named_parameters()
///     .into_iter()
///     .map(|(name, t)| (name.trim_end_matches("_l0").to_string(), t))
///     .collect();
/// let cell = LstmCell::new(
///     &CellConfig::new(3, 5),
///     VarBuilder::from_tensors(weights, DType::F32, &dev),
/// )?;
///
/// let xs = Tensor::randn(0f32, 1.0, (2, 4, 3), &dev)?; // (batch, seq_len, input)
/// let mut state = cell.step(&xs.narrow(1, 0, 1)?.squeeze(1)?, None)?; // zero initial state
/// for t in 1..4 {
///     state = cell.step(&xs.narrow(1, t, 1)?.squeeze(1)?, Some(&state))?;
/// }
/// assert_eq!(state.h.dims(), &[2, 5]); // (batch, hidden)
/// assert!(state.c.is_some()); // an LSTM state carries the cell c too
///
/// let (_, last) = layer.forward_with_state(&xs, None)?; // h_n: (1, batch, hidden)
/// let gap = (state.h - last.h.squeeze(0)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(gap < 1e-5, "cell and layer differ by {gap}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LstmCell {
    params: CellParams,
}

impl LstmCell {
    /// Loads the cell's weights from `vb`, or creates them with PyTorch's default init
    /// U(-1/sqrt(hidden), 1/sqrt(hidden)) when `vb` is backed by a `VarMap`.
    pub fn new(cfg: &CellConfig, vb: VarBuilder) -> Result<Self> {
        let (input_size, hidden_size) = (cfg.input_size, cfg.hidden_size);
        if input_size == 0 || hidden_size == 0 {
            candle_core::bail!(
                "LstmCell::new: input_size and hidden_size must be > 0, got {input_size} and {hidden_size}"
            );
        }
        let params = CellParams::load(Mode::Lstm, input_size, hidden_size, 0, cfg.bias, "", &vb)?;
        let params = if cfg.layer_norm {
            params.with_layer_norm("", &vb)?
        } else {
            params
        };
        Ok(Self { params })
    }

    /// The former positional constructor.
    #[deprecated(
        since = "0.2.0",
        note = "use `LstmCell::new(&CellConfig::new(input_size, hidden_size).with_bias(bias), vb)`"
    )]
    pub fn from_sizes(
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::new(
            &CellConfig::new(input_size, hidden_size).with_bias(bias),
            vb,
        )
    }

    /// One step.
    ///
    /// # Shapes
    /// - `x_t`: `(batch, input_size)` or unbatched `(input_size)`
    /// - `state`: `h (batch, hidden_size)`, `c (batch, hidden_size)`; `None` means zeros
    /// - returns the new state, same shapes
    pub fn step(&self, x_t: &Tensor, state: Option<&RnnState>) -> Result<RnnState> {
        checked_step("LstmCell", &self.params, x_t, state)
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.params.hidden_size
    }

    /// Input size.
    pub fn input_size(&self) -> usize {
        self.params.input_size
    }

    pub(super) fn params(&self) -> &CellParams {
        &self.params
    }
}

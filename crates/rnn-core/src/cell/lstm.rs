//! `LstmCell`: one step of Lstm, as `torch.nn.LSTMCell` (gate order i, f, g, o).

use super::params::CellParams;
use super::step::checked_step;
use super::CellConfig;
use crate::config::Mode;
use crate::state::RnnState;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// A single Lstm cell; weights `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` under `vb`.
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

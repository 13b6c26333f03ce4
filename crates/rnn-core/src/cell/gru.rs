//! `GruCell`: one step of Gru, as `torch.nn.GRUCell` (gate order r, z, n).

use super::params::CellParams;
use super::step::checked_step;
use super::CellConfig;
use crate::config::Mode;
use crate::state::RnnState;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// A single Gru cell; weights `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` under `vb` (and
/// `layernorm_{x,h}_{weight,bias}` with [`CellConfig::with_layer_norm`]).
///
/// One step computes, as `torch.nn.GRUCell`,
/// `r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)`, `z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)`,
/// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))` and `h' = (1 - z) * n + z * h`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use rnn_core::{init::seeded_var_builder, CellConfig, GruCell, RnnState};
///
/// # fn main() -> candle_core::Result<()> {
/// let dev = Device::Cpu;
/// let varmap = VarMap::new();
/// let cell = GruCell::new(&CellConfig::new(4, 6), seeded_var_builder(&varmap, 0, DType::F32, &dev))?;
/// let x = Tensor::randn(0f32, 1.0, (3, 4), &dev)?; // (batch, input)
/// let state = cell.step(&x, None)?; // None: a zero initial state
/// assert_eq!(state.h.dims(), &[3, 6]); // (batch, hidden)
/// assert!(state.c.is_none()); // a GRU state is h alone
/// // PyTorch's layout: `weight_ih` stacks the r, z and n blocks, (3 * hidden, input).
/// let weight_ih = varmap.data().lock().unwrap()["weight_ih"].as_tensor().clone();
/// assert_eq!(weight_ih.dims(), &[18, 4]);
///
/// // With every weight and bias zero, r = z = 1/2 and n = tanh(0) = 0, so h' = h / 2.
/// let zero = GruCell::new(&CellConfig::new(4, 2), VarBuilder::zeros(DType::F32, &dev))?;
/// let h = Tensor::new(&[[1f32, -4.0]], &dev)?;
/// let next = zero.step(&Tensor::ones((1, 4), DType::F32, &dev)?, Some(&RnnState::new(h, None)))?;
/// assert_eq!(next.h.to_vec2::<f32>()?, [[0.5, -2.0]]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GruCell {
    params: CellParams,
}

impl GruCell {
    /// Loads the cell's weights from `vb`, or creates them with PyTorch's default init
    /// U(-1/sqrt(hidden), 1/sqrt(hidden)) when `vb` is backed by a `VarMap`.
    pub fn new(cfg: &CellConfig, vb: VarBuilder) -> Result<Self> {
        let (input_size, hidden_size) = (cfg.input_size, cfg.hidden_size);
        if input_size == 0 || hidden_size == 0 {
            candle_core::bail!(
                "GruCell::new: input_size and hidden_size must be > 0, got {input_size} and {hidden_size}"
            );
        }
        let params = CellParams::load(Mode::Gru, input_size, hidden_size, 0, cfg.bias, "", &vb)?;
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
        note = "use `GruCell::new(&CellConfig::new(input_size, hidden_size).with_bias(bias), vb)`"
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
    /// - `state`: `h (batch, hidden_size)`; `None` means zeros
    /// - returns the new state, same shapes
    pub fn step(&self, x_t: &Tensor, state: Option<&RnnState>) -> Result<RnnState> {
        checked_step("GruCell", &self.params, x_t, state)
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

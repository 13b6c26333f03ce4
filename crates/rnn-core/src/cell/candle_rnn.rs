//! The cells as [`candle_nn::RNN`]s: `LstmCell` with candle's [`LSTMState`], `GruCell` with
//! [`GRUState`], so code written against candle-nn's trait (`zero_state`, `step`, `seq`,
//! `states_to_tensor`) runs on them unchanged.
//!
//! The cells' own `step(x, Option<&RnnState>)` stays the inherent method; call the trait's as
//! `RNN::step(&cell, &x, &state)` or through a generic `R: RNN`.

use candle_core::{Result, Tensor};
use candle_nn::rnn::{GRUState, LSTMState};
use candle_nn::RNN;

use super::params::CellParams;
use super::{GruCell, LstmCell};
use crate::state::RnnState;

/// Zeros `(batch, hidden_size)` in the weights' dtype and device.
fn zeros(params: &CellParams, batch: usize) -> Result<Tensor> {
    Tensor::zeros(
        (batch, params.hidden_size),
        params.weight_hh.dtype(),
        params.weight_hh.device(),
    )
}

impl RNN for LstmCell {
    type State = LSTMState;

    fn zero_state(&self, batch_dim: usize) -> Result<LSTMState> {
        let z = zeros(self.params(), batch_dim)?;
        Ok(LSTMState::new(z.clone(), z))
    }

    fn step(&self, input: &Tensor, state: &LSTMState) -> Result<LSTMState> {
        let s = RnnState::new(state.h.clone(), Some(state.c.clone()));
        let next = LstmCell::step(self, input, Some(&s))?;
        let c = next.c.ok_or_else(|| {
            candle_core::Error::Msg("LstmCell::step returned no cell state".into())
        })?;
        Ok(LSTMState::new(next.h, c))
    }

    /// The hidden states stacked: `(batch, seq_len, hidden_size)`, as candle-nn's `LSTM`.
    fn states_to_tensor(&self, states: &[LSTMState]) -> Result<Tensor> {
        Tensor::stack(&states.iter().map(|s| &s.h).collect::<Vec<_>>(), 1)
    }
}

impl RNN for GruCell {
    type State = GRUState;

    fn zero_state(&self, batch_dim: usize) -> Result<GRUState> {
        Ok(GRUState {
            h: zeros(self.params(), batch_dim)?,
        })
    }

    fn step(&self, input: &Tensor, state: &GRUState) -> Result<GRUState> {
        let s = RnnState::new(state.h.clone(), None);
        Ok(GRUState {
            h: GruCell::step(self, input, Some(&s))?.h,
        })
    }

    /// The hidden states concatenated: `(batch, seq_len * hidden_size)`, exactly as candle-nn's
    /// `GRU` does (unlike its `LSTM`), so code written for one runs on the other unchanged.
    fn states_to_tensor(&self, states: &[GRUState]) -> Result<Tensor> {
        Tensor::cat(&states.iter().map(|s| &s.h).collect::<Vec<_>>(), 1)
    }
}

//! The composed recurrence: one layer-direction over a sequence, step by step, in plain Candle
//! ops (device-generic, autograd through Candle). It is the reference twin of the fused ops.

use crate::cell::params::CellParams;
use crate::regularize::{masked_step, StateMasks};
use crate::state::RnnState;
use candle_core::{Device, Result, Tensor};

/// Per-step validity masks of a right-padded batch: `None` for a step where every sequence is
/// still running, else a `(batch, 1)` u8 mask (1 = valid).
pub(crate) struct StepMasks {
    masks: Vec<Option<Tensor>>,
}

impl StepMasks {
    /// No padding: every step of every sequence is valid.
    pub fn full(seq_len: usize) -> Self {
        Self {
            masks: vec![None; seq_len],
        }
    }

    /// Masks for `lengths` (already checked: one per row, each in 1..=seq_len).
    pub fn new(lengths: &[usize], seq_len: usize, device: &Device) -> Result<Self> {
        let batch = lengths.len();
        let masks = (0..seq_len)
            .map(|t| {
                if lengths.iter().all(|&len| len > t) {
                    return Ok(None);
                }
                let valid: Vec<u8> = lengths.iter().map(|&len| u8::from(len > t)).collect();
                Tensor::from_vec(valid, (batch, 1), device).map(Some)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { masks })
    }

    /// The mask of step `t`.
    pub fn get(&self, t: usize) -> Option<&Tensor> {
        self.masks[t].as_ref()
    }
}

/// The zero state of one layer-direction for `batch` rows, dtype and device of `like`.
pub(crate) fn zero_cell_state(cell: &CellParams, batch: usize, like: &Tensor) -> Result<RnnState> {
    let h = Tensor::zeros((batch, cell.state_size()), like.dtype(), like.device())?;
    let c = if cell.mode.has_cell_state() {
        Some(Tensor::zeros(
            (batch, cell.hidden_size),
            like.dtype(),
            like.device(),
        )?)
    } else {
        None
    };
    Ok(RnnState::new(h, c))
}

/// `mask ? on_valid : on_padded`, with `mask (batch, 1)` broadcast over features.
fn select(mask: &Tensor, on_valid: &Tensor, on_padded: &Tensor) -> Result<Tensor> {
    mask.broadcast_as(on_valid.shape())?
        .where_cond(on_valid, on_padded)
}

/// Runs `cell` over the time-major `inputs` (each `(batch, input)`) from `init` (`h (batch, state)`,
/// `c (batch, hidden)`), forward or reversed. Steps past a sequence's length leave its state as it
/// was and output zeros, so a reversed pass starts at each sequence's own last step. `reg` holds
/// the recurrent-dropout and zoneout masks (`crate::regularize`), empty for the plain cell.
/// Returns the output of every step (in time order) and the final state.
pub(crate) fn run_direction(
    cell: &CellParams,
    inputs: &[Tensor],
    init: &RnnState,
    masks: &StepMasks,
    reverse: bool,
    reg: &StateMasks,
) -> Result<(Vec<Tensor>, RnnState)> {
    let seq_len = inputs.len();
    let mut h = init.h.clone();
    let mut c = init.c.clone();
    let mut outputs: Vec<Option<Tensor>> = vec![None; seq_len];
    let zeros = masks
        .masks
        .iter()
        .any(Option::is_some)
        .then(|| h.zeros_like())
        .transpose()?;
    for step in 0..seq_len {
        let t = if reverse { seq_len - 1 - step } else { step };
        let (h_new, c_new) = if reg.is_empty() {
            cell.step(&inputs[t], &h, c.as_ref())?
        } else {
            masked_step(cell, reg, t, &inputs[t], &h, c.as_ref())?
        };
        match (masks.get(t), &zeros) {
            (Some(mask), Some(zeros)) => {
                outputs[t] = Some(select(mask, &h_new, zeros)?);
                h = select(mask, &h_new, &h)?;
                c = match (c_new, &c) {
                    (Some(c_new), Some(c_old)) => Some(select(mask, &c_new, c_old)?),
                    _ => None,
                };
            }
            _ => {
                outputs[t] = Some(h_new.clone());
                h = h_new;
                c = c_new;
            }
        }
    }
    let outputs = outputs.into_iter().flatten().collect();
    Ok((outputs, RnnState::new(h, c)))
}

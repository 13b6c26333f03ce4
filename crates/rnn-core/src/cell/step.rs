//! The checks and the one step every cell's `step` runs.

use super::params::CellParams;
use crate::check::{check_same_dtype_device, check_shape};
use crate::state::RnnState;
use candle_core::{bail, Result, Tensor};

/// Shared body of the three cells' `step`: checks `x_t` and `state` and runs one step.
/// Accepts `x_t (batch, input)` or unbatched `(input)` with a matching state.
pub(super) fn checked_step(
    what: &str,
    params: &CellParams,
    x_t: &Tensor,
    state: Option<&RnnState>,
) -> Result<RnnState> {
    let unbatched = match x_t.rank() {
        1 => true,
        2 => false,
        r => bail!(
            "{what}::step: x_t must be (batch, input_size) or (input_size), got rank {r} shape {:?}",
            x_t.dims()
        ),
    };
    let x = if unbatched {
        x_t.unsqueeze(0)?
    } else {
        x_t.clone()
    };
    let batch = x.dims()[0];
    check_shape(
        &format!("{what}::step x_t"),
        &x,
        &[batch, params.input_size],
    )?;
    check_same_dtype_device(
        &format!("{what}::step x_t"),
        &x,
        "weight_ih",
        &params.weight_ih,
    )?;
    let state_size = params.state_size();
    let lift = |t: &Tensor| {
        if unbatched {
            t.unsqueeze(0)
        } else {
            Ok(t.clone())
        }
    };
    let (h, c) = match state {
        Some(s) => {
            let h = lift(&s.h)?;
            check_shape(&format!("{what}::step state.h"), &h, &[batch, state_size])?;
            check_same_dtype_device(&format!("{what}::step state.h"), &h, "x_t", &x)?;
            let c = match (&s.c, params.mode.has_cell_state()) {
                (Some(c), true) => {
                    let c = lift(c)?;
                    check_shape(
                        &format!("{what}::step state.c"),
                        &c,
                        &[batch, params.hidden_size],
                    )?;
                    check_same_dtype_device(&format!("{what}::step state.c"), &c, "x_t", &x)?;
                    Some(c)
                }
                (None, true) => bail!("{what}::step: state.c is required for an LSTM cell"),
                (Some(_), false) => bail!("{what}::step: state.c is only for LSTM cells, got Some"),
                (None, false) => None,
            };
            (h, c)
        }
        None => {
            let zero = crate::recurrence::zero_cell_state(params, batch, &x)?;
            (zero.h, zero.c)
        }
    };
    let (h, c) = params.step(&x, &h, c.as_ref())?;
    if unbatched {
        Ok(RnnState::new(
            h.squeeze(0)?,
            c.map(|c| c.squeeze(0)).transpose()?,
        ))
    } else {
        Ok(RnnState::new(h, c))
    }
}

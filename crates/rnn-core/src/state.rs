//! Recurrent state carried between steps and between calls (truncated BPTT).

use candle_core::{DType, Device, Result, Tensor};

/// The state of a recurrent layer or cell.
///
/// For a layer ([`crate::Rnn`]): `h` is `(num_layers * num_directions, batch, state_size)` and `c`
/// is `(num_layers * num_directions, batch, hidden_size)`, LSTM only, ordered layer by layer with
/// the forward direction first, as PyTorch's `h_n` / `c_n`. For unbatched input the batch axis is
/// absent. For a single cell ([`crate::LstmCell`] and friends): `h` is `(batch, state_size)`.
#[derive(Debug, Clone)]
pub struct RnnState {
    /// Hidden state.
    pub h: Tensor,
    /// Cell state, `Some` for LSTM only.
    pub c: Option<Tensor>,
}

impl RnnState {
    /// Wraps `h` and an optional `c`.
    pub fn new(h: Tensor, c: Option<Tensor>) -> Self {
        Self { h, c }
    }

    /// The same values cut from the autograd graph: gradients stop here. Carry a detached state
    /// from one window to the next for truncated backpropagation through time.
    pub fn detach(&self) -> Self {
        Self {
            h: self.h.detach(),
            c: self.c.as_ref().map(|c| c.detach()),
        }
    }

    /// The same state on another device or dtype.
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        let move_one = |t: &Tensor| t.to_device(device)?.to_dtype(dtype);
        Ok(Self {
            h: move_one(&self.h)?,
            c: self.c.as_ref().map(move_one).transpose()?,
        })
    }

    /// Rows `index` of the layer axis (axis 0) of `h` and `c`: the state of one layer-direction.
    pub fn layer(&self, index: usize) -> Result<Self> {
        Ok(Self {
            h: self.h.get(index)?,
            c: self.c.as_ref().map(|c| c.get(index)).transpose()?,
        })
    }

    /// Stacks per-layer-direction states (each `(batch, feature)`) along a new axis 0.
    pub fn stack(states: &[RnnState]) -> Result<Self> {
        let hs: Vec<&Tensor> = states.iter().map(|s| &s.h).collect();
        let h = Tensor::stack(&hs, 0)?;
        let c = if states.iter().all(|s| s.c.is_some()) && !states.is_empty() {
            let cs: Vec<&Tensor> = states.iter().filter_map(|s| s.c.as_ref()).collect();
            Some(Tensor::stack(&cs, 0)?)
        } else {
            None
        };
        Ok(Self { h, c })
    }

    /// Selects batch rows `indices` (axis `batch_axis`) of `h` and `c`, e.g. to reorder beams.
    pub fn index_select(&self, indices: &Tensor, batch_axis: usize) -> Result<Self> {
        Ok(Self {
            h: self.h.index_select(indices, batch_axis)?,
            c: self
                .c
                .as_ref()
                .map(|c| c.index_select(indices, batch_axis))
                .transpose()?,
        })
    }
}

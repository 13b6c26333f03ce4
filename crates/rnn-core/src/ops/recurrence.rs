//! The fused recurrence op's description ([`FusedRecurrence`]): what the CPU path (`fused`) and
//! the CUDA path (`cuda`) both run.

use super::problem::{ParamSizes, Problem};
use crate::config::Mode;
use std::any::Any;
use std::sync::Mutex;

/// The op: one layer-direction over the whole sequence. Arguments: `xs` (rows, input) in the
/// problem's layout, `state0 = [h0 | c0]` flat, `params` packed flat. Result:
/// `[ys (rows, state) | h_n (batch, state) | c_n (batch, hidden)]` flat.
pub(crate) struct FusedRecurrence {
    pub(crate) mode: Mode,
    pub(crate) problem: Problem,
    pub(crate) sizes: ParamSizes,
    /// Activations saved by the forward for the backward (typed `LstmSaved<T>` etc.).
    pub(crate) saved: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    pub(crate) save: bool,
    /// Recurrent-dropout and zoneout masks (`masks::OwnedMasks<T>`), `None` for the plain cell.
    pub(crate) masks: Option<Box<dyn Any + Send + Sync>>,
}

impl FusedRecurrence {
    /// The kernels' view of the masks (none when the op has none or of another dtype).
    pub(crate) fn kernel_masks<T: super::math::Float>(&self) -> super::masks::KernelMasks<'_, T> {
        self.masks
            .as_ref()
            .and_then(|m| m.downcast_ref::<super::masks::OwnedMasks<T>>())
            .map_or_else(super::masks::KernelMasks::none, |m| m.view())
    }

    pub(crate) fn out_len(&self) -> usize {
        let p = &self.problem;
        let c = if self.mode == Mode::Lstm {
            p.batch * p.hidden
        } else {
            0
        };
        p.rows() * p.state + p.batch * p.state + c
    }
}

//! Serde defaults shared by the model configs, named in `#[serde(default = "...")]`.

use rnn_core::Mode;

/// `1`: one recurrent layer, one step.
pub(crate) fn one() -> usize {
    1
}

/// `true`.
pub(crate) fn yes() -> bool {
    true
}

/// The default cell, [`Mode::Lstm`].
pub(crate) fn lstm() -> Mode {
    Mode::Lstm
}

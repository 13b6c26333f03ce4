//! The random-source counters of a model with one [`SeededDropout`] and one [`Rnn`] (its
//! inter-layer dropout): the language model, the generator and the forecaster. Each model keeps
//! its own `set_seed`, whose seed formulas saved runs depend on.

use candle_core::Result;
use rnn_core::Rnn;

use crate::common::{check_counters, SeededDropout};

/// `[dropout calls, recurrent-layer dropout calls]`.
pub(crate) fn counters(dropout: &SeededDropout, rnn: &Rnn) -> Vec<u64> {
    vec![dropout.calls(), rnn.dropout_calls()]
}

/// Restores what [`counters`] returned; errors start with `model`.
pub(crate) fn set_counters(
    model: &str,
    dropout: &SeededDropout,
    rnn: &Rnn,
    counters: &[u64],
) -> Result<()> {
    check_counters(model, counters, 2)?;
    dropout.set_calls(counters[0]);
    rnn.set_dropout_calls(counters[1]);
    Ok(())
}

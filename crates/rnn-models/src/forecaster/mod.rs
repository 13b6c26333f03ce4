//! Numeric time-series forecasting: [`Forecaster`] reads a multivariate series `(B, T, F)` with a
//! stacked [`Rnn`](rnn_core::Rnn) and predicts `target_size` values per future step with a regression head
//! ([`Mlp`](crate::common::Mlp); a single Linear layer when `head_hidden` is empty), in one of three ways
//! ([`ForecastStrategy`]):
//!
//! - **next-step**: at every step `t`, predict the target at `t + 1` (aligned, `(B, T, target)`);
//! - **direct**: from the last valid state, predict all `horizon` future steps at once
//!   (`(B, horizon, target)`);
//! - **autoregressive**: trained as next-step; predicts `H` steps by feeding its own predictions
//!   back as the next input.
//!
//! Autoregressive feedback needs the targets to be features of the input:
//! [`ForecasterConfig::target_columns`]`[j]` is the input column holding target `j`. At a future
//! step the input is the last observed input row with the target columns replaced by the
//! previous prediction; **every other feature is held at its last observed value** (covariates
//! that are known in advance cannot be given; a model whose inputs are all targets,
//! `input_size == target_size`, is unaffected).
//!
//! Parameter names: `rnn.*` (PyTorch names, see [`rnn_core::Rnn`]) and `head.layers.{i}.*`.

mod config;
mod model;
#[cfg(test)]
mod tests;

pub use config::{ForecastStrategy, ForecasterConfig};
pub use model::Forecaster;

const MODEL: &str = "Forecaster";

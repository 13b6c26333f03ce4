//! # rnn-train
//!
//! The training kit around [`rnn_core`]: data loading with errors that name the file and line
//! ([`data`]), metrics and losses ([`metrics`]), optimisers, learning-rate schedules and gradient
//! clipping ([`optim`]), atomic checkpoints ([`checkpoint`]), per-step gradient diagnostics
//! ([`diagnostics`]), progress and JSON-lines logs ([`progress`]), learning-curve, gradient-norm
//! and heatmap plots as PNG and SVG ([`plot`]), and the training loop that ties them together
//! ([`trainer`]: a [`trainer::Trainer`] drives any [`trainer::TrainTask`]).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod collective;
pub mod data;
pub mod diagnostics;
mod error;
pub mod metrics;
pub mod optim;
#[cfg(feature = "plot")]
pub mod plot;
pub mod progress;
pub mod trainer;

pub use error::{Error, Result};
pub use rnn_core;

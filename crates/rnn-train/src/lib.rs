//! # rnn-train
//!
//! Data loading, batching, the training loop, metrics and checkpoints for [`rnn_core`] models.
//! (Under construction: see the project's issues.)
#![warn(missing_docs)]

pub use rnn_core;

//! # rnn-models
//!
//! Sequence models built on [`rnn_core`]: classifier, tagger, language model, encoder-decoder,
//! conditioned generator and forecaster. (Under construction: see the project's issues.)
#![warn(missing_docs)]

pub use rnn_core;

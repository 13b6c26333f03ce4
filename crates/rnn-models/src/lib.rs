//! # rnn-models
//!
//! Sequence models built on [`rnn_core`], one per architecture of the seed material. Each has a
//! serde config, `new(cfg, vb)`, a forward that returns logits or predictions, and a loss helper
//! the trainer uses; all run on any Candle device and check shapes with clear errors.
//!
//! | model | shape of the problem |
//! |---|---|
//! | [`classifier::SequenceClassifier`] | many-to-one: sequence -> class (last / mean / max / attention pooling) |
//! | [`tagger::SequenceTagger`] | many-to-many, aligned: one tag per token |
//! | [`lm::LanguageModel`] | next-token prediction, sentence likelihood, sampling |
//! | [`seq2seq::Seq2Seq`] | many-to-many, different lengths: encoder-decoder with attention and beam search |
//! | [`generator::ConditionedGenerator`] | one-to-many: generation from a context vector, three stop rules |
//! | [`forecaster::Forecaster`] | numeric series -> next step, direct multi-step, autoregressive |
//!
//! Shared pieces: [`loss`] (masked cross-entropy, MSE, BCE), [`common`] (masks, pooling, MLP
//! heads) and [`sampling`] (greedy, temperature, top-k, top-p, seeded).
#![warn(missing_docs)]

pub mod classifier;
pub mod common;
mod config_checks;
mod defaults;
pub mod encoder;
pub mod forecaster;
pub mod generator;
pub mod lm;
pub mod loss;
pub mod masks;
pub mod sampling;
pub mod seq2seq;
mod sources;
pub mod tagger;
#[cfg(test)]
mod test_util;

pub use rnn_core;

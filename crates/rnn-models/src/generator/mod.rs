//! One-to-many generation: a context (a class id or a feature vector) conditions a token
//! generator, [`ConditionedGenerator`], with three ways to decide where a sequence ends
//! ([`StopStrategy`]).
//!
//! ```text
//! context ──► context encoder ──► c (B, context_dim)
//!                                  │ InitialState: h0 (and c0) = tanh(Linear(c)) per layer
//!                                  │ EveryStep:    [embedding(y_{t-1}) ; c] is the step input
//! bos, y_0, y_1, ... ──► embedding ──► stacked Rnn ──► output head ──► logits over the vocabulary
//!                                                  └─► stop head (Bernoulli): P(stop after y_t)
//!                     c ──► length head (PredictedLength): length class 1..=max_len
//! ```
//!
//! Training uses teacher forcing over whole sequences ([`ConditionedGenerator::loss`]);
//! generation ([`ConditionedGenerator::generate`]) runs one step per token, carrying the
//! recurrent state (the prefix is never recomputed), for the whole batch at once.
//!
//! Parameter names: `context.embedding.weight` (class context) or `context.proj.{weight,bias}`
//! (feature context), `context.init_h.*` / `context.init_c.*` (initial-state conditioning; `init_c`
//! for LSTM), `embedding.weight`, `rnn.*` (PyTorch names, see [`rnn_core::Rnn`]), `output.*`,
//! `stop.*` (Bernoulli) and `length.*` (PredictedLength).

mod config;
mod model;
#[cfg(test)]
mod tests;

pub use config::{Conditioning, ContextKind, GeneratorConfig, StopStrategy};
pub use model::{ConditionedGenerator, GeneratorOutput};

const MODEL: &str = "ConditionedGenerator";

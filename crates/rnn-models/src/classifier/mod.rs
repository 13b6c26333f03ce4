//! Many-to-one sequence classification: [`SequenceClassifier`].
//!
//! `input -> embedding | projection -> Rnn -> pooling over valid steps -> MLP head -> logits`.
//!
//! - Input: token ids (`u32 (batch, seq)`, through an embedding) or numeric features
//!   (`(batch, seq, features)` of the model's float dtype, optionally through a linear projection),
//!   see [`Input`].
//! - Recurrence: any [`Mode`](rnn_core::Mode), stacked, optionally bidirectional, with inter-layer dropout.
//! - Pooling ([`Pooling`]) only ever looks at the valid steps of each sequence: the last state
//!   (PyTorch's `h_n` of the top layer, both directions), the mean, the element-wise max, or learned
//!   attention weights.
//!
//! Parameter names: `embedding.weight` (or `input_projection.weight` / `.bias`), `rnn.*` with
//! PyTorch's `RNNBase` names (`rnn.weight_ih_l0`, `rnn.weight_hh_l1_reverse`, ...),
//! `attention.w.weight`, `attention.w.bias`, `attention.v.weight` (attention pooling only) and
//! `head.layers.{i}.weight` / `.bias`.
//!
//! [`Input`] and [`InputEncoder`] (re-exported here) live in [`crate::encoder`], shared with
//! [`crate::tagger`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use rnn_models::classifier::{Input, Pooling, SequenceClassifier, SequenceClassifierConfig};
//! use rnn_models::rnn_core::{init::seeded_var_builder, Mode};
//!
//! let cfg = SequenceClassifierConfig::new(Input::tokens(10, 8), Mode::Gru, 16, 3)
//!     .with_pooling(Pooling::Attention)
//!     .with_bidirectional(true);
//! let varmap = VarMap::new();
//! let model = SequenceClassifier::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let ids = Tensor::new(&[[1u32, 2, 3, 0], [4, 5, 0, 0]], &Device::Cpu)?;
//! let (logits, weights) = model.forward_with_weights(&ids, Some(&[4, 2]), false)?;
//! assert_eq!(logits.dims(), &[2, 3]);
//! assert_eq!(weights.unwrap().dims(), &[2, 4]); // attention weights, 0 at padding
//! # Ok::<(), candle_core::Error>(())
//! ```

mod config;
mod model;
mod pooling;
#[cfg(test)]
mod tests;

pub use crate::encoder::{Input, InputEncoder};
pub use config::SequenceClassifierConfig;
pub use model::SequenceClassifier;
pub use pooling::Pooling;

const MODEL: &str = "SequenceClassifier";
const CONFIG: &str = "SequenceClassifierConfig";

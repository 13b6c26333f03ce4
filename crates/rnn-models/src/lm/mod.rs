//! A recurrent language model: next-token prediction, sequence likelihood, stateful perplexity
//! over a token stream, and seeded sampling.
//!
//! Architecture as in Zaremba et al. (2014, <https://arxiv.org/abs/1409.2329>) and PyTorch's
//! `word_language_model` example:
//!
//! ```text
//! ids (B, T) -> embedding (B, T, E) -> dropout -> Rnn (num_layers, dropout between layers)
//!            -> dropout -> decoder Linear (B, T, V) logits
//! ```
//!
//! with optional weight tying (Press & Wolf 2017; Inan et al. 2017): the decoder's weight *is* the
//! embedding matrix, so `embedding_dim` must equal `hidden_size`.
//!
//! Parameter names: `embedding.weight` `(V, E)`, `rnn.*` (PyTorch names, e.g.
//! `rnn.weight_ih_l0`), `decoder.weight` `(V, H)` (absent when tied) and `decoder.bias` `(V,)`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use rnn_core::{init::seeded_var_builder, Mode};
//! use rnn_models::lm::{GenerateConfig, LanguageModel, LanguageModelConfig};
//!
//! let cfg = LanguageModelConfig::new(Mode::Lstm, 10, 8, 8).with_tie_weights(true);
//! let varmap = VarMap::new();
//! let lm = LanguageModel::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu)?;
//! let (logits, state) = lm.forward(&ids, None, None, false)?;
//! assert_eq!(logits.dims(), &[2, 3, 10]);
//! let lp = lm.log_prob(&[1, 2, 3])?; // log p(2 | 1) + log p(3 | 1, 2)
//! assert!(lp < 0.0);
//! let cfg = GenerateConfig { max_len: 5, stop_at_eos: false, ..Default::default() };
//! assert_eq!(lm.generate(&[1, 2], &cfg, 42)?.len(), 5);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod config;
mod model;
#[cfg(test)]
mod tests;

pub use config::{GenerateConfig, LanguageModelConfig};
pub use model::LanguageModel;

const MODEL: &str = "LanguageModel";

//! The losses the models train with: [`rnn_core::loss`], re-exported here at their old path
//! (masked cross-entropy and its sum for perplexity, the fused output-layer cross-entropy, MSE
//! and binary cross-entropy on logits).

pub use rnn_core::loss::*;

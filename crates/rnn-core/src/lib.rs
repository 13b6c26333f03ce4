//! # rnn-core
//!
//! Recurrent layers on [Candle](https://github.com/huggingface/candle): vanilla RNN (tanh or ReLU),
//! LSTM and GRU, as single-step cells and as stacked, bidirectional layers over whole sequences,
//! with exactly PyTorch's parameter names, layouts, gate order, default init and numerics
//! (`torch.nn.RNN`, `torch.nn.LSTM`, `torch.nn.GRU` and their `*Cell`s).
//!
//! - [`Rnn`] + [`RnnConfig`]: the layer; [`Rnn::forward_t`] takes variable lengths with PyTorch's
//!   packed-sequence semantics and turns inter-layer dropout on in training.
//! - [`RnnState`]: `h` (and `c` for LSTM); [`RnnState::detach`] for truncated BPTT.
//! - [`LstmCell`], [`GruCell`], [`RnnCell`]: one step at a time.
//! - [`init::seeded_var_builder`]: reproducible fresh parameters.
//! - [`seed`] and [`dropout`]: the seed/counter protocol of every random source and the one
//!   seeded dropout.
//! - [`loss`]: masked cross-entropy (a fused CPU op and its composed twin), the output layer
//!   fused with its cross-entropy, MSE and binary cross-entropy on logits.
//!
//! Gradients flow through Candle's autograd to every parameter, the input and the initial state.
#![warn(missing_docs)]

mod cell;
mod check;
mod config;
pub mod device;
pub mod dropout;
pub mod init;
mod layer;
pub mod loss;
mod ops;
pub mod output;
mod recurrence;
pub mod seed;
mod state;
pub mod testing;

pub use cell::{CellConfig, GruCell, LstmCell, Nonlinearity, RnnCell};
pub use config::{Mode, RnnConfig};
pub use layer::{Implementation, Rnn};
pub use state::RnnState;

/// Frees the buffers the fused CPU ops keep for reuse between steps.
///
/// The fused forward and backward recycle their large activation and gradient buffers (up to 16
/// buffers and 256 MiB per dtype) instead of allocating and zero-filling them on every step. Call
/// this after training or inference to hand that memory back, as `torch.cuda.empty_cache()` does
/// for PyTorch's caching allocator. Later runs simply allocate again.
pub fn release_cached_buffers() {
    ops::scratch::release();
}

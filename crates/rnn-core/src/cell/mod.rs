//! Single-step cells with PyTorch's cell weight names (`weight_ih`, `weight_hh`, `bias_ih`,
//! `bias_hh`), as `torch.nn.LSTMCell`, `GRUCell` and `RNNCell`. The gate math lives in
//! [`params`], shared with the layer's composed recurrence.

mod candle_rnn;
mod config;
mod gru;
pub(crate) mod layer_norm;
mod lstm;
pub(crate) mod params;
mod rnn;
mod step;

pub use config::CellConfig;
pub use gru::GruCell;
pub use lstm::LstmCell;
pub use rnn::{Nonlinearity, RnnCell};

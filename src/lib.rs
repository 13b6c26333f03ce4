#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod bench;
pub mod bench_devices;
pub mod cli;
pub mod run;
pub mod tasks;
pub use rnn_core as core;
pub use rnn_models as models;
pub use rnn_train as train;

/// The names most programs need.
pub mod prelude {
    pub use rnn_core::init::seeded_var_builder;
    pub use rnn_core::{GruCell, LstmCell, Mode, Nonlinearity, Rnn, RnnCell, RnnConfig, RnnState};
}

#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod bench_devices;
#[cfg(feature = "cli")]
pub mod bench_grid;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod run;
#[cfg(feature = "cli")]
pub mod tasks;
pub use rnn_core;
pub use rnn_models;
pub use rnn_models as models;
pub use rnn_train;
pub use rnn_train as train;

/// The Rust examples of `docs/FROM_PYTORCH.md`, run by `cargo test --doc` so that the guide
/// cannot drift from the API. Exists only while doctests are collected.
#[cfg(doctest)]
#[doc = include_str!("../docs/FROM_PYTORCH.md")]
pub struct FromPytorchGuide;

/// The former name of [`rnn_core`] in this crate, which shadowed Rust's own `core` crate
/// wherever `rnn::*` was glob-imported.
#[deprecated(
    since = "0.2.0",
    note = "use `rnn::rnn_core` (or the `rnn-core` crate): `core` shadows Rust's `core`"
)]
pub mod core {
    pub use rnn_core::*;
}

/// The names most programs need.
pub mod prelude {
    pub use rnn_core::init::seeded_var_builder;
    pub use rnn_core::{GruCell, LstmCell, Mode, Nonlinearity, Rnn, RnnCell, RnnConfig, RnnState};
}

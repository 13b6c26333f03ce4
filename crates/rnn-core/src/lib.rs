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
//! `docs/FROM_PYTORCH.md` maps PyTorch's arguments, outputs and training idioms to this API.
//!
//! # Loading PyTorch weights
//!
//! [`Rnn`] and the cells use PyTorch's `state_dict` names and layouts, so weights saved from
//! PyTorch with safetensors load unchanged. In Python:
//!
//! ```python
//! import torch
//! from safetensors.torch import save_file
//!
//! lstm = torch.nn.LSTM(input_size=3, hidden_size=4)  # batch_first=False: PyTorch's default
//! save_file(lstm.state_dict(), "lstm.safetensors")
//! # weight_ih_l0 (16, 3), weight_hh_l0 (16, 4), bias_ih_l0 (16,), bias_hh_l0 (16,)
//! ```
//!
//! In Rust (the example writes the same file with candle, so that it runs on its own):
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarBuilder;
//! use rnn_core::{Mode, Rnn, RnnConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("lstm.safetensors");
//! // What `save_file(lstm.state_dict(), ...)` writes: the gate blocks i, f, g, o stacked on axis 0.
//! let weight_ih = Tensor::arange(0f32, 48., &dev)?.reshape((16, 3))?.affine(0.01, -0.2)?;
//! let state_dict = HashMap::from([
//!     ("weight_ih_l0", weight_ih.clone()),
//!     ("weight_hh_l0", Tensor::full(0.05f32, (16, 4), &dev)?),
//!     ("bias_ih_l0", Tensor::zeros(16, DType::F32, &dev)?),
//!     ("bias_hh_l0", Tensor::full(0.1f32, 16, &dev)?),
//! ]);
//! candle_core::safetensors::save(&state_dict, &path)?;
//!
//! // PyTorch's layer is time-major by default; ours is batch-first unless told otherwise.
//! let cfg = RnnConfig::new(Mode::Lstm, 3, 4).with_batch_first(false);
//! // SAFETY: the file is not modified while it is mapped.
//! let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &dev)? };
//! let lstm = Rnn::new(&cfg, vb)?; // fails, naming the tensor, if one is missing or misshapen
//! let (_, loaded) = lstm
//!     .named_parameters()
//!     .into_iter()
//!     .find(|(name, _)| name == "weight_ih_l0")
//!     .ok_or("weight_ih_l0 not found")?;
//! assert_eq!(loaded.to_vec2::<f32>()?, weight_ih.to_vec2::<f32>()?);
//!
//! let xs = Tensor::ones((5, 2, 3), DType::F32, &dev)?; // (seq_len, batch, input), as in PyTorch
//! let (output, state) = lstm.forward_with_state(&xs, None)?; // output, (h_n, c_n)
//! assert_eq!(output.dims(), &[5, 2, 4]);
//! // One layer, one direction: h_n is the output's last step.
//! assert_eq!(state.h.squeeze(0)?.to_vec2::<f32>()?, output.get(4)?.to_vec2::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! The same with a file PyTorch wrote: one of this crate's parity fixtures
//! (`tests/fixtures/gen_fixtures.py`), a time-major, 3-layer, bidirectional `nn.LSTM(4, 5)`
//! saved with `save_file`, together with the `input`, `h0`, `c0` it was run on and the `output`,
//! `h_n` and `c_n` it returned:
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarBuilder;
//! use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pytorch/lstm_l3_bi_state_tm_f32.safetensors");
//! let cfg = RnnConfig::new(Mode::Lstm, 4, 5)
//!     .with_num_layers(3)
//!     .with_bidirectional(true)
//!     .with_batch_first(false);
//! // SAFETY: the file is not modified while it is mapped.
//! let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &dev)? };
//! // Reads weight_ih_l0 ... bias_hh_l2_reverse; the file's other tensors are not asked for.
//! let lstm = Rnn::new(&cfg, vb.clone())?;
//! let get = |name: &str| vb.get_unchecked(name);
//! let state = RnnState::new(get("h0")?, Some(get("c0")?)); // (h_0, c_0): (6, batch, 5) each
//! let (output, last) = lstm.forward_with_state(&get("input")?, Some(&state))?; // output, (h_n, c_n)
//!
//! let max_diff = |a: &Tensor, b: &Tensor| -> candle_core::Result<f32> {
//!     (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
//! };
//! assert!(max_diff(&output, &get("output")?)? < 1e-5); // (seq_len, batch, 2 * 5)
//! assert!(max_diff(&last.h, &get("h_n")?)? < 1e-5);
//! let c_n = last.c.as_ref().expect("an LSTM state has c");
//! assert!(max_diff(c_n, &get("c_n")?)? < 1e-5);
//! # Ok(())
//! # }
//! ```
//!
//! Weights of a submodule carry its prefix (`self.rnn = nn.LSTM(...)` saves `rnn.weight_ih_l0`):
//! build with `vb.pp("rnn")`. Tensors read through `from_mmaped_safetensors` are constants; to
//! fine-tune, build the model on a `VarMap` (as [`init::seeded_var_builder`] does) and then
//! overwrite its variables with `varmap.load(path)`.
#![warn(missing_docs)]

pub mod activation;
mod cell;
mod check;
mod config;
pub mod device;
pub mod dropout;
pub mod init;
pub mod kernels;
mod layer;
pub mod linear;
pub mod loss;
mod ops;
pub mod output;
mod recurrence;
mod regularize;
pub mod seed;
mod state;
pub mod testing;

pub use cell::{CellConfig, GruCell, LstmCell, Nonlinearity, RnnCell};
pub use config::{Mode, RnnConfig};
pub use layer::{Implementation, Rnn};
pub use regularize::RnnMasks;
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

/// The crate README's example, run as a doctest so it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

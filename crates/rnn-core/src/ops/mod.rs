//! Fused recurrences: one Candle `CustomOp3` runs one layer-direction's whole sequence on CPU, with
//! the input projection of all steps as one GEMM, one GEMM per step for the recurrence, fused gate
//! math, saved activations and a hand-written BPTT backward whose weight gradients are one large
//! GEMM each over all steps. Gradients for every parameter, the input and the initial state flow
//! through Candle's autograd: the op's three arguments are the input, the packed initial state and
//! the packed parameters, and its backward returns the gradient of each.
//!
//! This folder is the only device-specific code of the crate. The composed twin
//! (`crate::recurrence`) computes the same function from Candle tensor ops on any device; tests hold
//! the two equal.

pub(crate) mod activation;
mod batch;
mod cpu;
pub(crate) mod cross_entropy;
#[cfg(feature = "cuda")]
mod cuda;
pub(crate) mod directions;
mod fused;
pub(crate) mod gemm;
mod grad;
mod gru;
mod gru_ln;
mod layer_norm;
pub(crate) mod linear;
pub(crate) mod linear_ce;
mod lstm;
mod lstm_ln;
mod masks;
pub(crate) mod math;
// The CUDA op's launch plan: used by the CUDA build, and run on the CPU by the tests.
#[cfg(any(test, feature = "cuda"))]
pub(crate) mod plan;
pub(crate) mod problem;
mod recurrence;
mod rnn;
pub(crate) mod scratch;
pub(crate) mod sequence_mask;
pub(crate) mod units;

pub(crate) use cpu::supports;
pub(crate) use directions::fused_directions;
pub(crate) use fused::{fused_direction, recurrence_supported};
pub(crate) use layer_norm::layer_norm_recurrence_supported;

//! The fused CUDA recurrence's launch plan as data: for one layer-direction, the ordered list of
//! cuBLAS GEMMs (transposes, sizes, leading dimensions, buffer offsets), pointwise kernel calls
//! (kernel id, element count, argument block) and device copies that the forward and the backward
//! run. The CUDA op executes a plan on Candle's stream; [`host`] executes the same plan on the CPU,
//! with cuBLAS's column-major semantics and the kernels' own per-element bodies
//! (`crates/rnn-core/cuda/recurrence.cuh`, compiled for the host in `cargo test`), so every index
//! the GPU will use is tested against the CPU fused op here.
//!
//! Launches per layer-direction and `T` steps: forward `2T + 3` (LSTM; `2T + 2` GRU and RNN),
//! backward `2T + 5` (`2T + 4` without the input's gradient); an LSTM with projection adds two
//! per step each way (the `W_hr` product and its masking or resolving kernel).

mod backward;
mod forward;
#[cfg(test)]
pub(crate) mod host;
mod ir;
#[cfg(test)]
mod tests;

pub(crate) use backward::backward_plan;
pub(crate) use forward::forward_plan;
#[cfg(feature = "cuda")]
pub(crate) use ir::{Buf, BufRef, Gemm, Kernel, Op, Plan, Spec, StepArgs, SAVED};

//! Test-only crate: the fused CUDA recurrence's per-element kernel bodies
//! (`crates/rnn-core/cuda/recurrence.cuh`, `__host__ __device__`) compiled by the host C++
//! compiler, so `cargo test` runs the very code the GPU kernels run. rnn-core's launch-plan tests
//! execute the plan's pointwise steps through [`pointwise_f32`] / [`pointwise_f64`].

use std::ffi::c_void;

extern "C" {
    fn rnn_host_pointwise_f32(kernel: i32, args: *const c_void, n: i64);
    fn rnn_host_pointwise_f64(kernel: i32, args: *const c_void, n: i64);
    fn rnn_host_kernel_count() -> i32;
    fn rnn_host_args_layout(out: *mut i64, cap: i32) -> i32;
}

/// Runs kernel `kernel` over elements `0..n` with the argument block at `args`.
///
/// # Safety
/// `args` must point to a valid `RnnStepArgs<float>` whose pointers cover every element the
/// kernel touches for `n` elements.
pub unsafe fn pointwise_f32(kernel: i32, args: *const c_void, n: i64) {
    rnn_host_pointwise_f32(kernel, args, n)
}

/// As [`pointwise_f32`] for `RnnStepArgs<double>`.
///
/// # Safety
/// As [`pointwise_f32`].
pub unsafe fn pointwise_f64(kernel: i32, args: *const c_void, n: i64) {
    rnn_host_pointwise_f64(kernel, args, n)
}

/// How many kernels the header defines (`RNN_K_COUNT`).
pub fn kernel_count() -> i32 {
    // SAFETY: no arguments, returns a constant.
    unsafe { rnn_host_kernel_count() }
}

/// `sizeof(RnnStepArgs<double>)` and the offset of each field, in declaration order.
pub fn args_layout() -> Vec<i64> {
    let mut out = vec![0i64; 64];
    // SAFETY: `out` has room for 64 numbers and the callee writes at most `cap`.
    let n = unsafe { rnn_host_args_layout(out.as_mut_ptr(), out.len() as i32) };
    out.truncate(n.max(0) as usize);
    out
}

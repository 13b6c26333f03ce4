// The fused CUDA recurrence's pointwise kernels: each a grid-stride loop over the elements of
// one launch, calling the per-element body of recurrence.cuh (the bodies `cargo test` runs on the
// CPU through crates/rnn-cuda-host). Names: <body>_f32 and <body>_f64, as `Kernel::name` in
// src/ops/plan/mod.rs. The argument block is passed by value (296 bytes).
#include "recurrence.cuh"

#define RNN_KERNEL_T(NAME, T, SUFFIX)                                                 \
  extern "C" __global__ void NAME##_##SUFFIX(RnnStepArgs<T> a, long long n) {        \
    const long long stride = (long long)blockDim.x * gridDim.x;                       \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;       \
         i += stride) {                                                               \
      NAME<T>(a, i);                                                                  \
    }                                                                                 \
  }

#define RNN_KERNEL(NAME)             \
  RNN_KERNEL_T(NAME, float, f32)     \
  RNN_KERNEL_T(NAME, double, f64)

RNN_KERNEL(rnn_lstm_fwd)
RNN_KERNEL(rnn_lstm_proj_fwd)
RNN_KERNEL(rnn_gru_fwd)
RNN_KERNEL(rnn_rnn_fwd)
RNN_KERNEL(rnn_lstm_bwd)
RNN_KERNEL(rnn_dh_resolve)
RNN_KERNEL(rnn_gru_bwd)
RNN_KERNEL(rnn_rnn_bwd)
RNN_KERNEL(rnn_bwd_final)
RNN_KERNEL(rnn_colsum)
RNN_KERNEL(rnn_lstm_r_all)

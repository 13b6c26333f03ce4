// Host harness: runs the CUDA recurrence's pointwise kernel bodies (recurrence.cuh) on the CPU,
// one call per element in index order, exactly as a GPU grid would cover them.
#include <cstddef>
#include "recurrence.cuh"

template <typename T>
static void run_all(int kernel, const RnnStepArgs<T>* args, long long n) {
  for (long long i = 0; i < n; ++i) rnn_pointwise<T>(kernel, *args, i);
}

extern "C" {

void rnn_host_pointwise_f32(int kernel, const void* args, long long n) {
  run_all<float>(kernel, static_cast<const RnnStepArgs<float>*>(args), n);
}

void rnn_host_pointwise_f64(int kernel, const void* args, long long n) {
  run_all<double>(kernel, static_cast<const RnnStepArgs<double>*>(args), n);
}

int rnn_host_kernel_count(void) { return RNN_K_COUNT; }

// sizeof(RnnStepArgs<double>) followed by the offset of every field, in declaration order;
// returns how many numbers it wrote (at most `cap`).
int rnn_host_args_layout(long long* out, int cap) {
  typedef RnnStepArgs<double> A;
  const long long v[] = {
      (long long)sizeof(A),
      (long long)offsetof(A, batch), (long long)offsetof(A, hidden), (long long)offsetof(A, state),
      (long long)offsetof(A, row_base), (long long)offsetof(A, row_stride), (long long)offsetof(A, t),
      (long long)offsetof(A, t_prev), (long long)offsetof(A, rows), (long long)offsetof(A, width),
      (long long)offsetof(A, flags), (long long)offsetof(A, lengths), (long long)offsetof(A, b_ih),
      (long long)offsetof(A, b_hh), (long long)offsetof(A, gates), (long long)offsetof(A, hg),
      (long long)offsetof(A, h), (long long)offsetof(A, c), (long long)offsetof(A, y),
      (long long)offsetof(A, hprev), (long long)offsetof(A, cprev), (long long)offsetof(A, tanhc),
      (long long)offsetof(A, hn), (long long)offsetof(A, r), (long long)offsetof(A, dy),
      (long long)offsetof(A, carry_in), (long long)offsetof(A, carry_out), (long long)offsetof(A, dh_rec),
      (long long)offsetof(A, dc_in), (long long)offsetof(A, dc_out), (long long)offsetof(A, dr),
      (long long)offsetof(A, dg), (long long)offsetof(A, dgh), (long long)offsetof(A, dh),
      (long long)offsetof(A, dh_all), (long long)offsetof(A, out1), (long long)offsetof(A, out2),
  };
  int n = (int)(sizeof(v) / sizeof(v[0]));
  if (n > cap) n = cap;
  for (int i = 0; i < n; ++i) out[i] = v[i];
  return n;
}

}  // extern "C"

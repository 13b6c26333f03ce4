// Per-element math of the fused CUDA recurrence: every pointwise kernel of the launch plan
// (crates/rnn-core/src/ops/plan/) as one `__host__ __device__` function of (arguments, element).
//
// The same bodies run in two places:
// - recurrence.cu wraps each in a grid-stride `__global__` kernel for the GPU;
// - crates/rnn-cuda-host compiles this header with the host C++ compiler, and `cargo test` runs
//   the launch plan on the CPU through it (src/ops/plan/tests.rs), against the CPU fused op.
//
// Layouts (all row-major, `T` = float or double):
// - a "row" is one (step, batch) pair: row(b) = row_base + b * row_stride for this step
//   (time-major: row_base = t * B, row_stride = 1; batch-first: row_base = t, row_stride = T);
// - gates (rows, G*H), G = 4 (LSTM i f g o), 3 (GRU r z n), 1 (RNN);
// - h, carry, dh_rec (B, P); c, dc (B, H); P = proj_size when projecting, else H;
// - a sequence past its length keeps its state, writes a zero output and gets no gradient there.
//
// The argument block is mirrored by `StepArgs` in src/ops/plan/args.rs (#[repr(C)]); the host
// harness exports its field offsets and a test holds the two layouts equal.
#pragma once

#if defined(__CUDACC__)
#define RNN_HD __host__ __device__ __forceinline__
#else
#define RNN_HD inline
#include <cmath>
#endif

// Kernel ids: the same numbers as `Kernel` in src/ops/plan/mod.rs.
enum RnnKernel {
  RNN_K_LSTM_FWD = 0,
  RNN_K_LSTM_PROJ_FWD = 1,
  RNN_K_GRU_FWD = 2,
  RNN_K_RNN_FWD = 3,
  RNN_K_LSTM_BWD = 4,
  RNN_K_DH_RESOLVE = 5,
  RNN_K_GRU_BWD = 6,
  RNN_K_RNN_BWD = 7,
  RNN_K_BWD_FINAL = 8,
  RNN_K_COLSUM = 9,
  RNN_K_LSTM_R_ALL = 10,
  RNN_K_COUNT = 11,
};

// Bit 0 of `flags`: ReLU instead of tanh (RNN).
#define RNN_FLAG_RELU 1LL

template <typename T>
struct RnnStepArgs {
  long long batch, hidden, state;  // B, H, P
  long long row_base, row_stride;  // rows of this step (see above)
  long long t;                     // this step
  long long t_prev;                // the step this pass ran before `t`; -1 when none
  long long rows, width;           // colsum: (rows, width) input; r_all: rows
  long long flags;
  const long long* lengths;  // (B) valid steps per sequence; null = all
  const T* b_ih;             // (G*H) or null
  const T* b_hh;             // (G*H) or null
  T* gates;                  // forward: pre-activations in, activations out; backward: saved
  const T* hg;               // GRU: this step's h W_hh^T (B, 3H); LSTM projection: r W_hr^T (B, P)
  T* h;                      // (B, P) state, updated in place
  T* c;                      // (B, H) cell, updated in place
  T* y;                      // (rows, P) output
  T* hprev;                  // saved (rows, P) state before each step, or null
  T* cprev;                  // saved (rows, H) cell before each step, or null
  T* tanhc;                  // saved (rows, H) tanh(c) after each step, or null
  T* hn;                     // GRU saved (rows, H): W_hn h + b_hn
  T* r;                      // LSTM projection: (B, H) o * tanh(c); r_all: (rows, H)
  const T* dy;               // (rows, P) gradient of the output
  const T* carry_in;         // (B, P) gradient carried from the later step (first: grad h_n)
  T* carry_out;              // (B, P)
  const T* dh_rec;           // (B, P) dgates(t_prev) W_hh, or null
  const T* dc_in;            // (B, H) (first step: grad c_n)
  T* dc_out;                 // (B, H)
  const T* dr;               // LSTM projection: (B, H) dh W_hr, or null
  T* dg;                     // (rows, G*H) gradient of the gate pre-activations (GRU: input side)
  T* dgh;                    // GRU (rows, 3H): gradient of the hidden-side pre-activations
  T* dh;                     // (B, P) resolved gradient of h (LSTM projection)
  T* dh_all;                 // (rows, P) resolved gradient of h of every step (projection)
  T* out1;                   // colsum / final: first output
  T* out2;                   // colsum: second output (or null)
};

template <typename T>
RNN_HD T rnn_sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

template <typename T>
RNN_HD bool rnn_valid(const RnnStepArgs<T>& a, long long t, long long b) {
  return t >= 0 && (a.lengths == nullptr || t < a.lengths[b]);
}

template <typename T>
RNN_HD T rnn_bias(const RnnStepArgs<T>& a, long long k) {
  T s = T(0);
  if (a.b_ih) s += a.b_ih[k];
  if (a.b_hh) s += a.b_hh[k];
  return s;
}

// The gradient reaching h at step t from the later steps: the carried part plus, when the
// previous step of this pass was valid for this sequence, its recurrent product.
template <typename T>
RNN_HD T rnn_dh_in(const RnnStepArgs<T>& a, long long b, long long k) {
  const long long i = b * a.state + k;
  T v = a.carry_in[i];
  if (a.dh_rec && rnn_valid(a, a.t_prev, b)) v += a.dh_rec[i];
  return v;
}

// ---- forward ----------------------------------------------------------------------------------

// n = B*H. The gates of step t already hold x W_ih^T + h W_hh^T (biases are added here).
template <typename T>
RNN_HD void rnn_lstm_fwd(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden, P = a.state;
  const long long b = idx / H, j = idx % H;
  const long long row = a.row_base + b * a.row_stride;
  const bool valid = rnn_valid(a, a.t, b);
  T* g = a.gates + row * 4 * H;
  const T ig = rnn_sigmoid(g[j] + rnn_bias(a, j));
  const T fg = rnn_sigmoid(g[H + j] + rnn_bias(a, H + j));
  const T gg = tanh(g[2 * H + j] + rnn_bias(a, 2 * H + j));
  const T og = rnn_sigmoid(g[3 * H + j] + rnn_bias(a, 3 * H + j));
  g[j] = ig;
  g[H + j] = fg;
  g[2 * H + j] = gg;
  g[3 * H + j] = og;
  const T c_old = a.c[b * H + j];
  const T cn = fg * c_old + ig * gg;
  const T tc = tanh(cn);
  const T hn = og * tc;
  if (a.cprev) a.cprev[row * H + j] = c_old;
  if (a.tanhc) a.tanhc[row * H + j] = tc;
  if (valid) a.c[b * H + j] = cn;
  if (a.r) {
    // Projection: h and the output come from r W_hr^T (RNN_K_LSTM_PROJ_FWD).
    a.r[b * H + j] = hn;
    return;
  }
  if (a.hprev) a.hprev[row * P + j] = a.h[b * P + j];
  if (valid) {
    a.y[row * P + j] = hn;
    a.h[b * P + j] = hn;
  } else {
    a.y[row * P + j] = T(0);
  }
}

// n = B*P. `hg` holds r W_hr^T of this step.
template <typename T>
RNN_HD void rnn_lstm_proj_fwd(const RnnStepArgs<T>& a, long long idx) {
  const long long P = a.state;
  const long long b = idx / P, k = idx % P;
  const long long row = a.row_base + b * a.row_stride;
  if (a.hprev) a.hprev[row * P + k] = a.h[idx];
  if (rnn_valid(a, a.t, b)) {
    const T v = a.hg[idx];
    a.y[row * P + k] = v;
    a.h[idx] = v;
  } else {
    a.y[row * P + k] = T(0);
  }
}

// n = B*H. The gates of step t hold x W_ih^T; `hg` holds h W_hh^T (no biases).
template <typename T>
RNN_HD void rnn_gru_fwd(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden;
  const long long b = idx / H, j = idx % H;
  const long long row = a.row_base + b * a.row_stride;
  T* g = a.gates + row * 3 * H;
  const T* hg = a.hg + b * 3 * H;
  const T bih_r = a.b_ih ? a.b_ih[j] : T(0), bhh_r = a.b_hh ? a.b_hh[j] : T(0);
  const T bih_z = a.b_ih ? a.b_ih[H + j] : T(0), bhh_z = a.b_hh ? a.b_hh[H + j] : T(0);
  const T bih_n = a.b_ih ? a.b_ih[2 * H + j] : T(0), bhh_n = a.b_hh ? a.b_hh[2 * H + j] : T(0);
  const T rg = rnn_sigmoid(g[j] + bih_r + hg[j] + bhh_r);
  const T zg = rnn_sigmoid(g[H + j] + bih_z + hg[H + j] + bhh_z);
  const T ghn = hg[2 * H + j] + bhh_n;
  const T ng = tanh(g[2 * H + j] + bih_n + rg * ghn);
  g[j] = rg;
  g[H + j] = zg;
  g[2 * H + j] = ng;
  const T h_old = a.h[b * H + j];
  const T hnew = ng + zg * (h_old - ng);
  if (a.hn) a.hn[row * H + j] = ghn;
  if (a.hprev) a.hprev[row * H + j] = h_old;
  if (rnn_valid(a, a.t, b)) {
    a.y[row * H + j] = hnew;
    a.h[b * H + j] = hnew;
  } else {
    a.y[row * H + j] = T(0);
  }
}

// n = B*H. The gates of step t hold x W_ih^T + h W_hh^T.
template <typename T>
RNN_HD void rnn_rnn_fwd(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden;
  const long long b = idx / H, j = idx % H;
  const long long row = a.row_base + b * a.row_stride;
  T* g = a.gates + row * H;
  const T pre = g[j] + rnn_bias(a, j);
  const T v = (a.flags & RNN_FLAG_RELU) ? (pre > T(0) ? pre : T(0)) : tanh(pre);
  g[j] = v;
  if (a.hprev) a.hprev[row * H + j] = a.h[b * H + j];
  if (rnn_valid(a, a.t, b)) {
    a.y[row * H + j] = v;
    a.h[b * H + j] = v;
  } else {
    a.y[row * H + j] = T(0);
  }
}

// ---- backward (steps in the reverse order of the forward) -------------------------------------

// n = B*H. Without projection (`dr` null) it also resolves dh (P = H) and writes the carry;
// with projection dh W_hr arrives in `dr` (RNN_K_DH_RESOLVE ran first).
template <typename T>
RNN_HD void rnn_lstm_bwd(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden, P = a.state;
  const long long b = idx / H, j = idx % H;
  const long long row = a.row_base + b * a.row_stride;
  const bool valid = rnn_valid(a, a.t, b);
  T* dg = a.dg + row * 4 * H;
  T dh;
  if (a.dr) {
    dh = a.dr[b * H + j];
  } else {
    dh = rnn_dh_in(a, b, j);
    if (valid) dh += a.dy[row * P + j];
    a.carry_out[b * P + j] = valid ? T(0) : dh;
  }
  const T dc = a.dc_in[b * H + j];
  if (!valid) {
    dg[j] = dg[H + j] = dg[2 * H + j] = dg[3 * H + j] = T(0);
    a.dc_out[b * H + j] = dc;
    return;
  }
  const T* g = a.gates + row * 4 * H;
  const T ig = g[j], fg = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
  const T tc = a.tanhc[row * H + j];
  const T cp = a.cprev[row * H + j];
  const T dct = dc + dh * og * (T(1) - tc * tc);
  dg[j] = dct * gg * ig * (T(1) - ig);
  dg[H + j] = dct * cp * fg * (T(1) - fg);
  dg[2 * H + j] = dct * ig * (T(1) - gg * gg);
  dg[3 * H + j] = dh * tc * og * (T(1) - og);
  a.dc_out[b * H + j] = dct * fg;
}

// n = B*P. LSTM projection: dh of step t into `dh` (for dh W_hr) and `dh_all` (for dW_hr).
template <typename T>
RNN_HD void rnn_dh_resolve(const RnnStepArgs<T>& a, long long idx) {
  const long long P = a.state;
  const long long b = idx / P, k = idx % P;
  const long long row = a.row_base + b * a.row_stride;
  const bool valid = rnn_valid(a, a.t, b);
  T dh = rnn_dh_in(a, b, k);
  if (valid) dh += a.dy[row * P + k];
  a.dh[idx] = dh;
  a.dh_all[row * P + k] = valid ? dh : T(0);
  a.carry_out[idx] = valid ? T(0) : dh;
}

// n = B*H (P = H).
template <typename T>
RNN_HD void rnn_gru_bwd(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden;
  const long long b = idx / H, j = idx % H;
  const long long row = a.row_base + b * a.row_stride;
  const bool valid = rnn_valid(a, a.t, b);
  T* dgx = a.dg + row * 3 * H;
  T* dgh = a.dgh + row * 3 * H;
  T dh = rnn_dh_in(a, b, j);
  if (!valid) {
    dgx[j] = dgx[H + j] = dgx[2 * H + j] = T(0);
    dgh[j] = dgh[H + j] = dgh[2 * H + j] = T(0);
    a.carry_out[b * H + j] = dh;
    return;
  }
  dh += a.dy[row * H + j];
  const T* g = a.gates + row * 3 * H;
  const T rg = g[j], zg = g[H + j], ng = g[2 * H + j];
  const T hp = a.hprev[row * H + j];
  const T ghn = a.hn[row * H + j];
  const T dnp = dh * (T(1) - zg) * (T(1) - ng * ng);
  const T dzp = dh * (hp - ng) * zg * (T(1) - zg);
  const T drp = dnp * ghn * rg * (T(1) - rg);
  dgx[j] = drp;
  dgx[H + j] = dzp;
  dgx[2 * H + j] = dnp;
  dgh[j] = drp;
  dgh[H + j] = dzp;
  dgh[2 * H + j] = dnp * rg;
  a.carry_out[b * H + j] = dh * zg;
}

// n = B*H (P = H).
template <typename T>
RNN_HD void rnn_rnn_bwd(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden;
  const long long b = idx / H, j = idx % H;
  const long long row = a.row_base + b * a.row_stride;
  const bool valid = rnn_valid(a, a.t, b);
  T dh = rnn_dh_in(a, b, j);
  if (!valid) {
    a.dg[row * H + j] = T(0);
    a.carry_out[b * H + j] = dh;
    return;
  }
  dh += a.dy[row * H + j];
  const T v = a.gates[row * H + j];
  a.dg[row * H + j] = (a.flags & RNN_FLAG_RELU) ? (v > T(0) ? dh : T(0)) : dh * (T(1) - v * v);
  a.carry_out[b * H + j] = T(0);
}

// n = B*P (+ B*H for LSTM): the initial-state gradient [dh0 | dc0] into out1.
template <typename T>
RNN_HD void rnn_bwd_final(const RnnStepArgs<T>& a, long long idx) {
  const long long BP = a.batch * a.state;
  if (idx < BP) {
    a.out1[idx] = rnn_dh_in(a, idx / a.state, idx % a.state);
  } else {
    a.out1[idx] = a.dc_in[idx - BP];
  }
}

// n = width (2 * width with `dgh`): column sums of dg (rows, width) into out1 (and out2, when
// given and `dgh` is null), and of dgh into out2. Rows are added in order: deterministic.
template <typename T>
RNN_HD void rnn_colsum(const RnnStepArgs<T>& a, long long idx) {
  const long long W = a.width;
  const bool second = idx >= W;
  const long long j = second ? idx - W : idx;
  const T* src = second ? a.dgh : a.dg;
  T s = T(0);
  for (long long r = 0; r < a.rows; ++r) s += src[r * W + j];
  if (second) {
    a.out2[j] = s;
  } else {
    a.out1[j] = s;
    if (a.out2 && !a.dgh) a.out2[j] = s;
  }
}

// n = rows*H: r = o * tanh(c) of every row (the projection's input, for dW_hr).
template <typename T>
RNN_HD void rnn_lstm_r_all(const RnnStepArgs<T>& a, long long idx) {
  const long long H = a.hidden;
  const long long row = idx / H, j = idx % H;
  a.r[idx] = a.gates[row * 4 * H + 3 * H + j] * a.tanhc[idx];
}

// One element of kernel `k`.
template <typename T>
RNN_HD void rnn_pointwise(int k, const RnnStepArgs<T>& a, long long idx) {
  switch (k) {
    case RNN_K_LSTM_FWD: rnn_lstm_fwd(a, idx); break;
    case RNN_K_LSTM_PROJ_FWD: rnn_lstm_proj_fwd(a, idx); break;
    case RNN_K_GRU_FWD: rnn_gru_fwd(a, idx); break;
    case RNN_K_RNN_FWD: rnn_rnn_fwd(a, idx); break;
    case RNN_K_LSTM_BWD: rnn_lstm_bwd(a, idx); break;
    case RNN_K_DH_RESOLVE: rnn_dh_resolve(a, idx); break;
    case RNN_K_GRU_BWD: rnn_gru_bwd(a, idx); break;
    case RNN_K_RNN_BWD: rnn_rnn_bwd(a, idx); break;
    case RNN_K_BWD_FINAL: rnn_bwd_final(a, idx); break;
    case RNN_K_COLSUM: rnn_colsum(a, idx); break;
    case RNN_K_LSTM_R_ALL: rnn_lstm_r_all(a, idx); break;
    default: break;
  }
}

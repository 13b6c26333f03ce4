//! Fused vanilla RNN recurrence on CPU (`h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act = tanh or
//! ReLU): forward over the whole sequence and its hand-written BPTT backward.

use super::gemm::{matmul, transposed, MatRef};
use super::math::Float;
use super::{colsum_into, Problem, Weights};

/// Activations the backward pass needs, one row per (step, batch) in the problem's row order.
pub(crate) struct RnnSaved<T> {
    /// `h'` of every row (before masking): `(rows, hidden)`; the activation's derivative comes
    /// from it (`1 - h'^2` for tanh, `h' > 0` for ReLU).
    act: Vec<T>,
    /// State before each step: `(rows, hidden)`.
    hprev: Vec<T>,
}

/// Runs the sequence; writes `[ys (rows, hidden) | h_n (batch, hidden)]` into `out`.
pub(crate) fn forward<T: Float>(
    p: &Problem,
    relu: bool,
    x: &[T],
    h0: &[T],
    w: &Weights<T>,
    out: &mut [T],
    save: bool,
) -> Option<RnnSaved<T>> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let mut act = vec![T::zero(); rows * hh];
    if let (Some(b_ih), Some(b_hh)) = (w.b_ih, w.b_hh) {
        let bias: Vec<T> = b_ih.iter().zip(b_hh).map(|(a, b)| *a + *b).collect();
        for row in act.chunks_exact_mut(hh) {
            row.copy_from_slice(&bias);
        }
    }
    matmul(
        &mut act,
        0,
        hh,
        w.b_ih.is_some(),
        MatRef::row_major(x, rows, p.input),
        MatRef::row_major(&transposed(w.w_ih, hh, p.input), p.input, hh),
    );
    // Row-major W_hh^T: the per-step product then reads the weights as they lie, with no packing.
    let w_hh_t_data = transposed(w.w_hh, hh, hh);
    let w_hh_t = MatRef::row_major(&w_hh_t_data, hh, hh);
    let mut h = h0.to_vec();
    let mut hprev = vec![T::zero(); if save { rows * hh } else { 0 }];
    for t in p.forward_steps() {
        matmul(
            &mut act,
            p.step_offset(t, hh),
            p.step_rs(hh),
            true,
            MatRef::row_major(&h, bb, hh),
            w_hh_t,
        );
        for b in 0..bb {
            let row = p.row(t, b);
            let a = &mut act[row * hh..][..hh];
            if relu {
                for v in a.iter_mut() {
                    *v = num_traits::Float::max(*v, T::zero());
                }
            } else {
                T::tanh_inplace(a);
            }
            if save {
                hprev[row * hh..][..hh].copy_from_slice(&h[b * hh..][..hh]);
            }
            let y = &mut out[row * hh..][..hh];
            if p.valid(t, b) {
                y.copy_from_slice(a);
                h[b * hh..][..hh].copy_from_slice(a);
            } else {
                y.fill(T::zero());
            }
        }
    }
    out[rows * hh..][..bb * hh].copy_from_slice(&h);
    save.then_some(RnnSaved { act, hprev })
}

/// Gradients of the vanilla RNN recurrence (`db` serves both `bias_ih` and `bias_hh`).
pub(crate) struct RnnGrads<T> {
    pub dx: Vec<T>,
    pub dh0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db: Vec<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    relu: bool,
    x: &[T],
    w: &Weights<T>,
    s: &RnnSaved<T>,
    grad_out: &[T],
) -> RnnGrads<T> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let dy = &grad_out[..rows * hh];
    let mut dh = grad_out[rows * hh..][..bb * hh].to_vec();
    let mut dg = vec![T::zero(); rows * hh];
    let mut dh_rec = vec![T::zero(); bb * hh];
    let w_hh = MatRef::row_major(w.w_hh, hh, hh);
    let one = T::one();
    for t in p.backward_steps() {
        for b in 0..bb {
            if !p.valid(t, b) {
                continue;
            }
            let row = p.row(t, b);
            let a = &s.act[row * hh..][..hh];
            let dyr = &dy[row * hh..][..hh];
            let dhb = &dh[b * hh..][..hh];
            let dgr = &mut dg[row * hh..][..hh];
            for j in 0..hh {
                let d = dhb[j] + dyr[j];
                dgr[j] = if relu {
                    if a[j] > T::zero() {
                        d
                    } else {
                        T::zero()
                    }
                } else {
                    d * (one - a[j] * a[j])
                };
            }
        }
        let dg_t = MatRef::strided(&dg, p.step_offset(t, hh), bb, hh, p.step_rs(hh), 1);
        matmul(&mut dh_rec, 0, hh, false, dg_t, w_hh);
        for b in 0..bb {
            if p.valid(t, b) {
                dh[b * hh..][..hh].copy_from_slice(&dh_rec[b * hh..][..hh]);
            }
        }
    }
    let dg_m = MatRef::row_major(&dg, rows, hh);
    let mut dx = vec![T::zero(); rows * p.input];
    matmul(
        &mut dx,
        0,
        p.input,
        false,
        dg_m,
        MatRef::row_major(w.w_ih, hh, p.input),
    );
    let mut dw_ih = vec![T::zero(); hh * p.input];
    matmul(
        &mut dw_ih,
        0,
        p.input,
        false,
        dg_m.t(),
        MatRef::row_major(x, rows, p.input),
    );
    let mut dw_hh = vec![T::zero(); hh * hh];
    matmul(
        &mut dw_hh,
        0,
        hh,
        false,
        dg_m.t(),
        MatRef::row_major(&s.hprev, rows, hh),
    );
    let mut db = vec![T::zero(); hh];
    colsum_into(&dg, hh, &mut db);
    RnnGrads {
        dx,
        dh0: dh,
        dw_ih,
        dw_hh,
        db,
    }
}

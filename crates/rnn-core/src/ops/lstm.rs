//! Fused LSTM recurrence on CPU (gate order i, f, g, o; optional projection `weight_hr`):
//! forward over the whole sequence and its hand-written BPTT backward.

use super::gemm::{matmul, transposed, MatRef};
use super::math::Float;
use super::{colsum_into, Problem, Weights};

/// Activations the backward pass needs, each with one row per (step, batch) in the problem's row
/// order.
pub(crate) struct LstmSaved<T> {
    /// Activated gates i, f, g, o: `(rows, 4 * hidden)`.
    gates: Vec<T>,
    /// State `h` before each step: `(rows, state)`.
    hprev: Vec<T>,
    /// Cell `c` before each step: `(rows, hidden)`.
    cprev: Vec<T>,
    /// `tanh(c)` after each step: `(rows, hidden)`.
    tanhc: Vec<T>,
}

/// Runs the sequence; writes `[ys (rows, state) | h_n (batch, state) | c_n (batch, hidden)]` into
/// `out` and returns the saved activations when `save`.
pub(crate) fn forward<T: Float>(
    p: &Problem,
    x: &[T],
    h0: &[T],
    c0: &[T],
    w: &Weights<T>,
    out: &mut [T],
    save: bool,
) -> Option<LstmSaved<T>> {
    let (bb, hh, pp, rows) = (p.batch, p.hidden, p.state, p.rows());
    let g4 = 4 * hh;
    let mut gates = vec![T::zero(); rows * g4];
    if let (Some(b_ih), Some(b_hh)) = (w.b_ih, w.b_hh) {
        let bias: Vec<T> = b_ih.iter().zip(b_hh).map(|(a, b)| *a + *b).collect();
        for row in gates.chunks_exact_mut(g4) {
            row.copy_from_slice(&bias);
        }
    }
    // The input projection of every step: one GEMM.
    matmul(
        &mut gates,
        0,
        g4,
        w.b_ih.is_some(),
        MatRef::row_major(x, rows, p.input),
        MatRef::row_major(&transposed(w.w_ih, g4, p.input), p.input, g4),
    );
    // Row-major W_hh^T: the per-step product then reads the weights as they lie, with no packing.
    let w_hh_t_data = transposed(w.w_hh, g4, pp);
    let w_hh_t = MatRef::row_major(&w_hh_t_data, pp, g4);
    let mut h = h0.to_vec();
    let mut c = c0.to_vec();
    let saved_len = |n: usize| if save { n } else { 0 };
    let mut hprev = vec![T::zero(); saved_len(rows * pp)];
    let mut cprev = vec![T::zero(); saved_len(rows * hh)];
    let mut tanhc = vec![T::zero(); saved_len(rows * hh)];
    let mut c_new = vec![T::zero(); bb * hh];
    let mut tc = vec![T::zero(); bb * hh];
    let mut r = vec![T::zero(); bb * hh];
    let mut h_proj = vec![T::zero(); if w.w_hr.is_some() { bb * pp } else { 0 }];
    let w_hr_t = w.w_hr.map(|w_hr| transposed(w_hr, pp, hh));
    for t in p.forward_steps() {
        matmul(
            &mut gates,
            p.step_offset(t, g4),
            p.step_rs(g4),
            true,
            MatRef::row_major(&h, bb, pp),
            w_hh_t,
        );
        for b in 0..bb {
            let row = p.row(t, b);
            let gr = &mut gates[row * g4..][..g4];
            T::sigmoid_inplace(&mut gr[..2 * hh]);
            T::tanh_inplace(&mut gr[2 * hh..3 * hh]);
            T::sigmoid_inplace(&mut gr[3 * hh..]);
            let (i, rest) = gr.split_at(hh);
            let (f, rest) = rest.split_at(hh);
            let (g, o) = rest.split_at(hh);
            let cb = &c[b * hh..][..hh];
            let cn = &mut c_new[b * hh..][..hh];
            for j in 0..hh {
                cn[j] = f[j] * cb[j] + i[j] * g[j];
            }
            let tcb = &mut tc[b * hh..][..hh];
            T::tanh_into(cn, tcb);
            let rb = &mut r[b * hh..][..hh];
            for j in 0..hh {
                rb[j] = o[j] * tcb[j];
            }
            if save {
                hprev[row * pp..][..pp].copy_from_slice(&h[b * pp..][..pp]);
                cprev[row * hh..][..hh].copy_from_slice(cb);
                tanhc[row * hh..][..hh].copy_from_slice(tcb);
            }
        }
        let h_new: &[T] = match &w_hr_t {
            Some(w_hr_t) => {
                let w_hr_t = MatRef::row_major(w_hr_t, hh, pp);
                matmul(
                    &mut h_proj,
                    0,
                    pp,
                    false,
                    MatRef::row_major(&r, bb, hh),
                    w_hr_t,
                );
                &h_proj
            }
            None => &r,
        };
        for b in 0..bb {
            let y = &mut out[p.row(t, b) * pp..][..pp];
            if p.valid(t, b) {
                y.copy_from_slice(&h_new[b * pp..][..pp]);
                h[b * pp..][..pp].copy_from_slice(y);
                c[b * hh..][..hh].copy_from_slice(&c_new[b * hh..][..hh]);
            } else {
                y.fill(T::zero());
            }
        }
    }
    let tail = &mut out[rows * pp..];
    tail[..bb * pp].copy_from_slice(&h);
    tail[bb * pp..][..bb * hh].copy_from_slice(&c);
    save.then_some(LstmSaved {
        gates,
        hprev,
        cprev,
        tanhc,
    })
}

/// Gradients of the LSTM recurrence.
pub(crate) struct LstmGrads<T> {
    pub dx: Vec<T>,
    pub dh0: Vec<T>,
    pub dc0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db: Vec<T>,
    pub dw_hr: Vec<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    x: &[T],
    w: &Weights<T>,
    s: &LstmSaved<T>,
    grad_out: &[T],
) -> LstmGrads<T> {
    let (bb, hh, pp, rows) = (p.batch, p.hidden, p.state, p.rows());
    let g4 = 4 * hh;
    let dy = &grad_out[..rows * pp];
    let mut dh = grad_out[rows * pp..][..bb * pp].to_vec();
    let mut dc = grad_out[rows * pp + bb * pp..][..bb * hh].to_vec();
    let mut dg = vec![T::zero(); rows * g4];
    let mut dh_rec = vec![T::zero(); bb * pp];
    let proj = w.w_hr.is_some();
    let mut dr = vec![T::zero(); if proj { bb * hh } else { 0 }];
    let mut dh_all = vec![T::zero(); if proj { rows * pp } else { 0 }];
    let w_hh = MatRef::row_major(w.w_hh, g4, pp);
    for t in p.backward_steps() {
        for b in 0..bb {
            if p.valid(t, b) {
                let row = p.row(t, b);
                for (d, g) in dh[b * pp..][..pp].iter_mut().zip(&dy[row * pp..][..pp]) {
                    *d += *g;
                }
                if proj {
                    dh_all[row * pp..][..pp].copy_from_slice(&dh[b * pp..][..pp]);
                }
            }
        }
        let drs: &[T] = match w.w_hr {
            Some(w_hr) => {
                matmul(
                    &mut dr,
                    0,
                    hh,
                    false,
                    MatRef::row_major(&dh, bb, pp),
                    MatRef::row_major(w_hr, pp, hh),
                );
                &dr
            }
            None => &dh,
        };
        let one = T::one();
        for b in 0..bb {
            if !p.valid(t, b) {
                continue;
            }
            let row = p.row(t, b);
            let gr = &s.gates[row * g4..][..g4];
            let (i, f, g, o) = (
                &gr[..hh],
                &gr[hh..2 * hh],
                &gr[2 * hh..3 * hh],
                &gr[3 * hh..],
            );
            let tc = &s.tanhc[row * hh..][..hh];
            let cp = &s.cprev[row * hh..][..hh];
            let drb = &drs[b * hh..][..hh];
            let dcb = &mut dc[b * hh..][..hh];
            let dgr = &mut dg[row * g4..][..g4];
            for j in 0..hh {
                let dct = dcb[j] + drb[j] * o[j] * (one - tc[j] * tc[j]);
                dgr[j] = dct * g[j] * i[j] * (one - i[j]);
                dgr[hh + j] = dct * cp[j] * f[j] * (one - f[j]);
                dgr[2 * hh + j] = dct * i[j] * (one - g[j] * g[j]);
                dgr[3 * hh + j] = drb[j] * tc[j] * o[j] * (one - o[j]);
                dcb[j] = dct * f[j];
            }
        }
        let dg_t = MatRef::strided(&dg, p.step_offset(t, g4), bb, g4, p.step_rs(g4), 1);
        matmul(&mut dh_rec, 0, pp, false, dg_t, w_hh);
        for b in 0..bb {
            if p.valid(t, b) {
                dh[b * pp..][..pp].copy_from_slice(&dh_rec[b * pp..][..pp]);
            }
        }
    }
    let dg_m = MatRef::row_major(&dg, rows, g4);
    let mut dx = vec![T::zero(); rows * p.input];
    matmul(
        &mut dx,
        0,
        p.input,
        false,
        dg_m,
        MatRef::row_major(w.w_ih, g4, p.input),
    );
    let mut dw_ih = vec![T::zero(); g4 * p.input];
    matmul(
        &mut dw_ih,
        0,
        p.input,
        false,
        dg_m.t(),
        MatRef::row_major(x, rows, p.input),
    );
    let mut dw_hh = vec![T::zero(); g4 * pp];
    matmul(
        &mut dw_hh,
        0,
        pp,
        false,
        dg_m.t(),
        MatRef::row_major(&s.hprev, rows, pp),
    );
    let mut db = vec![T::zero(); g4];
    colsum_into(&dg, g4, &mut db);
    let dw_hr = if proj {
        // r = o * tanh(c) per row, the projection's input.
        let mut r = vec![T::zero(); rows * hh];
        for row in 0..rows {
            let o = &s.gates[row * g4 + 3 * hh..][..hh];
            let tc = &s.tanhc[row * hh..][..hh];
            for (rj, (oj, tj)) in r[row * hh..][..hh].iter_mut().zip(o.iter().zip(tc)) {
                *rj = *oj * *tj;
            }
        }
        let mut dw_hr = vec![T::zero(); pp * hh];
        matmul(
            &mut dw_hr,
            0,
            hh,
            false,
            MatRef::row_major(&dh_all, rows, pp).t(),
            MatRef::row_major(&r, rows, hh),
        );
        dw_hr
    } else {
        Vec::new()
    };
    LstmGrads {
        dx,
        dh0: dh,
        dc0: dc,
        dw_ih,
        dw_hh,
        db,
        dw_hr,
    }
}

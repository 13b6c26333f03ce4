//! Fused GRU recurrence on CPU (gate order r, z, n; `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`,
//! `h' = n + z * (h - n)`): forward over the whole sequence and its hand-written BPTT backward.

use super::gemm::{matmul, transposed, MatRef};
use super::math::Float;
use super::{colsum_into, Problem, Weights};

/// Activations the backward pass needs, one row per (step, batch) in the problem's row order.
pub(crate) struct GruSaved<T> {
    /// Activated gates r, z, n: `(rows, 3 * hidden)`.
    gates: Vec<T>,
    /// `W_hn h + b_hn` before the reset gate: `(rows, hidden)`.
    ghn: Vec<T>,
    /// State before each step: `(rows, hidden)`.
    hprev: Vec<T>,
}

/// Runs the sequence; writes `[ys (rows, hidden) | h_n (batch, hidden)]` into `out` and returns the
/// saved activations when `save`.
pub(crate) fn forward<T: Float>(
    p: &Problem,
    x: &[T],
    h0: &[T],
    w: &Weights<T>,
    out: &mut [T],
    save: bool,
) -> Option<GruSaved<T>> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g3 = 3 * hh;
    let mut gates = vec![T::zero(); rows * g3];
    if let Some(b_ih) = w.b_ih {
        for row in gates.chunks_exact_mut(g3) {
            row.copy_from_slice(b_ih);
        }
    }
    matmul(
        &mut gates,
        0,
        g3,
        w.b_ih.is_some(),
        MatRef::row_major(x, rows, p.input),
        MatRef::row_major(&transposed(w.w_ih, g3, p.input), p.input, g3),
    );
    // Row-major W_hh^T: the per-step product then reads the weights as they lie, with no packing.
    let w_hh_t_data = transposed(w.w_hh, g3, hh);
    let w_hh_t = MatRef::row_major(&w_hh_t_data, hh, g3);
    let mut h = h0.to_vec();
    let saved_len = |n: usize| if save { n } else { 0 };
    let mut ghn = vec![T::zero(); saved_len(rows * hh)];
    let mut hprev = vec![T::zero(); saved_len(rows * hh)];
    let mut gh = vec![T::zero(); bb * g3];
    let mut h_new = vec![T::zero(); bb * hh];
    for t in p.forward_steps() {
        if let Some(b_hh) = w.b_hh {
            for row in gh.chunks_exact_mut(g3) {
                row.copy_from_slice(b_hh);
            }
        }
        matmul(
            &mut gh,
            0,
            g3,
            w.b_hh.is_some(),
            MatRef::row_major(&h, bb, hh),
            w_hh_t,
        );
        for b in 0..bb {
            let row = p.row(t, b);
            let gr = &mut gates[row * g3..][..g3];
            let ghb = &gh[b * g3..][..g3];
            for (a, g) in gr[..2 * hh].iter_mut().zip(&ghb[..2 * hh]) {
                *a += *g;
            }
            T::sigmoid_inplace(&mut gr[..2 * hh]);
            let (rz, n) = gr.split_at_mut(2 * hh);
            let r = &rz[..hh];
            let ghn_b = &ghb[2 * hh..];
            for j in 0..hh {
                n[j] += r[j] * ghn_b[j];
            }
            T::tanh_inplace(n);
            let z = &rz[hh..];
            let hb = &h[b * hh..][..hh];
            let hn = &mut h_new[b * hh..][..hh];
            for j in 0..hh {
                hn[j] = n[j] + z[j] * (hb[j] - n[j]);
            }
            if save {
                ghn[row * hh..][..hh].copy_from_slice(ghn_b);
                hprev[row * hh..][..hh].copy_from_slice(hb);
            }
        }
        for b in 0..bb {
            let y = &mut out[p.row(t, b) * hh..][..hh];
            if p.valid(t, b) {
                y.copy_from_slice(&h_new[b * hh..][..hh]);
                h[b * hh..][..hh].copy_from_slice(y);
            } else {
                y.fill(T::zero());
            }
        }
    }
    out[rows * hh..][..bb * hh].copy_from_slice(&h);
    save.then_some(GruSaved { gates, ghn, hprev })
}

/// Gradients of the GRU recurrence.
pub(crate) struct GruGrads<T> {
    pub dx: Vec<T>,
    pub dh0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db_ih: Vec<T>,
    pub db_hh: Vec<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    x: &[T],
    w: &Weights<T>,
    s: &GruSaved<T>,
    grad_out: &[T],
) -> GruGrads<T> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g3 = 3 * hh;
    let dy = &grad_out[..rows * hh];
    let mut dh = grad_out[rows * hh..][..bb * hh].to_vec();
    let mut dgi = vec![T::zero(); rows * g3];
    let mut dgh = vec![T::zero(); rows * g3];
    let mut dh_rec = vec![T::zero(); bb * hh];
    let w_hh = MatRef::row_major(w.w_hh, g3, hh);
    let one = T::one();
    for t in p.backward_steps() {
        for b in 0..bb {
            let row = p.row(t, b);
            let dhr = &mut dh_rec[b * hh..][..hh];
            if !p.valid(t, b) {
                dhr.copy_from_slice(&dh[b * hh..][..hh]);
                continue;
            }
            let dhb = &mut dh[b * hh..][..hh];
            for (d, g) in dhb.iter_mut().zip(&dy[row * hh..][..hh]) {
                *d += *g;
            }
            let gr = &s.gates[row * g3..][..g3];
            let (r, z, n) = (&gr[..hh], &gr[hh..2 * hh], &gr[2 * hh..]);
            let ghn = &s.ghn[row * hh..][..hh];
            let hp = &s.hprev[row * hh..][..hh];
            let (gi, gh) = (&mut dgi[row * g3..][..g3], &mut dgh[row * g3..][..g3]);
            for j in 0..hh {
                let d = dhb[j];
                let dan = d * (one - z[j]) * (one - n[j] * n[j]);
                let dar = dan * ghn[j] * r[j] * (one - r[j]);
                let daz = d * (hp[j] - n[j]) * z[j] * (one - z[j]);
                gi[j] = dar;
                gi[hh + j] = daz;
                gi[2 * hh + j] = dan;
                gh[j] = dar;
                gh[hh + j] = daz;
                gh[2 * hh + j] = dan * r[j];
                dhr[j] = d * z[j];
            }
        }
        let dgh_t = MatRef::strided(&dgh, p.step_offset(t, g3), bb, g3, p.step_rs(g3), 1);
        // Invalid rows of dgh are zero, so they keep dh (copied into dh_rec above).
        matmul(&mut dh_rec, 0, hh, true, dgh_t, w_hh);
        std::mem::swap(&mut dh, &mut dh_rec);
    }
    let dgi_m = MatRef::row_major(&dgi, rows, g3);
    let dgh_m = MatRef::row_major(&dgh, rows, g3);
    let mut dx = vec![T::zero(); rows * p.input];
    matmul(
        &mut dx,
        0,
        p.input,
        false,
        dgi_m,
        MatRef::row_major(w.w_ih, g3, p.input),
    );
    let mut dw_ih = vec![T::zero(); g3 * p.input];
    matmul(
        &mut dw_ih,
        0,
        p.input,
        false,
        dgi_m.t(),
        MatRef::row_major(x, rows, p.input),
    );
    let mut dw_hh = vec![T::zero(); g3 * hh];
    matmul(
        &mut dw_hh,
        0,
        hh,
        false,
        dgh_m.t(),
        MatRef::row_major(&s.hprev, rows, hh),
    );
    let mut db_ih = vec![T::zero(); g3];
    colsum_into(&dgi, g3, &mut db_ih);
    let mut db_hh = vec![T::zero(); g3];
    colsum_into(&dgh, g3, &mut db_hh);
    GruGrads {
        dx,
        dh0: dh,
        dw_ih,
        dw_hh,
        db_ih,
        db_hh,
    }
}

//! Fused layer-normalised GRU recurrence on CPU (gate order r, z, n):
//! `gx = LN_x(W_ih x) + b_ih`, `gh = LN_h(W_hh h) + b_hh`, `r = σ(gx_r + gh_r)`,
//! `z = σ(gx_z + gh_z)`, `n = tanh(gx_n + r * gh_n)`, `h' = n + z * (h - n)`; forward over the
//! whole sequence and its hand-written BPTT backward, each chunk of the batch on its own thread
//! (see [`for_each_batch_chunk`]).

use super::batch::{chunk_rows, for_each_batch_chunk, Shared};
use super::gemm::{matmul, MatRef, PackedRhs};
use super::grad::input_gradient;
use super::layer_norm::{
    column_sums, normalize, normalize_backward, normalize_backward_rows, normalize_rows, LnWeights,
};
use super::math::Float;
use super::problem::Problem;
use super::scratch;
use std::ops::Range;

/// Activations the backward pass needs, one row per (step, batch) in the problem's row order.
pub(crate) struct GruLnSaved<T: Float> {
    /// Activated gates r, z, n: `(rows, 3 * hidden)`.
    gates: Vec<T>,
    /// `gh_n = LN_h(W_hh h)_n + b_hn` before the reset gate: `(rows, hidden)`.
    ghn: Vec<T>,
    /// State before each step: `(rows, hidden)`.
    hprev: Vec<T>,
    /// Normalised `W_ih x` and its `1 / std`: `(rows, 3 * hidden)`, `(rows)`.
    xhat_x: Vec<T>,
    rstd_x: Vec<T>,
    /// Normalised `W_hh h` and its `1 / std`.
    xhat_h: Vec<T>,
    rstd_h: Vec<T>,
}

impl<T: Float> Drop for GruLnSaved<T> {
    fn drop(&mut self) {
        for buf in [
            &mut self.gates,
            &mut self.ghn,
            &mut self.hprev,
            &mut self.xhat_x,
            &mut self.rstd_x,
            &mut self.xhat_h,
            &mut self.rstd_h,
        ] {
            scratch::give(std::mem::take(buf));
        }
    }
}

/// Buffers the forward's batch chunks write, each in its own rows.
struct ForwardBufs<T> {
    out: Shared<T>,
    gates: Shared<T>,
    ghn: Shared<T>,
    hprev: Shared<T>,
    xhat_h: Shared<T>,
    rstd_h: Shared<T>,
}

/// The parameters every step reads: `W_hh^T` packed, the gains and the summed biases.
struct StepParams<'a, T> {
    w_hh_t: PackedRhs<T>,
    x_w: &'a [T],
    h_w: &'a [T],
    /// `x_b + b_ih` and `h_b + b_hh`.
    x_bias: Vec<T>,
    h_bias: Vec<T>,
}

/// Runs the sequence; writes `[ys (rows, hidden) | h_n (batch, hidden)]` into `out` and returns
/// the saved activations when `save`.
pub(crate) fn forward<T: Float>(
    p: &Problem,
    x: &[T],
    h0: &[T],
    w: &LnWeights<T>,
    out: &mut [T],
    save: bool,
) -> Option<GruLnSaved<T>> {
    let (hh, rows) = (p.hidden, p.rows());
    let g3 = 3 * hh;
    // LN_x of every step's input projection, before the recurrence.
    let mut xhat_x = scratch::take(rows * g3);
    matmul(
        &mut xhat_x,
        0,
        g3,
        false,
        MatRef::row_major(x, rows, p.input),
        MatRef::row_major(w.base.w_ih, g3, p.input).t(),
        true,
    );
    let mut rstd_x = scratch::take(rows);
    normalize_rows(&mut xhat_x, g3, &mut rstd_x);
    let plus = |a: &[T], b: Option<&[T]>| -> Vec<T> {
        match b {
            Some(b) => a.iter().zip(b).map(|(u, v)| *u + *v).collect(),
            None => a.to_vec(),
        }
    };
    let params = StepParams {
        w_hh_t: PackedRhs::new(
            MatRef::row_major(w.base.w_hh, g3, hh).t(),
            chunk_rows(p.batch),
        ),
        x_w: w.x_w,
        h_w: w.h_w,
        x_bias: plus(w.x_b, w.base.b_ih),
        h_bias: plus(w.h_b, w.base.b_hh),
    };
    let saved_len = |n: usize| if save { n } else { 0 };
    // Every row of these buffers is written by the recurrence below (scratch::take).
    let mut gates = scratch::take(saved_len(rows * g3));
    let mut ghn = scratch::take(saved_len(rows * hh));
    let mut hprev = scratch::take(saved_len(rows * hh));
    let mut xhat_h = scratch::take(saved_len(rows * g3));
    let mut rstd_h = scratch::take(saved_len(rows));
    let bufs = ForwardBufs {
        out: Shared::new(out),
        gates: Shared::new(&mut gates),
        ghn: Shared::new(&mut ghn),
        hprev: Shared::new(&mut hprev),
        xhat_h: Shared::new(&mut xhat_h),
        rstd_h: Shared::new(&mut rstd_h),
    };
    let xhat_x_ref = &xhat_x;
    for_each_batch_chunk(p.batch, |range| {
        forward_chunk(p, range, h0, xhat_x_ref, &params, &bufs, save)
    });
    if !save {
        scratch::give(xhat_x);
        scratch::give(rstd_x);
        return None;
    }
    Some(GruLnSaved {
        gates,
        ghn,
        hprev,
        xhat_x,
        rstd_x,
        xhat_h,
        rstd_h,
    })
}

/// The forward recurrence of batch rows `range`.
fn forward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    h0: &[T],
    xhat_x: &[T],
    w: &StepParams<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let g3 = 3 * hh;
    let (b0, n) = (range.start, range.len());
    let mut h = h0[b0 * hh..][..n * hh].to_vec();
    let mut gh = vec![T::zero(); n * g3];
    let mut a = vec![T::zero(); g3];
    let mut ghn = vec![T::zero(); hh];
    let mut h_new = vec![T::zero(); n * hh];
    for t in p.forward_steps() {
        w.w_hh_t
            .matmul(&mut gh, 0, g3, false, MatRef::row_major(&h, n, hh));
        for i in 0..n {
            let row = p.row(t, b0 + i);
            let ghr = &mut gh[i * g3..][..g3];
            let rstd_h = normalize(ghr);
            let xr = &xhat_x[row * g3..][..g3];
            // r, z pre-activations: both parts; n: the input part, and gh_n apart.
            let (xr_rz, xr_n) = xr.split_at(2 * hh);
            let (gh_rz, gh_n) = ghr.split_at(2 * hh);
            let (a_rz, a_n) = a.split_at_mut(2 * hh);
            let (xw_rz, xw_n) = w.x_w.split_at(2 * hh);
            let (xb_rz, xb_n) = w.x_bias.split_at(2 * hh);
            let (hw_rz, hw_n) = w.h_w.split_at(2 * hh);
            let (hb_rz, hb_n) = w.h_bias.split_at(2 * hh);
            for ((a, (x, xw)), ((xb, g), (hw, hb))) in a_rz
                .iter_mut()
                .zip(xr_rz.iter().zip(xw_rz))
                .zip(xb_rz.iter().zip(gh_rz).zip(hw_rz.iter().zip(hb_rz)))
            {
                *a = *x * *xw + *xb + *g * *hw + *hb;
            }
            for ((a, (x, xw)), xb) in a_n.iter_mut().zip(xr_n.iter().zip(xw_n)).zip(xb_n) {
                *a = *x * *xw + *xb;
            }
            for ((n, g), (hw, hb)) in ghn.iter_mut().zip(gh_n).zip(hw_n.iter().zip(hb_n)) {
                *n = *g * *hw + *hb;
            }
            T::sigmoid_inplace(&mut a[..2 * hh]);
            let (rz, ng) = a.split_at_mut(2 * hh);
            for j in 0..hh {
                ng[j] += rz[j] * ghn[j];
            }
            T::tanh_inplace(ng);
            let zg = &rz[hh..];
            let hb = &h[i * hh..][..hh];
            let hn = &mut h_new[i * hh..][..hh];
            for j in 0..hh {
                hn[j] = ng[j] + zg[j] * (hb[j] - ng[j]);
            }
            if save {
                // SAFETY: row `row` belongs to this chunk.
                unsafe {
                    bufs.gates.slice(row * g3, g3).copy_from_slice(&a);
                    bufs.ghn.slice(row * hh, hh).copy_from_slice(&ghn);
                    bufs.hprev.slice(row * hh, hh).copy_from_slice(hb);
                    bufs.xhat_h.slice(row * g3, g3).copy_from_slice(ghr);
                    bufs.rstd_h.slice(row, 1)[0] = rstd_h;
                }
            }
        }
        for i in 0..n {
            // SAFETY: row belongs to this chunk.
            let y = unsafe { bufs.out.slice(p.row(t, b0 + i) * hh, hh) };
            if p.valid(t, b0 + i) {
                y.copy_from_slice(&h_new[i * hh..][..hh]);
                h[i * hh..][..hh].copy_from_slice(y);
            } else {
                y.fill(T::zero());
            }
        }
    }
    // SAFETY: this chunk's rows of the final state.
    unsafe { bufs.out.slice(rows * hh + b0 * hh, n * hh) }.copy_from_slice(&h);
}

/// Gradients of the layer-normalised GRU recurrence.
pub(crate) struct GruLnGrads<T> {
    /// Only when [`Problem::input_grad`].
    pub dx: Option<Vec<T>>,
    pub dh0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db_ih: Vec<T>,
    pub db_hh: Vec<T>,
    /// `[d x_w | d x_b | d h_w | d h_b]`.
    pub dnorm: Vec<T>,
}

/// Buffers the backward's batch chunks write, each in its own rows.
struct BackwardBufs<T> {
    /// `dL/dgx` and `dL/dgh` (after the layer norms' affine parts): `(rows, 3 * hidden)`.
    dgi: Shared<T>,
    dgh: Shared<T>,
    /// `dL/d(W_hh h)`, through `LN_h`: `(rows, 3 * hidden)`.
    dghr: Shared<T>,
    dh0: Shared<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    x: &[T],
    w: &LnWeights<T>,
    s: &GruLnSaved<T>,
    grad_out: &[T],
) -> GruLnGrads<T> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g3 = 3 * hh;
    // Written for every valid row; rows past a sequence's length must read as zero.
    let mut dgi = scratch::take(rows * g3);
    let mut dgh = scratch::take(rows * g3);
    let mut dghr = scratch::take(rows * g3);
    if p.lengths.is_some() {
        dgi.fill(T::zero());
        dgh.fill(T::zero());
        dghr.fill(T::zero());
    }
    let mut dh0 = vec![T::zero(); bb * hh];
    let bufs = BackwardBufs {
        dgi: Shared::new(&mut dgi),
        dgh: Shared::new(&mut dgh),
        dghr: Shared::new(&mut dghr),
        dh0: Shared::new(&mut dh0),
    };
    let w_hh = PackedRhs::new(MatRef::row_major(w.base.w_hh, g3, hh), chunk_rows(p.batch));
    for_each_batch_chunk(bb, |range| {
        backward_chunk(p, range, &w_hh, w.h_w, s, grad_out, &bufs)
    });
    // x_b and b_ih receive the column sums of dL/dgx; h_b and b_hh those of dL/dgh.
    let (db_ih, mut dwx) = column_sums(&dgi, &[&s.xhat_x], g3);
    let (db_hh, mut dwh) = column_sums(&dgh, &[&s.xhat_h], g3);
    let mut dnorm = Vec::with_capacity(4 * g3);
    dnorm.append(&mut dwx[0]);
    dnorm.extend_from_slice(&db_ih);
    dnorm.append(&mut dwh[0]);
    dnorm.extend_from_slice(&db_hh);
    // dL/d(W_ih x), through LN_x, in place of dL/dgx.
    normalize_backward_rows(&mut dgi, &s.xhat_x, &s.rstd_x, w.x_w, g3);
    let dgx = MatRef::row_major(&dgi, rows, g3);
    let dx = input_gradient(p, dgx, w.base.w_ih, g3);
    // Overwritten by the products (not accumulated into).
    let mut dw_ih = scratch::take(g3 * p.input);
    matmul(
        &mut dw_ih,
        0,
        p.input,
        false,
        dgx.t(),
        MatRef::row_major(x, rows, p.input),
        true,
    );
    let mut dw_hh = scratch::take(g3 * hh);
    matmul(
        &mut dw_hh,
        0,
        hh,
        false,
        MatRef::row_major(&dghr, rows, g3).t(),
        MatRef::row_major(&s.hprev, rows, hh),
        true,
    );
    scratch::give(dgi);
    scratch::give(dgh);
    scratch::give(dghr);
    GruLnGrads {
        dx,
        dh0,
        dw_ih,
        dw_hh,
        db_ih,
        db_hh,
        dnorm,
    }
}

/// The backward recurrence of batch rows `range`.
fn backward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    w_hh: &PackedRhs<T>,
    h_w: &[T],
    s: &GruLnSaved<T>,
    grad_out: &[T],
    bufs: &BackwardBufs<T>,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let g3 = 3 * hh;
    let (b0, n) = (range.start, range.len());
    let dy = &grad_out[..rows * hh];
    let mut dh = grad_out[rows * hh + b0 * hh..][..n * hh].to_vec();
    let mut dh_rec = vec![T::zero(); n * hh];
    let one = T::one();
    for t in p.backward_steps() {
        for i in 0..n {
            let dhr = &mut dh_rec[i * hh..][..hh];
            if !p.valid(t, b0 + i) {
                dhr.copy_from_slice(&dh[i * hh..][..hh]);
                continue;
            }
            let row = p.row(t, b0 + i);
            let dhb = &mut dh[i * hh..][..hh];
            for (d, g) in dhb.iter_mut().zip(&dy[row * hh..][..hh]) {
                *d += *g;
            }
            let gr = &s.gates[row * g3..][..g3];
            let (rg, zg, ng) = (&gr[..hh], &gr[hh..2 * hh], &gr[2 * hh..]);
            let ghn = &s.ghn[row * hh..][..hh];
            let hp = &s.hprev[row * hh..][..hh];
            // SAFETY: row `row` belongs to this chunk.
            let (gi, gh, ghr) = unsafe {
                (
                    bufs.dgi.slice(row * g3, g3),
                    bufs.dgh.slice(row * g3, g3),
                    bufs.dghr.slice(row * g3, g3),
                )
            };
            for j in 0..hh {
                let d = dhb[j];
                let dan = d * (one - zg[j]) * (one - ng[j] * ng[j]);
                let dar = dan * ghn[j] * rg[j] * (one - rg[j]);
                let daz = d * (hp[j] - ng[j]) * zg[j] * (one - zg[j]);
                gi[j] = dar;
                gi[hh + j] = daz;
                gi[2 * hh + j] = dan;
                gh[j] = dar;
                gh[hh + j] = daz;
                gh[2 * hh + j] = dan * rg[j];
                dhr[j] = d * zg[j];
            }
            ghr.copy_from_slice(gh);
            normalize_backward(ghr, &s.xhat_h[row * g3..][..g3], s.rstd_h[row], h_w);
        }
        let (start, len) = p.span(t, b0, n, g3);
        // SAFETY: this chunk's rows of step t, read while no row slice is live. Rows of sequences
        // past their length are zero, so those rows keep dh (copied into dh_rec above).
        let dghr_span = unsafe { bufs.dghr.slice(start, len) };
        let dghr_t = MatRef::strided(dghr_span, 0, n, g3, p.step_rs(g3), 1);
        w_hh.matmul(&mut dh_rec, 0, hh, true, dghr_t);
        std::mem::swap(&mut dh, &mut dh_rec);
    }
    // SAFETY: this chunk's rows of the initial-state gradient.
    unsafe { bufs.dh0.slice(b0 * hh, n * hh) }.copy_from_slice(&dh);
}

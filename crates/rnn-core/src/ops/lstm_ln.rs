//! Fused layer-normalised LSTM recurrence on CPU (gate order i, f, g, o):
//! `a = LN_x(W_ih x) + LN_h(W_hh h) + b_ih + b_hh`, `c' = f * c + i * g`,
//! `h' = o * tanh(LN_c(c'))`; forward over the whole sequence and its hand-written BPTT backward,
//! each chunk of the batch on its own thread (see [`for_each_batch_chunk`]).

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
pub(crate) struct LstmLnSaved<T: Float> {
    /// Activated gates i, f, g, o: `(rows, 4 * hidden)`.
    gates: Vec<T>,
    /// Normalised `W_ih x` and its `1 / std`: `(rows, 4 * hidden)`, `(rows)`.
    xhat_x: Vec<T>,
    rstd_x: Vec<T>,
    /// Normalised `W_hh h` and its `1 / std`.
    xhat_h: Vec<T>,
    rstd_h: Vec<T>,
    /// `h` and `c` before each step: `(rows, hidden)`.
    hprev: Vec<T>,
    cprev: Vec<T>,
    /// Normalised new cell state and its `1 / std`.
    chat: Vec<T>,
    rstd_c: Vec<T>,
    /// `tanh(LN_c(c'))`: `(rows, hidden)`.
    tanhc: Vec<T>,
}

impl<T: Float> Drop for LstmLnSaved<T> {
    fn drop(&mut self) {
        for buf in [
            &mut self.gates,
            &mut self.xhat_x,
            &mut self.rstd_x,
            &mut self.xhat_h,
            &mut self.rstd_h,
            &mut self.hprev,
            &mut self.cprev,
            &mut self.chat,
            &mut self.rstd_c,
            &mut self.tanhc,
        ] {
            scratch::give(std::mem::take(buf));
        }
    }
}

/// Buffers the forward's batch chunks write, each in its own rows.
struct ForwardBufs<T> {
    out: Shared<T>,
    gates: Shared<T>,
    xhat_h: Shared<T>,
    rstd_h: Shared<T>,
    hprev: Shared<T>,
    cprev: Shared<T>,
    chat: Shared<T>,
    rstd_c: Shared<T>,
    tanhc: Shared<T>,
}

/// The parameters every step reads: `W_hh^T` packed, the gains and the summed biases.
struct StepParams<'a, T> {
    w_hh_t: PackedRhs<T>,
    x_w: &'a [T],
    h_w: &'a [T],
    /// `x_b + h_b + b_ih + b_hh`.
    bias: Vec<T>,
    c_w: &'a [T],
    c_b: &'a [T],
}

/// Runs the sequence; writes `[ys (rows, hidden) | h_n (batch, hidden) | c_n (batch, hidden)]`
/// into `out` and returns the saved activations when `save`.
pub(crate) fn forward<T: Float>(
    p: &Problem,
    x: &[T],
    h0: &[T],
    c0: &[T],
    w: &LnWeights<T>,
    out: &mut [T],
    save: bool,
) -> Option<LstmLnSaved<T>> {
    let (hh, rows) = (p.hidden, p.rows());
    let g4 = 4 * hh;
    // LN_x of every step's input projection, before the recurrence.
    let mut xhat_x = scratch::take(rows * g4);
    matmul(
        &mut xhat_x,
        0,
        g4,
        false,
        MatRef::row_major(x, rows, p.input),
        MatRef::row_major(w.base.w_ih, g4, p.input).t(),
        true,
    );
    let mut rstd_x = scratch::take(rows);
    normalize_rows(&mut xhat_x, g4, &mut rstd_x);
    let mut bias: Vec<T> = w.x_b.iter().zip(w.h_b).map(|(a, b)| *a + *b).collect();
    if let (Some(b_ih), Some(b_hh)) = (w.base.b_ih, w.base.b_hh) {
        for ((v, a), b) in bias.iter_mut().zip(b_ih).zip(b_hh) {
            *v += *a + *b;
        }
    }
    let params = StepParams {
        w_hh_t: PackedRhs::new(
            MatRef::row_major(w.base.w_hh, g4, hh).t(),
            chunk_rows(p.batch),
        ),
        x_w: w.x_w,
        h_w: w.h_w,
        bias,
        c_w: w.c_w,
        c_b: w.c_b,
    };
    let saved_len = |n: usize| if save { n } else { 0 };
    // Every row of these buffers is written by the recurrence below (scratch::take).
    let mut gates = scratch::take(saved_len(rows * g4));
    let mut xhat_h = scratch::take(saved_len(rows * g4));
    let mut rstd_h = scratch::take(saved_len(rows));
    let mut hprev = scratch::take(saved_len(rows * hh));
    let mut cprev = scratch::take(saved_len(rows * hh));
    let mut chat = scratch::take(saved_len(rows * hh));
    let mut rstd_c = scratch::take(saved_len(rows));
    let mut tanhc = scratch::take(saved_len(rows * hh));
    let bufs = ForwardBufs {
        out: Shared::new(out),
        gates: Shared::new(&mut gates),
        xhat_h: Shared::new(&mut xhat_h),
        rstd_h: Shared::new(&mut rstd_h),
        hprev: Shared::new(&mut hprev),
        cprev: Shared::new(&mut cprev),
        chat: Shared::new(&mut chat),
        rstd_c: Shared::new(&mut rstd_c),
        tanhc: Shared::new(&mut tanhc),
    };
    let xhat_x_ref = &xhat_x;
    for_each_batch_chunk(p.batch, |range| {
        forward_chunk(p, range, h0, c0, xhat_x_ref, &params, &bufs, save)
    });
    if !save {
        scratch::give(xhat_x);
        scratch::give(rstd_x);
        return None;
    }
    Some(LstmLnSaved {
        gates,
        xhat_x,
        rstd_x,
        xhat_h,
        rstd_h,
        hprev,
        cprev,
        chat,
        rstd_c,
        tanhc,
    })
}

/// The forward recurrence of batch rows `range`.
#[allow(clippy::too_many_arguments)]
fn forward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    h0: &[T],
    c0: &[T],
    xhat_x: &[T],
    w: &StepParams<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let g4 = 4 * hh;
    let (b0, n) = (range.start, range.len());
    let mut h = h0[b0 * hh..][..n * hh].to_vec();
    let mut c = c0[b0 * hh..][..n * hh].to_vec();
    let mut gh = vec![T::zero(); n * g4];
    let mut a = vec![T::zero(); g4];
    let mut chat = vec![T::zero(); hh];
    let mut h_new = vec![T::zero(); n * hh];
    let mut c_new = vec![T::zero(); n * hh];
    for t in p.forward_steps() {
        w.w_hh_t
            .matmul(&mut gh, 0, g4, false, MatRef::row_major(&h, n, hh));
        for i in 0..n {
            let row = p.row(t, b0 + i);
            let ghr = &mut gh[i * g4..][..g4];
            let rstd_h = normalize(ghr);
            let xr = &xhat_x[row * g4..][..g4];
            for ((((a, x), xw), (g, hw)), b) in a
                .iter_mut()
                .zip(xr)
                .zip(w.x_w)
                .zip(ghr.iter().zip(w.h_w))
                .zip(&w.bias)
            {
                *a = *x * *xw + *g * *hw + *b;
            }
            T::sigmoid_inplace(&mut a[..2 * hh]);
            T::tanh_inplace(&mut a[2 * hh..3 * hh]);
            T::sigmoid_inplace(&mut a[3 * hh..]);
            let (ig, rest) = a.split_at(hh);
            let (fg, rest) = rest.split_at(hh);
            let gg = &rest[..hh];
            let cb = &c[i * hh..][..hh];
            let cn = &mut c_new[i * hh..][..hh];
            for (((cn, f), c), (i, g)) in cn.iter_mut().zip(fg).zip(cb).zip(ig.iter().zip(gg)) {
                *cn = *f * *c + *i * *g;
            }
            chat.copy_from_slice(cn);
            let rstd_c = normalize(&mut chat);
            let hn = &mut h_new[i * hh..][..hh];
            for ((hn, x), (cw, cb)) in hn.iter_mut().zip(&chat).zip(w.c_w.iter().zip(w.c_b)) {
                *hn = *x * *cw + *cb;
            }
            T::tanh_inplace(hn);
            if save {
                // SAFETY: row `row` belongs to this chunk.
                unsafe {
                    bufs.gates.slice(row * g4, g4).copy_from_slice(&a);
                    bufs.xhat_h.slice(row * g4, g4).copy_from_slice(ghr);
                    bufs.rstd_h.slice(row, 1)[0] = rstd_h;
                    bufs.hprev
                        .slice(row * hh, hh)
                        .copy_from_slice(&h[i * hh..][..hh]);
                    bufs.cprev.slice(row * hh, hh).copy_from_slice(cb);
                    bufs.chat.slice(row * hh, hh).copy_from_slice(&chat);
                    bufs.rstd_c.slice(row, 1)[0] = rstd_c;
                    bufs.tanhc.slice(row * hh, hh).copy_from_slice(hn);
                }
            }
            let og = &a[3 * hh..];
            for (hn, o) in hn.iter_mut().zip(og) {
                *hn = *o * *hn;
            }
        }
        for i in 0..n {
            // SAFETY: row belongs to this chunk.
            let y = unsafe { bufs.out.slice(p.row(t, b0 + i) * hh, hh) };
            if p.valid(t, b0 + i) {
                y.copy_from_slice(&h_new[i * hh..][..hh]);
                h[i * hh..][..hh].copy_from_slice(y);
                c[i * hh..][..hh].copy_from_slice(&c_new[i * hh..][..hh]);
            } else {
                y.fill(T::zero());
            }
        }
    }
    // SAFETY: this chunk's rows of the final state.
    unsafe {
        bufs.out
            .slice(rows * hh + b0 * hh, n * hh)
            .copy_from_slice(&h);
        bufs.out
            .slice(rows * hh + p.batch * hh + b0 * hh, n * hh)
            .copy_from_slice(&c);
    }
}

/// Gradients of the layer-normalised LSTM recurrence.
pub(crate) struct LstmLnGrads<T> {
    /// Only when [`Problem::input_grad`].
    pub dx: Option<Vec<T>>,
    pub dh0: Vec<T>,
    pub dc0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    /// Of `b_ih` and of `b_hh` (the same: they enter as a sum).
    pub db: Vec<T>,
    /// `[d x_w | d x_b | d h_w | d h_b | d c_w | d c_b]`.
    pub dnorm: Vec<T>,
}

/// Buffers the backward's batch chunks write, each in its own rows.
struct BackwardBufs<T> {
    /// `dL/da`, the gate pre-activations: `(rows, 4 * hidden)`.
    da: Shared<T>,
    /// `dL/d(W_hh h)`, through `LN_h`: `(rows, 4 * hidden)`.
    dgh: Shared<T>,
    /// `dL/d LN_c(c')`: `(rows, hidden)`.
    dlnc: Shared<T>,
    dh0: Shared<T>,
    dc0: Shared<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    x: &[T],
    w: &LnWeights<T>,
    s: &LstmLnSaved<T>,
    grad_out: &[T],
) -> LstmLnGrads<T> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g4 = 4 * hh;
    // Written for every valid row; rows past a sequence's length must read as zero.
    let mut da = scratch::take(rows * g4);
    let mut dgh = scratch::take(rows * g4);
    let mut dlnc = scratch::take(rows * hh);
    if p.lengths.is_some() {
        da.fill(T::zero());
        dgh.fill(T::zero());
        dlnc.fill(T::zero());
    }
    let mut dh0 = vec![T::zero(); bb * hh];
    let mut dc0 = vec![T::zero(); bb * hh];
    let bufs = BackwardBufs {
        da: Shared::new(&mut da),
        dgh: Shared::new(&mut dgh),
        dlnc: Shared::new(&mut dlnc),
        dh0: Shared::new(&mut dh0),
        dc0: Shared::new(&mut dc0),
    };
    let w_hh = PackedRhs::new(MatRef::row_major(w.base.w_hh, g4, hh), chunk_rows(p.batch));
    for_each_batch_chunk(bb, |range| {
        backward_chunk(p, range, &w_hh, w, s, grad_out, &bufs)
    });
    // The LN biases and b_ih, b_hh all receive the column sums of dL/da.
    let (db, mut dws) = column_sums(&da, &[&s.xhat_x, &s.xhat_h], g4);
    let (dc_b, mut dc_w) = column_sums(&dlnc, &[&s.chat], hh);
    let mut dnorm = Vec::with_capacity(4 * g4 + 2 * hh);
    dnorm.extend_from_slice(&dws[0]);
    dnorm.extend_from_slice(&db);
    dnorm.append(&mut dws[1]);
    dnorm.extend_from_slice(&db);
    dnorm.append(&mut dc_w[0]);
    dnorm.extend(dc_b);
    // dL/d(W_ih x), through LN_x, in place of dL/da.
    normalize_backward_rows(&mut da, &s.xhat_x, &s.rstd_x, w.x_w, g4);
    let dgx = MatRef::row_major(&da, rows, g4);
    let dx = input_gradient(p, dgx, w.base.w_ih, g4);
    // Overwritten by the products (not accumulated into).
    let mut dw_ih = scratch::take(g4 * p.input);
    matmul(
        &mut dw_ih,
        0,
        p.input,
        false,
        dgx.t(),
        MatRef::row_major(x, rows, p.input),
        true,
    );
    let mut dw_hh = scratch::take(g4 * hh);
    matmul(
        &mut dw_hh,
        0,
        hh,
        false,
        MatRef::row_major(&dgh, rows, g4).t(),
        MatRef::row_major(&s.hprev, rows, hh),
        true,
    );
    scratch::give(da);
    scratch::give(dgh);
    scratch::give(dlnc);
    LstmLnGrads {
        dx,
        dh0,
        dc0,
        dw_ih,
        dw_hh,
        db,
        dnorm,
    }
}

/// The backward recurrence of batch rows `range`.
fn backward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    w_hh: &PackedRhs<T>,
    w: &LnWeights<T>,
    s: &LstmLnSaved<T>,
    grad_out: &[T],
    bufs: &BackwardBufs<T>,
) {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g4 = 4 * hh;
    let (b0, n) = (range.start, range.len());
    let dy = &grad_out[..rows * hh];
    let mut dh = grad_out[rows * hh + b0 * hh..][..n * hh].to_vec();
    let mut dc = grad_out[(rows + bb) * hh + b0 * hh..][..n * hh].to_vec();
    let mut dh_rec = vec![T::zero(); n * hh];
    let mut dcn = vec![T::zero(); hh];
    let one = T::one();
    for t in p.backward_steps() {
        for i in 0..n {
            if !p.valid(t, b0 + i) {
                continue;
            }
            let row = p.row(t, b0 + i);
            let dhb = &mut dh[i * hh..][..hh];
            for (d, g) in dhb.iter_mut().zip(&dy[row * hh..][..hh]) {
                *d += *g;
            }
            let gr = &s.gates[row * g4..][..g4];
            let (ig, fg) = (&gr[..hh], &gr[hh..2 * hh]);
            let (gg, og) = (&gr[2 * hh..3 * hh], &gr[3 * hh..]);
            let tc = &s.tanhc[row * hh..][..hh];
            let cp = &s.cprev[row * hh..][..hh];
            // SAFETY: row `row` belongs to this chunk.
            let (dl, dar, dghr) = unsafe {
                (
                    bufs.dlnc.slice(row * hh, hh),
                    bufs.da.slice(row * g4, g4),
                    bufs.dgh.slice(row * g4, g4),
                )
            };
            for j in 0..hh {
                dl[j] = dhb[j] * og[j] * (one - tc[j] * tc[j]);
            }
            dcn.copy_from_slice(dl);
            normalize_backward(&mut dcn, &s.chat[row * hh..][..hh], s.rstd_c[row], w.c_w);
            let dcb = &mut dc[i * hh..][..hh];
            for j in 0..hh {
                let dct = dcb[j] + dcn[j];
                dar[j] = dct * gg[j] * ig[j] * (one - ig[j]);
                dar[hh + j] = dct * cp[j] * fg[j] * (one - fg[j]);
                dar[2 * hh + j] = dct * ig[j] * (one - gg[j] * gg[j]);
                dar[3 * hh + j] = dhb[j] * tc[j] * og[j] * (one - og[j]);
                dcb[j] = dct * fg[j];
            }
            dghr.copy_from_slice(dar);
            normalize_backward(dghr, &s.xhat_h[row * g4..][..g4], s.rstd_h[row], w.h_w);
        }
        let (start, len) = p.span(t, b0, n, g4);
        // SAFETY: this chunk's rows of step t, read while no row slice is live.
        let dgh_span = unsafe { bufs.dgh.slice(start, len) };
        let dgh_t = MatRef::strided(dgh_span, 0, n, g4, p.step_rs(g4), 1);
        w_hh.matmul(&mut dh_rec, 0, hh, false, dgh_t);
        for i in 0..n {
            if p.valid(t, b0 + i) {
                dh[i * hh..][..hh].copy_from_slice(&dh_rec[i * hh..][..hh]);
            }
        }
    }
    // SAFETY: this chunk's rows of the initial-state gradients.
    unsafe {
        bufs.dh0.slice(b0 * hh, n * hh).copy_from_slice(&dh);
        bufs.dc0.slice(b0 * hh, n * hh).copy_from_slice(&dc);
    }
}

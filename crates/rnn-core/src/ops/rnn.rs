//! Fused vanilla RNN recurrence on CPU (`h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act = tanh or
//! ReLU): forward over the whole sequence and its hand-written BPTT backward. The recurrence runs
//! each chunk of the batch on its own thread (see [`for_each_batch_chunk`]).

use super::batch::{chunk_rows, for_each_batch_chunk, Shared};
use super::gemm::{matmul, matmul_shared_lhs, MatRef, PackedRhs};
use super::grad::{colsum_into, input_gradient};
use super::masks::KernelMasks;
use super::math::Float;
use super::problem::{Problem, Weights};
use super::scratch;
use std::ops::Range;

/// Activations the backward pass needs, one row per (step, batch) in the problem's row order.
pub(crate) struct RnnSaved<T: Float> {
    /// `h'` of every row (before masking): `(rows, hidden)`; the activation's derivative comes
    /// from it (`1 - h'^2` for tanh, `h' > 0` for ReLU).
    act: Vec<T>,
    /// State before each step as it entered `W_hh` (after recurrent dropout): `(rows, hidden)`.
    hprev: Vec<T>,
}

/// Buffers the forward's batch chunks write, each in its own rows.
struct ForwardBufs<T> {
    act: Shared<T>,
    out: Shared<T>,
    hprev: Shared<T>,
}

/// Runs the sequence; writes `[ys (rows, hidden) | h_n (batch, hidden)]` into `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float>(
    p: &Problem,
    relu: bool,
    x: &[T],
    h0: &[T],
    w: &Weights<T>,
    m: &KernelMasks<T>,
    out: &mut [T],
    save: bool,
) -> Option<RnnSaved<T>> {
    let (hh, rows) = (p.hidden, p.rows());
    // Written in full by the bias rows and the product below.
    let mut act = scratch::take(rows * hh);
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
        // One large product: packing the transposed view costs little here.
        MatRef::row_major(w.w_ih, hh, p.input).t(),
        true,
    );
    // W_hh^T packed once for the per-step products.
    let w_hh_t = PackedRhs::new(MatRef::row_major(w.w_hh, hh, hh).t(), chunk_rows(p.batch));
    // Every row is written by the recurrence below (scratch::take).
    let mut hprev = scratch::take(if save { rows * hh } else { 0 });
    let bufs = ForwardBufs {
        act: Shared::new(&mut act),
        out: Shared::new(out),
        hprev: Shared::new(&mut hprev),
    };
    for_each_batch_chunk(p.batch, |range| {
        forward_chunk(p, range, relu, h0, &w_hh_t, m, &bufs, save)
    });
    if !save {
        scratch::give(act);
        return None;
    }
    Some(RnnSaved { act, hprev })
}

impl<T: Float> Drop for RnnSaved<T> {
    fn drop(&mut self) {
        scratch::give(std::mem::take(&mut self.act));
        scratch::give(std::mem::take(&mut self.hprev));
    }
}

/// The forward recurrence of batch rows `range`.
#[allow(clippy::too_many_arguments)]
fn forward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    relu: bool,
    h0: &[T],
    w_hh_t: &PackedRhs<T>,
    m: &KernelMasks<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let (b0, n) = (range.start, range.len());
    let mut h = h0[b0 * hh..][..n * hh].to_vec();
    // h as it enters W_hh under recurrent dropout.
    let mut h_rec = vec![T::zero(); if m.rec.is_some() { n * hh } else { 0 }];
    for t in p.forward_steps() {
        let (start, len) = p.span(t, b0, n, hh);
        // SAFETY: this chunk's rows of step t; one range live at a time.
        let span = unsafe { bufs.act.slice(start, len) };
        let hr = m.recurrent_input(&h, b0, hh, &mut h_rec);
        w_hh_t.matmul(span, 0, p.step_rs(hh), true, MatRef::row_major(hr, n, hh));
        for i in 0..n {
            let row = p.row(t, b0 + i);
            // SAFETY: row `row` belongs to this chunk.
            let a = unsafe { bufs.act.slice(row * hh, hh) };
            if relu {
                for v in a.iter_mut() {
                    *v = num_traits::Float::max(*v, T::zero());
                }
            } else {
                T::tanh_inplace(a);
            }
            // SAFETY: row `row` belongs to this chunk.
            unsafe {
                if save {
                    let hr = if m.rec.is_some() { &h_rec } else { &h };
                    bufs.hprev
                        .slice(row * hh, hh)
                        .copy_from_slice(&hr[i * hh..][..hh]);
                }
                let y = bufs.out.slice(row * hh, hh);
                if p.valid(t, b0 + i) {
                    let hb = &mut h[i * hh..][..hh];
                    KernelMasks::zone(m.zh, row, a, hb, y);
                    hb.copy_from_slice(y);
                } else {
                    y.fill(T::zero());
                }
            }
        }
    }
    // SAFETY: this chunk's rows of the final state.
    unsafe { bufs.out.slice(rows * hh + b0 * hh, n * hh) }.copy_from_slice(&h);
}

/// Gradients of the vanilla RNN recurrence (`db` serves both `bias_ih` and `bias_hh`).
pub(crate) struct RnnGrads<T> {
    /// Only when [`Problem::input_grad`].
    pub dx: Option<Vec<T>>,
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
    m: &KernelMasks<T>,
    s: &RnnSaved<T>,
    grad_out: &[T],
) -> RnnGrads<T> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    // Written for every valid row; rows past a sequence's length must read as zero.
    let mut dg = scratch::take(rows * hh);
    if p.lengths.is_some() {
        dg.fill(T::zero());
    }
    let mut dh0 = vec![T::zero(); bb * hh];
    let (dg_s, dh0_s) = (Shared::new(&mut dg), Shared::new(&mut dh0));
    let w_hh = PackedRhs::new(MatRef::row_major(w.w_hh, hh, hh), chunk_rows(p.batch));
    for_each_batch_chunk(bb, |range| {
        backward_chunk(p, range, relu, (&w_hh, m), s, grad_out, dg_s, dh0_s)
    });
    let dg_m = MatRef::row_major(&dg, rows, hh);
    let dx = input_gradient(p, dg_m, w.w_ih, hh);
    // Overwritten by the products (not accumulated into).
    let mut dw_ih = scratch::take(hh * p.input);
    let x_m = MatRef::row_major(x, rows, p.input);
    let mut dw_hh = scratch::take(hh * hh);
    let hprev = MatRef::row_major(&s.hprev, rows, hh);
    // dW_ih = dG^T x and dW_hh = dG^T h_prev, with dG^T packed once for both.
    matmul_shared_lhs(
        dg_m.t(),
        &mut [(&mut dw_ih, p.input, x_m), (&mut dw_hh, hh, hprev)],
        true,
    );
    let mut db = vec![T::zero(); hh];
    colsum_into(&dg, hh, &mut db);
    scratch::give(dg);
    RnnGrads {
        dx,
        dh0,
        dw_ih,
        dw_hh,
        db,
    }
}

/// The backward recurrence of batch rows `range`.
#[allow(clippy::too_many_arguments)]
fn backward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    relu: bool,
    (w_hh, m): (&PackedRhs<T>, &KernelMasks<T>),
    s: &RnnSaved<T>,
    grad_out: &[T],
    dg: Shared<T>,
    dh0: Shared<T>,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let (b0, n) = (range.start, range.len());
    let dy = &grad_out[..rows * hh];
    let mut dh = grad_out[rows * hh + b0 * hh..][..n * hh].to_vec();
    let mut dh_rec = vec![T::zero(); n * hh];
    // Zoneout: the part of d h_t that goes straight to h_{t-1}.
    let mut keep = vec![T::zero(); if m.zh.is_some() { n * hh } else { 0 }];
    let one = T::one();
    for t in p.backward_steps() {
        for i in 0..n {
            if !p.valid(t, b0 + i) {
                continue;
            }
            let row = p.row(t, b0 + i);
            let a = &s.act[row * hh..][..hh];
            let dyr = &dy[row * hh..][..hh];
            let dhb = &mut dh[i * hh..][..hh];
            for (d, g) in dhb.iter_mut().zip(dyr) {
                *d += *g;
            }
            if m.zh.is_some() {
                KernelMasks::unzone(m.zh, row, dhb, &mut keep[i * hh..][..hh]);
            }
            // SAFETY: row `row` belongs to this chunk.
            let dgr = unsafe { dg.slice(row * hh, hh) };
            for j in 0..hh {
                let d = dhb[j];
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
        let (start, len) = p.span(t, b0, n, hh);
        // SAFETY: this chunk's rows of step t, read while no row slice is live.
        let dg_span = unsafe { dg.slice(start, len) };
        let dg_t = MatRef::strided(dg_span, 0, n, hh, p.step_rs(hh), 1);
        w_hh.matmul(&mut dh_rec, 0, hh, false, dg_t);
        for i in 0..n {
            if p.valid(t, b0 + i) {
                let dhb = &mut dh[i * hh..][..hh];
                let dhr = &dh_rec[i * hh..][..hh];
                match m.rec {
                    Some(r) => {
                        let r = &r[(b0 + i) * hh..][..hh];
                        for j in 0..hh {
                            dhb[j] = dhr[j] * r[j];
                        }
                    }
                    None => dhb.copy_from_slice(dhr),
                }
                if m.zh.is_some() {
                    for (d, k) in dhb.iter_mut().zip(&keep[i * hh..][..hh]) {
                        *d += *k;
                    }
                }
            }
        }
    }
    // SAFETY: this chunk's rows of the initial-state gradient.
    unsafe { dh0.slice(b0 * hh, n * hh) }.copy_from_slice(&dh);
}

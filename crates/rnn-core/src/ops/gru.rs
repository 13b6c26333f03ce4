//! Fused GRU recurrence on CPU (gate order r, z, n; `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`,
//! `h' = n + z * (h - n)`): forward over the whole sequence and its hand-written BPTT backward. The
//! recurrence runs each chunk of the batch on its own thread (see [`for_each_batch_chunk`]).

use super::batch::{chunk_rows, for_each_batch_chunk, per_step_projection, Shared, StepInput};
use super::gemm::{matmul, MatRef, PackedRhs};
use super::grad::{colsum_into, input_gradient};
use super::masks::KernelMasks;
use super::math::Float;
use super::problem::{Problem, Weights};
use super::scratch;
use super::units::{self, GateSlice};
use std::ops::Range;

/// Activations the backward pass needs, one row per (step, batch) in the problem's row order.
pub(crate) struct GruSaved<T: Float> {
    /// Activated gates r, z, n: `(rows, 3 * hidden)`.
    gates: Vec<T>,
    /// `W_hn h + b_hn` before the reset gate: `(rows, hidden)`.
    ghn: Vec<T>,
    /// State before each step: `(rows, hidden)`.
    hprev: Vec<T>,
}

/// Buffers the forward's batch chunks write, each in its own rows.
struct ForwardBufs<T> {
    gates: Shared<T>,
    out: Shared<T>,
    ghn: Shared<T>,
    hprev: Shared<T>,
}

/// Runs the sequence; writes `[ys (rows, hidden) | h_n (batch, hidden)]` into `out` and returns the
/// saved activations when `save`.
pub(crate) fn forward<T: Float>(
    p: &Problem,
    x: &[T],
    h0: &[T],
    w: &Weights<T>,
    m: &KernelMasks<T>,
    out: &mut [T],
    save: bool,
) -> Option<GruSaved<T>> {
    let (hh, rows) = (p.hidden, p.rows());
    let g3 = 3 * hh;
    let split = units::slices(
        p,
        false,
        m,
        units::Pass {
            gates: 3,
            forward: true,
        },
    );
    let per_step = split.is_none() && per_step_projection::<T>(p.batch, p.input, g3);
    // The input side's bias with b_hh's r and z parts folded in: the recurrent r and z products
    // accumulate straight into the input pre-activations (only n keeps W_hn h + b_hn apart).
    let bias: Option<Vec<T>> = w.b_ih.map(|b_ih| {
        let mut b = b_ih.to_vec();
        if let Some(b_hh) = w.b_hh {
            for (v, u) in b[..2 * hh].iter_mut().zip(b_hh) {
                *v += *u;
            }
        }
        b
    });
    // Input pre-activations of every step are kept only when the backward needs them or when the
    // input projection runs before the recurrence.
    let mut gates = scratch::take(if save || !per_step { rows * g3 } else { 0 });
    let w_ih_t = if per_step {
        Some(PackedRhs::new(
            MatRef::row_major(w.w_ih, g3, p.input).t(),
            chunk_rows(p.batch),
        ))
    } else {
        if let Some(bias) = &bias {
            for row in gates.chunks_exact_mut(g3) {
                row.copy_from_slice(bias);
            }
        }
        matmul(
            &mut gates,
            0,
            g3,
            bias.is_some(),
            MatRef::row_major(x, rows, p.input),
            // One large product: packing the transposed view costs little here.
            MatRef::row_major(w.w_ih, g3, p.input).t(),
            true,
        );
        None
    };
    let input = w_ih_t.as_ref().map(|w_ih_t| StepInput {
        x,
        w_ih_t,
        bias: bias.as_deref(),
    });
    let b_hn = w.b_hh.map(|b| &b[2 * hh..]);
    let saved_len = |n: usize| if save { n } else { 0 };
    // Every row of these buffers is written by the recurrence below (scratch::take).
    let mut ghn = scratch::take(saved_len(rows * hh));
    let mut hprev = scratch::take(saved_len(rows * hh));
    let bufs = ForwardBufs {
        gates: Shared::new(&mut gates),
        out: Shared::new(out),
        ghn: Shared::new(&mut ghn),
        hprev: Shared::new(&mut hprev),
    };
    if let Some(slices) = split {
        forward_split(p, h0, w.w_hh, b_hn, m, &slices, &bufs, save);
    } else {
        // W_hh^T packed once for the per-step products, as its r, z columns and its n columns.
        let w_rz_t = PackedRhs::new(
            MatRef::row_major(&w.w_hh[..2 * hh * hh], 2 * hh, hh).t(),
            chunk_rows(p.batch),
        );
        let w_n_t = PackedRhs::new(
            MatRef::row_major(&w.w_hh[2 * hh * hh..], hh, hh).t(),
            chunk_rows(p.batch),
        );
        for_each_batch_chunk(p.batch, |range| {
            forward_chunk(
                p,
                range,
                h0,
                (input.as_ref(), &w_rz_t, &w_n_t),
                b_hn,
                m,
                &bufs,
                save,
            )
        });
    }
    if !save {
        scratch::give(gates);
        return None;
    }
    Some(GruSaved { gates, ghn, hprev })
}

impl<T: Float> Drop for GruSaved<T> {
    fn drop(&mut self) {
        for buf in [&mut self.gates, &mut self.ghn, &mut self.hprev] {
            scratch::give(std::mem::take(buf));
        }
    }
}

/// The forward recurrence of batch rows `range`.
#[allow(clippy::too_many_arguments)]
fn forward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    h0: &[T],
    (input, w_rz_t, w_n_t): (Option<&StepInput<T>>, &PackedRhs<T>, &PackedRhs<T>),
    b_hn: Option<&[T]>,
    m: &KernelMasks<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let g3 = 3 * hh;
    let (b0, n) = (range.start, range.len());
    let mut h = h0[b0 * hh..][..n * hh].to_vec();
    // This step's W_hn h + b_hn.
    let mut ghn = vec![T::zero(); n * hh];
    let mut h_new = vec![T::zero(); n * hh];
    // h as it enters W_hh under recurrent dropout (the update interpolates from h itself).
    let mut h_rec = vec![T::zero(); if m.rec.is_some() { n * hh } else { 0 }];
    // This step's input pre-activations when they are not kept for all steps.
    let mut scratch = vec![T::zero(); if bufs.gates.is_empty() { n * g3 } else { 0 }];
    for t in p.forward_steps() {
        let (gs, rs) = if scratch.is_empty() {
            let (start, len) = p.span(t, b0, n, g3);
            // SAFETY: this chunk's rows of step t (Problem::span); the only live range.
            (unsafe { bufs.gates.slice(start, len) }, p.step_rs(g3))
        } else {
            (&mut scratch[..], g3)
        };
        if let Some(input) = input {
            input.project(p, t, b0, n, gs, rs);
        }
        if let Some(b_hn) = b_hn {
            for row in ghn.chunks_exact_mut(hh) {
                row.copy_from_slice(b_hn);
            }
        }
        let h_m = MatRef::row_major(m.recurrent_input(&h, b0, hh, &mut h_rec), n, hh);
        // r, z: onto the input pre-activations (bias included there).
        w_rz_t.matmul(gs, 0, rs, true, h_m);
        w_n_t.matmul(&mut ghn, 0, hh, b_hn.is_some(), h_m);
        for i in 0..n {
            let row = p.row(t, b0 + i);
            let gr = &mut gs[i * rs..][..g3];
            T::sigmoid_inplace(&mut gr[..2 * hh]);
            let (rz, ng) = gr.split_at_mut(2 * hh);
            let rg = &rz[..hh];
            let ghn_b = &ghn[i * hh..][..hh];
            for j in 0..hh {
                ng[j] += rg[j] * ghn_b[j];
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
                    bufs.ghn.slice(row * hh, hh).copy_from_slice(ghn_b);
                    bufs.hprev.slice(row * hh, hh).copy_from_slice(hb);
                }
            }
        }
        for i in 0..n {
            let row = p.row(t, b0 + i);
            // SAFETY: row belongs to this chunk.
            let y = unsafe { bufs.out.slice(row * hh, hh) };
            if p.valid(t, b0 + i) {
                let hb = &mut h[i * hh..][..hh];
                KernelMasks::zone(m.zh, row, &h_new[i * hh..][..hh], hb, y);
                hb.copy_from_slice(y);
            } else {
                y.fill(T::zero());
            }
        }
    }
    // SAFETY: this chunk's rows of the final state.
    unsafe { bufs.out.slice(rows * hh + b0 * hh, n * hh) }.copy_from_slice(&h);
}

/// The forward recurrence with the hidden units split across threads ([`units`], as the LSTM's
/// `forward_split`). The input projection of every step is already in `bufs.gates`.
#[allow(clippy::too_many_arguments)]
fn forward_split<T: Float>(
    p: &Problem,
    h0: &[T],
    w_hh: &[T],
    b_hn: Option<&[T]>,
    m: &KernelMasks<T>,
    slices: &[Range<usize>],
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    // Gate blocks r, z, n; `g` holds r, z pre-activations and `W_hn h + b_hn`.
    let mut parts: Vec<GateSlice<'_, T>> = slices
        .iter()
        .map(|u| GateSlice::new(p, w_hh, 3, u, m))
        .collect();
    let h = units::run_forward(p, h0, &mut parts, |t, h, h_next, s| {
        split_step(p, t, h, h_next, b_hn, s, m, bufs, save)
    });
    // SAFETY: the threads are done; the final state's rows of `out`.
    unsafe { bufs.out.slice(rows * hh, bb * hh) }.copy_from_slice(&h);
}

/// Step `t` of one unit slice: reads all of `h`, writes the slice's units of `h_next`, of the
/// output and of the saved buffers.
#[allow(clippy::too_many_arguments)]
fn split_step<T: Float>(
    p: &Problem,
    t: usize,
    h: &[T],
    h_next: Shared<T>,
    b_hn: Option<&[T]>,
    s: &mut GateSlice<'_, T>,
    m: &KernelMasks<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (hh, g3, u0, nu) = (p.hidden, 3 * p.hidden, s.units.start, s.units.len());
    let hr = m.recurrent_input(h, 0, hh, &mut s.h_rec);
    // SAFETY (every `slice` below): this slice's units of rows of step `t`; no other thread
    // touches those columns, and `h_next` is not read until every slice is done.
    for i in 0..p.batch {
        let row = p.row(t, i);
        let g = &mut s.g[i * 3 * nu..][..3 * nu];
        for k in 0..2 {
            g[k * nu..][..nu]
                .copy_from_slice(unsafe { bufs.gates.slice(row * g3 + k * hh + u0, nu) });
        }
        match b_hn {
            Some(b) => g[2 * nu..].copy_from_slice(&b[u0..][..nu]),
            None => g[2 * nu..].fill(T::zero()),
        }
    }
    s.w.matmul(&mut s.g, 3 * nu, true, (hr, p.batch, hh));
    for i in 0..p.batch {
        let row = p.row(t, i);
        let g = &mut s.g[i * 3 * nu..][..3 * nu];
        T::sigmoid_inplace(&mut g[..2 * nu]);
        let (rz, ghn) = g.split_at(2 * nu);
        let (rg, zg) = rz.split_at(nu);
        let ng = unsafe { bufs.gates.slice(row * g3 + 2 * hh + u0, nu) };
        for j in 0..nu {
            ng[j] += rg[j] * ghn[j];
        }
        T::tanh_inplace(ng);
        let hb = &h[i * hh + u0..][..nu];
        let hn = unsafe { h_next.slice(i * hh + u0, nu) };
        for j in 0..nu {
            hn[j] = ng[j] + zg[j] * (hb[j] - ng[j]);
        }
        if save {
            for (k, gk) in [rg, zg].into_iter().enumerate() {
                unsafe { bufs.gates.slice(row * g3 + k * hh + u0, nu) }.copy_from_slice(gk);
            }
            unsafe {
                bufs.ghn.slice(row * hh + u0, nu).copy_from_slice(ghn);
                bufs.hprev.slice(row * hh + u0, nu).copy_from_slice(hb);
            }
        }
        let y = unsafe { bufs.out.slice(row * hh + u0, nu) };
        if p.valid(t, i) {
            y.copy_from_slice(hn);
        } else {
            y.fill(T::zero());
            hn.copy_from_slice(hb);
        }
    }
}

/// Gradients of the GRU recurrence.
pub(crate) struct GruGrads<T> {
    /// Only when [`Problem::input_grad`].
    pub dx: Option<Vec<T>>,
    pub dh0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db_ih: Vec<T>,
    pub db_hh: Vec<T>,
}

/// Buffers the backward's batch chunks write, each in its own rows.
struct BackwardBufs<T> {
    dgi: Shared<T>,
    dgh: Shared<T>,
    dh0: Shared<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    x: &[T],
    w: &Weights<T>,
    m: &KernelMasks<T>,
    s: &GruSaved<T>,
    grad_out: &[T],
) -> GruGrads<T> {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g3 = 3 * hh;
    // Written for every valid row; rows past a sequence's length must read as zero.
    let mut dgi = scratch::take(rows * g3);
    let mut dgh = scratch::take(rows * g3);
    if p.lengths.is_some() {
        dgi.fill(T::zero());
        dgh.fill(T::zero());
    }
    let mut dh0 = vec![T::zero(); bb * hh];
    let bufs = BackwardBufs {
        dgi: Shared::new(&mut dgi),
        dgh: Shared::new(&mut dgh),
        dh0: Shared::new(&mut dh0),
    };
    let w_hh = PackedRhs::new(MatRef::row_major(w.w_hh, g3, hh), chunk_rows(p.batch));
    for_each_batch_chunk(bb, |range| {
        backward_chunk(p, range, &w_hh, m, s, grad_out, &bufs)
    });
    let dgi_m = MatRef::row_major(&dgi, rows, g3);
    let dgh_m = MatRef::row_major(&dgh, rows, g3);
    let dx = input_gradient(p, dgi_m, w.w_ih, g3);
    // Overwritten by the products (not accumulated into).
    let mut dw_ih = scratch::take(g3 * p.input);
    let x_m = MatRef::row_major(x, rows, p.input);
    matmul(&mut dw_ih, 0, p.input, false, dgi_m.t(), x_m, true);
    let mut dw_hh = scratch::take(g3 * hh);
    // dW_hh reads h as it entered W_hh: masked under recurrent dropout.
    let mut h_rec = scratch::take(if m.rec.is_some() { rows * hh } else { 0 });
    if let Some(r) = m.rec {
        for row in 0..rows {
            let b = if p.batch_first {
                row / p.seq_len
            } else {
                row % p.batch
            };
            let (src, mask) = (&s.hprev[row * hh..][..hh], &r[b * hh..][..hh]);
            for ((o, a), k) in h_rec[row * hh..][..hh].iter_mut().zip(src).zip(mask) {
                *o = *a * *k;
            }
        }
    }
    let hprev = MatRef::row_major(if m.rec.is_some() { &h_rec } else { &s.hprev }, rows, hh);
    matmul(&mut dw_hh, 0, hh, false, dgh_m.t(), hprev, true);
    scratch::give(h_rec);
    let mut db_ih = vec![T::zero(); g3];
    colsum_into(&dgi, g3, &mut db_ih);
    let mut db_hh = vec![T::zero(); g3];
    colsum_into(&dgh, g3, &mut db_hh);
    scratch::give(dgi);
    scratch::give(dgh);
    GruGrads {
        dx,
        dh0,
        dw_ih,
        dw_hh,
        db_ih,
        db_hh,
    }
}

/// The backward recurrence of batch rows `range`.
fn backward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    w_hh: &PackedRhs<T>,
    m: &KernelMasks<T>,
    s: &GruSaved<T>,
    grad_out: &[T],
    bufs: &BackwardBufs<T>,
) {
    let (hh, rows) = (p.hidden, p.rows());
    let g3 = 3 * hh;
    let (b0, n) = (range.start, range.len());
    let dy = &grad_out[..rows * hh];
    let mut dh = grad_out[rows * hh + b0 * hh..][..n * hh].to_vec();
    let mut dh_rec = vec![T::zero(); n * hh];
    // Zoneout: the part of d h_t that goes straight to h_{t-1}.
    let mut keep = vec![T::zero(); if m.zh.is_some() { hh } else { 0 }];
    // W_hh^T dG_h of one step, before the recurrent-dropout mask.
    let mut dh_w = vec![T::zero(); if m.rec.is_some() { n * hh } else { 0 }];
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
            if m.zh.is_some() {
                KernelMasks::unzone(m.zh, row, dhb, &mut keep);
            }
            let gr = &s.gates[row * g3..][..g3];
            let (rg, zg, ng) = (&gr[..hh], &gr[hh..2 * hh], &gr[2 * hh..]);
            let ghn = &s.ghn[row * hh..][..hh];
            let hp = &s.hprev[row * hh..][..hh];
            // SAFETY: row `row` belongs to this chunk.
            let (gi, gh) = unsafe { (bufs.dgi.slice(row * g3, g3), bufs.dgh.slice(row * g3, g3)) };
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
            if m.zh.is_some() {
                for (d, k) in dhr.iter_mut().zip(&keep) {
                    *d += *k;
                }
            }
        }
        let (start, len) = p.span(t, b0, n, g3);
        // SAFETY: this chunk's rows of step t, read while no row slice is live. Rows of sequences
        // past their length are zero, so those rows keep dh (copied into dh_rec above).
        let dgh_span = unsafe { bufs.dgh.slice(start, len) };
        let dgh_t = MatRef::strided(dgh_span, 0, n, g3, p.step_rs(g3), 1);
        match m.rec {
            Some(r) => {
                // Rows past a sequence's length have dG_h = 0, so they add nothing.
                w_hh.matmul(&mut dh_w, 0, hh, false, dgh_t);
                let r = &r[b0 * hh..][..n * hh];
                for ((d, g), k) in dh_rec.iter_mut().zip(&dh_w).zip(r) {
                    *d += *g * *k;
                }
            }
            None => w_hh.matmul(&mut dh_rec, 0, hh, true, dgh_t),
        }
        std::mem::swap(&mut dh, &mut dh_rec);
    }
    // SAFETY: this chunk's rows of the initial-state gradient.
    unsafe { bufs.dh0.slice(b0 * hh, n * hh) }.copy_from_slice(&dh);
}

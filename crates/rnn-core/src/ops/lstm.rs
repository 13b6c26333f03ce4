//! Fused LSTM recurrence on CPU (gate order i, f, g, o; optional projection `weight_hr`):
//! forward over the whole sequence and its hand-written BPTT backward. The recurrence runs each
//! chunk of the batch on its own thread (see [`for_each_batch_chunk`]).

use super::batch::{chunk_rows, for_each_batch_chunk, per_step_projection, Shared, StepInput};
use super::gemm::{matmul, matmul_shared_lhs, MatRef, PackedRhs};
use super::grad::{colsum_into, input_gradient};
use super::masks::KernelMasks;
use super::math::Float;
use super::problem::{Problem, Weights};
use super::scratch;
use super::units::{self, GateSlice};
use std::ops::Range;

/// Activations the backward pass needs, each with one row per (step, batch) in the problem's row
/// order.
pub(crate) struct LstmSaved<T: Float> {
    /// Activated gates i, f, g, o: `(rows, 4 * hidden)`.
    gates: Vec<T>,
    /// State `h` before each step as it entered `W_hh` (after recurrent dropout): `(rows, state)`.
    hprev: Vec<T>,
    /// Cell `c` before each step: `(rows, hidden)`.
    cprev: Vec<T>,
    /// `tanh(c)` after each step: `(rows, hidden)`.
    tanhc: Vec<T>,
}

impl<T: Float> Drop for LstmSaved<T> {
    fn drop(&mut self) {
        for buf in [
            &mut self.gates,
            &mut self.hprev,
            &mut self.cprev,
            &mut self.tanhc,
        ] {
            scratch::give(std::mem::take(buf));
        }
    }
}

/// Buffers the forward's batch chunks write, each in its own rows.
struct ForwardBufs<T> {
    gates: Shared<T>,
    out: Shared<T>,
    hprev: Shared<T>,
    cprev: Shared<T>,
    tanhc: Shared<T>,
}

/// Runs the sequence; writes `[ys (rows, state) | h_n (batch, state) | c_n (batch, hidden)]` into
/// `out` and returns the saved activations when `save`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float>(
    p: &Problem,
    x: &[T],
    h0: &[T],
    c0: &[T],
    w: &Weights<T>,
    m: &KernelMasks<T>,
    out: &mut [T],
    save: bool,
) -> Option<LstmSaved<T>> {
    let (hh, pp, rows) = (p.hidden, p.state, p.rows());
    let g4 = 4 * hh;
    let bias: Option<Vec<T>> = match (w.b_ih, w.b_hh) {
        (Some(b_ih), Some(b_hh)) => Some(b_ih.iter().zip(b_hh).map(|(a, b)| *a + *b).collect()),
        _ => None,
    };
    let split = units::slices(
        p,
        w.w_hr.is_some(),
        m,
        units::Pass {
            gates: 4,
            forward: true,
        },
    );
    let per_step = split.is_none() && per_step_projection::<T>(p.batch, p.input, g4);
    // Pre-activations of every step are kept only when the backward needs them or when the input
    // projection runs before the recurrence.
    let mut gates = scratch::take(if save || !per_step { rows * g4 } else { 0 });
    let w_ih_t = if per_step {
        Some(PackedRhs::new(
            MatRef::row_major(w.w_ih, g4, p.input).t(),
            chunk_rows(p.batch),
        ))
    } else {
        if let Some(bias) = &bias {
            for row in gates.chunks_exact_mut(g4) {
                row.copy_from_slice(bias);
            }
        }
        // The input projection of every step: one GEMM.
        matmul(
            &mut gates,
            0,
            g4,
            bias.is_some(),
            MatRef::row_major(x, rows, p.input),
            // One large product: packing the transposed view costs little here.
            MatRef::row_major(w.w_ih, g4, p.input).t(),
            true,
        );
        None
    };
    let input = w_ih_t.as_ref().map(|w_ih_t| StepInput {
        x,
        w_ih_t,
        bias: bias.as_deref(),
    });
    let saved_len = |n: usize| if save { n } else { 0 };
    // Every row of these buffers is written by the recurrence below (scratch::take).
    let mut hprev = scratch::take(saved_len(rows * pp));
    let mut cprev = scratch::take(saved_len(rows * hh));
    let mut tanhc = scratch::take(saved_len(rows * hh));
    let bufs = ForwardBufs {
        gates: Shared::new(&mut gates),
        out: Shared::new(out),
        hprev: Shared::new(&mut hprev),
        cprev: Shared::new(&mut cprev),
        tanhc: Shared::new(&mut tanhc),
    };
    if let Some(slices) = split {
        forward_split(p, h0, c0, w.w_hh, m, &slices, &bufs, save);
    } else {
        // W_hh^T (and W_hr^T) packed once for the per-step products.
        let w_hh_t = PackedRhs::new(MatRef::row_major(w.w_hh, g4, pp).t(), chunk_rows(p.batch));
        let w_hr_t = w
            .w_hr
            .map(|w_hr| PackedRhs::new(MatRef::row_major(w_hr, pp, hh).t(), chunk_rows(p.batch)));
        let weights = (input.as_ref(), &w_hh_t, w_hr_t.as_ref());
        for_each_batch_chunk(p.batch, |range| {
            forward_chunk(p, range, h0, c0, weights, m, &bufs, save)
        });
    }
    if !save {
        scratch::give(gates);
        return None;
    }
    Some(LstmSaved {
        gates,
        hprev,
        cprev,
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
    (input, w_hh_t, w_hr_t): (Option<&StepInput<T>>, &PackedRhs<T>, Option<&PackedRhs<T>>),
    m: &KernelMasks<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (hh, pp, rows) = (p.hidden, p.state, p.rows());
    let g4 = 4 * hh;
    let (b0, n) = (range.start, range.len());
    let mut h = h0[b0 * pp..][..n * pp].to_vec();
    let mut c = c0[b0 * hh..][..n * hh].to_vec();
    let mut c_new = vec![T::zero(); n * hh];
    let mut tc = vec![T::zero(); n * hh];
    let mut r = vec![T::zero(); n * hh];
    let mut h_proj = vec![T::zero(); if w_hr_t.is_some() { n * pp } else { 0 }];
    // h as it enters W_hh under recurrent dropout.
    let mut h_rec = vec![T::zero(); if m.rec.is_some() { n * pp } else { 0 }];
    // This step's gates when they are not kept for all steps.
    let mut scratch = vec![T::zero(); if bufs.gates.is_empty() { n * g4 } else { 0 }];
    for t in p.forward_steps() {
        let (gs, rs) = if scratch.is_empty() {
            let (start, len) = p.span(t, b0, n, g4);
            // SAFETY: this chunk's rows of step t (Problem::span); the only live range.
            (unsafe { bufs.gates.slice(start, len) }, p.step_rs(g4))
        } else {
            (&mut scratch[..], g4)
        };
        if let Some(input) = input {
            input.project(p, t, b0, n, gs, rs);
        }
        let hr = m.recurrent_input(&h, b0, pp, &mut h_rec);
        w_hh_t.matmul(gs, 0, rs, true, MatRef::row_major(hr, n, pp));
        for i in 0..n {
            let row = p.row(t, b0 + i);
            let gr = &mut gs[i * rs..][..g4];
            T::sigmoid_inplace(&mut gr[..2 * hh]);
            T::tanh_inplace(&mut gr[2 * hh..3 * hh]);
            T::sigmoid_inplace(&mut gr[3 * hh..]);
            let (ig, rest) = gr.split_at(hh);
            let (fg, rest) = rest.split_at(hh);
            let (gg, og) = rest.split_at(hh);
            let cb = &c[i * hh..][..hh];
            let cn = &mut c_new[i * hh..][..hh];
            for j in 0..hh {
                cn[j] = fg[j] * cb[j] + ig[j] * gg[j];
            }
            let tcb = &mut tc[i * hh..][..hh];
            T::tanh_into(cn, tcb);
            let rb = &mut r[i * hh..][..hh];
            for j in 0..hh {
                rb[j] = og[j] * tcb[j];
            }
            if save {
                // SAFETY: row `row` belongs to this chunk.
                unsafe {
                    bufs.hprev
                        .slice(row * pp, pp)
                        .copy_from_slice(&hr[i * pp..][..pp]);
                    bufs.cprev.slice(row * hh, hh).copy_from_slice(cb);
                    bufs.tanhc.slice(row * hh, hh).copy_from_slice(tcb);
                }
            }
        }
        let h_new: &[T] = match w_hr_t {
            Some(w_hr_t) => {
                w_hr_t.matmul(&mut h_proj, 0, pp, false, MatRef::row_major(&r, n, hh));
                &h_proj
            }
            None => &r,
        };
        for i in 0..n {
            let row = p.row(t, b0 + i);
            // SAFETY: row `row` belongs to this chunk.
            let y = unsafe { bufs.out.slice(row * pp, pp) };
            if p.valid(t, b0 + i) {
                let hb = &mut h[i * pp..][..pp];
                KernelMasks::zone(m.zh, row, &h_new[i * pp..][..pp], hb, y);
                hb.copy_from_slice(y);
                let cb = &mut c[i * hh..][..hh];
                let cn = &mut c_new[i * hh..][..hh];
                KernelMasks::zone_inplace(m.zc, row, cb, cn);
                cb.copy_from_slice(cn);
            } else {
                y.fill(T::zero());
            }
        }
    }
    // SAFETY: this chunk's rows of the final state.
    unsafe {
        bufs.out
            .slice(rows * pp + b0 * pp, n * pp)
            .copy_from_slice(&h);
        bufs.out
            .slice(rows * pp + p.batch * pp + b0 * hh, n * hh)
            .copy_from_slice(&c);
    }
}

/// One thread's part of [`forward_split`]: its gate blocks i, f, g, o ([`GateSlice`]) and its
/// units of `c`, `(batch, units)`.
struct UnitSlice<'a, T: Float> {
    s: GateSlice<'a, T>,
    c: Vec<T>,
}

/// The forward recurrence with the hidden units split across threads ([`units`]): each step,
/// every slice computes its units' gates from the whole previous `h` and writes its units of
/// the new `h` into the other of two buffers. The input projection of every step is already in
/// `bufs.gates`.
#[allow(clippy::too_many_arguments)]
fn forward_split<T: Float>(
    p: &Problem,
    h0: &[T],
    c0: &[T],
    w_hh: &[T],
    m: &KernelMasks<T>,
    slices: &[Range<usize>],
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let mut parts: Vec<UnitSlice<'_, T>> = slices
        .iter()
        .map(|u| {
            let nu = u.len();
            let mut c = Vec::with_capacity(bb * nu);
            for i in 0..bb {
                c.extend_from_slice(&c0[i * hh + u.start..][..nu]);
            }
            UnitSlice {
                s: GateSlice::new(p, w_hh, 4, u, m),
                c,
            }
        })
        .collect();
    let h = units::run_forward(p, h0, &mut parts, |t, h, h_next, s| {
        split_step(p, t, h, h_next, s, m, bufs, save)
    });
    // SAFETY: the threads are done; the final state's rows of `out`.
    unsafe {
        bufs.out.slice(rows * hh, bb * hh).copy_from_slice(&h);
        for s in &parts {
            let (u0, nu) = (s.s.units.start, s.s.units.len());
            for i in 0..bb {
                bufs.out
                    .slice(rows * hh + bb * hh + i * hh + u0, nu)
                    .copy_from_slice(&s.c[i * nu..][..nu]);
            }
        }
    }
}

/// Step `t` of one unit slice: reads all of `h`, writes the slice's units of `h_next`, of the
/// output and of the saved buffers.
#[allow(clippy::too_many_arguments)]
fn split_step<T: Float>(
    p: &Problem,
    t: usize,
    h: &[T],
    h_next: Shared<T>,
    part: &mut UnitSlice<'_, T>,
    m: &KernelMasks<T>,
    bufs: &ForwardBufs<T>,
    save: bool,
) {
    let (s, cs) = (&mut part.s, &mut part.c);
    let (hh, g4, u0, nu) = (p.hidden, 4 * p.hidden, s.units.start, s.units.len());
    let hr = m.recurrent_input(h, 0, hh, &mut s.h_rec);
    // SAFETY (every `slice` below): this slice's units of rows of step `t`; no other thread
    // touches those columns, and `h_next` is not read until every slice is done.
    for i in 0..p.batch {
        let row = p.row(t, i);
        for k in 0..4 {
            let pre = unsafe { bufs.gates.slice(row * g4 + k * hh + u0, nu) };
            s.g[(i * 4 + k) * nu..][..nu].copy_from_slice(pre);
        }
    }
    s.w.matmul(&mut s.g, 4 * nu, true, (hr, p.batch, hh));
    for i in 0..p.batch {
        let row = p.row(t, i);
        let gr = &mut s.g[i * 4 * nu..][..4 * nu];
        T::sigmoid_inplace(&mut gr[..2 * nu]);
        T::tanh_inplace(&mut gr[2 * nu..3 * nu]);
        T::sigmoid_inplace(&mut gr[3 * nu..]);
        let (ig, rest) = gr.split_at(nu);
        let (fg, rest) = rest.split_at(nu);
        let (gg, og) = rest.split_at(nu);
        let c = &mut cs[i * nu..][..nu];
        let valid = p.valid(t, i);
        let y = unsafe { bufs.out.slice(row * hh + u0, nu) };
        let hn = unsafe { h_next.slice(i * hh + u0, nu) };
        if save {
            for (k, gk) in [ig, fg, gg, og].into_iter().enumerate() {
                unsafe { bufs.gates.slice(row * g4 + k * hh + u0, nu) }.copy_from_slice(gk);
            }
            unsafe {
                bufs.hprev
                    .slice(row * hh + u0, nu)
                    .copy_from_slice(&hr[i * hh + u0..][..nu]);
                bufs.cprev.slice(row * hh + u0, nu).copy_from_slice(c);
            }
        }
        // c_new into `y` first (it becomes h below), tanh(c_new) into `hn`.
        for j in 0..nu {
            y[j] = fg[j] * c[j] + ig[j] * gg[j];
        }
        T::tanh_into(y, hn);
        if save {
            unsafe { bufs.tanhc.slice(row * hh + u0, nu).copy_from_slice(hn) };
        }
        if valid {
            c.copy_from_slice(y);
            for j in 0..nu {
                hn[j] *= og[j];
            }
            y.copy_from_slice(hn);
        } else {
            y.fill(T::zero());
            hn.copy_from_slice(&h[i * hh + u0..][..nu]);
        }
    }
}

/// Gradients of the LSTM recurrence.
pub(crate) struct LstmGrads<T> {
    /// Only when [`Problem::input_grad`].
    pub dx: Option<Vec<T>>,
    pub dh0: Vec<T>,
    pub dc0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db: Vec<T>,
    pub dw_hr: Vec<T>,
}

/// Buffers the backward's batch chunks write, each in its own rows.
struct BackwardBufs<T> {
    dg: Shared<T>,
    dh_all: Shared<T>,
    dh0: Shared<T>,
    dc0: Shared<T>,
}

/// BPTT through the saved forward. `grad_out` has the layout of the forward's `out`.
pub(crate) fn backward<T: Float>(
    p: &Problem,
    x: &[T],
    w: &Weights<T>,
    m: &KernelMasks<T>,
    s: &LstmSaved<T>,
    grad_out: &[T],
) -> LstmGrads<T> {
    let (bb, hh, pp, rows) = (p.batch, p.hidden, p.state, p.rows());
    let g4 = 4 * hh;
    let proj = w.w_hr.is_some();
    // Written for every valid row; rows past a sequence's length must read as zero.
    let mut dg = scratch::take(rows * g4);
    let mut dh_all = scratch::take(if proj { rows * pp } else { 0 });
    if p.lengths.is_some() {
        dg.fill(T::zero());
        dh_all.fill(T::zero());
    }
    let mut dh0 = vec![T::zero(); bb * pp];
    let mut dc0 = vec![T::zero(); bb * hh];
    let bufs = BackwardBufs {
        dg: Shared::new(&mut dg),
        dh_all: Shared::new(&mut dh_all),
        dh0: Shared::new(&mut dh0),
        dc0: Shared::new(&mut dc0),
    };
    if let Some(slices) = units::slices(
        p,
        proj,
        m,
        units::Pass {
            gates: 4,
            forward: false,
        },
    ) {
        backward_split(p, w.w_hh, m, s, grad_out, &slices, &bufs);
    } else {
        let w_hh = PackedRhs::new(MatRef::row_major(w.w_hh, g4, pp), chunk_rows(p.batch));
        let w_hr = w
            .w_hr
            .map(|w_hr| PackedRhs::new(MatRef::row_major(w_hr, pp, hh), chunk_rows(p.batch)));
        let packed = (&w_hh, w_hr.as_ref());
        for_each_batch_chunk(bb, |range| {
            backward_chunk(p, range, packed, m, s, grad_out, &bufs)
        });
    }
    let dg_m = MatRef::row_major(&dg, rows, g4);
    let dx = input_gradient(p, dg_m, w.w_ih, g4);
    // Overwritten by the products (not accumulated into).
    let mut dw_ih = scratch::take(g4 * p.input);
    let x_m = MatRef::row_major(x, rows, p.input);
    let mut dw_hh = scratch::take(g4 * pp);
    let hprev = MatRef::row_major(&s.hprev, rows, pp);
    // dW_ih = dG^T x and dW_hh = dG^T h_prev, with dG^T packed once for both.
    matmul_shared_lhs(
        dg_m.t(),
        &mut [(&mut dw_ih, p.input, x_m), (&mut dw_hh, pp, hprev)],
        true,
    );
    let mut db = vec![T::zero(); g4];
    colsum_into(&dg, g4, &mut db);
    let dw_hr = if proj {
        // r = o * tanh(c) per row, the projection's input.
        let mut r = scratch::take(rows * hh);
        for row in 0..rows {
            let o = &s.gates[row * g4 + 3 * hh..][..hh];
            let tc = &s.tanhc[row * hh..][..hh];
            for (rj, (oj, tj)) in r[row * hh..][..hh].iter_mut().zip(o.iter().zip(tc)) {
                *rj = *oj * *tj;
            }
        }
        let mut dw_hr = scratch::take(pp * hh);
        let dh_m = MatRef::row_major(&dh_all, rows, pp);
        matmul(
            &mut dw_hr,
            0,
            hh,
            false,
            dh_m.t(),
            MatRef::row_major(&r, rows, hh),
            true,
        );
        scratch::give(r);
        dw_hr
    } else {
        Vec::new()
    };
    scratch::give(dg);
    scratch::give(dh_all);
    LstmGrads {
        dx,
        dh0,
        dc0,
        dw_ih,
        dw_hh,
        db,
        dw_hr,
    }
}

/// One thread's part of [`backward_split`]: its hidden units, the columns of `W_hh` that give
/// their share of `dh_{t-1}` (packed), and their gradients.
struct BackSlice<T: Float> {
    units: Range<usize>,
    /// `W_hh[:, units]`, `(4 * hidden, units)`.
    w_cols: PackedRhs<T>,
    /// d h and d c of the slice's units, `(batch, units)`.
    dh: Vec<T>,
    dc: Vec<T>,
    /// `dG · W_hh[:, units]` of this step, `(batch, units)`.
    dh_rec: Vec<T>,
}

/// The backward recurrence with the hidden units split across threads ([`units`]), two
/// meetings per step: first each slice turns its units' `dh`, `dc` into their columns of `dG`
/// (all four gate blocks); then, with every column of `dG` written, each slice computes its
/// units' `dh_{t-1} = dG · W_hh[:, units]`.
fn backward_split<T: Float>(
    p: &Problem,
    w_hh: &[T],
    m: &KernelMasks<T>,
    s: &LstmSaved<T>,
    grad_out: &[T],
    slices: &[Range<usize>],
    bufs: &BackwardBufs<T>,
) {
    let (bb, hh, rows) = (p.batch, p.hidden, p.rows());
    let g4 = 4 * hh;
    let mut parts: Vec<BackSlice<T>> = slices
        .iter()
        .map(|u| {
            let nu = u.len();
            let grad = |off: usize| {
                let mut v = Vec::with_capacity(bb * nu);
                for i in 0..bb {
                    v.extend_from_slice(&grad_out[off + i * hh + u.start..][..nu]);
                }
                v
            };
            BackSlice {
                units: u.clone(),
                w_cols: PackedRhs::new(MatRef::strided(w_hh, u.start, g4, nu, hh, 1), bb),
                dh: grad(rows * hh),
                dc: grad(rows * hh + bb * hh),
                dh_rec: vec![T::zero(); bb * nu],
            }
        })
        .collect();
    let steps: Vec<usize> = p.backward_steps().collect();
    units::run_steps(&mut parts, 2 * steps.len(), |k, part| {
        let t = steps[k / 2];
        if k % 2 == 0 {
            back_gates(p, t, part, s, &grad_out[..rows * hh], bufs);
        } else {
            back_state(p, t, part, m, bufs);
        }
    });
    for part in &parts {
        let (u0, nu) = (part.units.start, part.units.len());
        for i in 0..bb {
            // SAFETY: the threads are done; this slice's units of the initial-state gradients.
            unsafe {
                bufs.dh0
                    .slice(i * hh + u0, nu)
                    .copy_from_slice(&part.dh[i * nu..][..nu]);
                bufs.dc0
                    .slice(i * hh + u0, nu)
                    .copy_from_slice(&part.dc[i * nu..][..nu]);
            }
        }
    }
}

/// First half of backward step `t` for one unit slice: `dh += dy_t`, then the slice's columns
/// of `dG_t` and `dc_{t-1}`.
fn back_gates<T: Float>(
    p: &Problem,
    t: usize,
    part: &mut BackSlice<T>,
    s: &LstmSaved<T>,
    dy: &[T],
    bufs: &BackwardBufs<T>,
) {
    let (hh, g4, u0, nu) = (p.hidden, 4 * p.hidden, part.units.start, part.units.len());
    let one = T::one();
    for i in 0..p.batch {
        if !p.valid(t, i) {
            continue;
        }
        let row = p.row(t, i);
        let dh = &mut part.dh[i * nu..][..nu];
        for (d, g) in dh.iter_mut().zip(&dy[row * hh + u0..][..nu]) {
            *d += *g;
        }
        let gr = &s.gates[row * g4..][..g4];
        let at = |k: usize| &gr[k * hh + u0..][..nu];
        let (ig, fg, gg, og) = (at(0), at(1), at(2), at(3));
        let tc = &s.tanhc[row * hh + u0..][..nu];
        let cp = &s.cprev[row * hh + u0..][..nu];
        let dc = &mut part.dc[i * nu..][..nu];
        // SAFETY: this slice's units of row `row`; no other thread touches them in this half.
        let dg = |k: usize| unsafe { bufs.dg.slice(row * g4 + k * hh + u0, nu) };
        let (di, df, dgg, d_o) = (dg(0), dg(1), dg(2), dg(3));
        for j in 0..nu {
            let dct = dc[j] + dh[j] * og[j] * (one - tc[j] * tc[j]);
            di[j] = dct * gg[j] * ig[j] * (one - ig[j]);
            df[j] = dct * cp[j] * fg[j] * (one - fg[j]);
            dgg[j] = dct * ig[j] * (one - gg[j] * gg[j]);
            d_o[j] = dh[j] * tc[j] * og[j] * (one - og[j]);
            dc[j] = dct * fg[j];
        }
    }
}

/// Second half of backward step `t` for one unit slice: its units of
/// `dh_{t-1} = (dG_t · W_hh) * mask`, reading every column of `dG_t`.
fn back_state<T: Float>(
    p: &Problem,
    t: usize,
    part: &mut BackSlice<T>,
    m: &KernelMasks<T>,
    bufs: &BackwardBufs<T>,
) {
    let (hh, g4, u0, nu) = (p.hidden, 4 * p.hidden, part.units.start, part.units.len());
    let (start, len) = p.span(t, 0, p.batch, g4);
    // SAFETY: step t's rows of dG, complete (the first half is done) and written by no one now.
    let dg_span = unsafe { bufs.dg.get(start, len) };
    let dg_t = MatRef::strided(dg_span, 0, p.batch, g4, p.step_rs(g4), 1);
    part.w_cols.matmul(&mut part.dh_rec, 0, nu, false, dg_t);
    for i in 0..p.batch {
        if !p.valid(t, i) {
            continue;
        }
        let dh = &mut part.dh[i * nu..][..nu];
        let dhr = &part.dh_rec[i * nu..][..nu];
        match m.rec {
            Some(r) => {
                let r = &r[i * hh + u0..][..nu];
                for j in 0..nu {
                    dh[j] = dhr[j] * r[j];
                }
            }
            None => dh.copy_from_slice(dhr),
        }
    }
}

/// The backward recurrence of batch rows `range`.
fn backward_chunk<T: Float>(
    p: &Problem,
    range: Range<usize>,
    (w_hh, w_hr): (&PackedRhs<T>, Option<&PackedRhs<T>>),
    m: &KernelMasks<T>,
    s: &LstmSaved<T>,
    grad_out: &[T],
    bufs: &BackwardBufs<T>,
) {
    let (bb, hh, pp, rows) = (p.batch, p.hidden, p.state, p.rows());
    let g4 = 4 * hh;
    let (b0, n) = (range.start, range.len());
    let dy = &grad_out[..rows * pp];
    let mut dh = grad_out[rows * pp + b0 * pp..][..n * pp].to_vec();
    let mut dc = grad_out[rows * pp + bb * pp + b0 * hh..][..n * hh].to_vec();
    let mut dh_rec = vec![T::zero(); n * pp];
    let proj = w_hr.is_some();
    let mut dr = vec![T::zero(); if proj { n * hh } else { 0 }];
    // Zoneout: the part of d h_t that goes straight to h_{t-1}.
    let mut keep_h = vec![T::zero(); if m.zh.is_some() { n * pp } else { 0 }];
    let mut keep_c = vec![T::zero(); if m.zc.is_some() { hh } else { 0 }];
    let one = T::one();
    for t in p.backward_steps() {
        for i in 0..n {
            if p.valid(t, b0 + i) {
                let row = p.row(t, b0 + i);
                for (d, g) in dh[i * pp..][..pp].iter_mut().zip(&dy[row * pp..][..pp]) {
                    *d += *g;
                }
                if m.zh.is_some() {
                    KernelMasks::unzone(
                        m.zh,
                        row,
                        &mut dh[i * pp..][..pp],
                        &mut keep_h[i * pp..][..pp],
                    );
                }
                if proj {
                    // SAFETY: row `row` belongs to this chunk.
                    let dst = unsafe { bufs.dh_all.slice(row * pp, pp) };
                    dst.copy_from_slice(&dh[i * pp..][..pp]);
                }
            }
        }
        let drs: &[T] = match w_hr {
            Some(w_hr) => {
                w_hr.matmul(&mut dr, 0, hh, false, MatRef::row_major(&dh, n, pp));
                &dr
            }
            None => &dh,
        };
        for i in 0..n {
            if !p.valid(t, b0 + i) {
                continue;
            }
            let row = p.row(t, b0 + i);
            let gr = &s.gates[row * g4..][..g4];
            let (ig, fg) = (&gr[..hh], &gr[hh..2 * hh]);
            let (gg, og) = (&gr[2 * hh..3 * hh], &gr[3 * hh..]);
            let tc = &s.tanhc[row * hh..][..hh];
            let cp = &s.cprev[row * hh..][..hh];
            let drb = &drs[i * hh..][..hh];
            let dcb = &mut dc[i * hh..][..hh];
            // SAFETY: row `row` belongs to this chunk.
            let dgr = unsafe { bufs.dg.slice(row * g4, g4) };
            // Zoneout on c: the share `z` of d c_t goes straight to c_{t-1} (`keep_c`), the
            // rest flows through the new cell.
            let zoned = m.zc.is_some();
            if zoned {
                KernelMasks::unzone(m.zc, row, dcb, &mut keep_c);
            }
            for j in 0..hh {
                let dct = dcb[j] + drb[j] * og[j] * (one - tc[j] * tc[j]);
                dgr[j] = dct * gg[j] * ig[j] * (one - ig[j]);
                dgr[hh + j] = dct * cp[j] * fg[j] * (one - fg[j]);
                dgr[2 * hh + j] = dct * ig[j] * (one - gg[j] * gg[j]);
                dgr[3 * hh + j] = drb[j] * tc[j] * og[j] * (one - og[j]);
                dcb[j] = dct * fg[j];
            }
            if zoned {
                for (d, k) in dcb.iter_mut().zip(&keep_c) {
                    *d += *k;
                }
            }
        }
        let (start, len) = p.span(t, b0, n, g4);
        // SAFETY: this chunk's rows of step t, read only while no row slice is live.
        let dg_span = unsafe { bufs.dg.slice(start, len) };
        let dg_t = MatRef::strided(dg_span, 0, n, g4, p.step_rs(g4), 1);
        w_hh.matmul(&mut dh_rec, 0, pp, false, dg_t);
        for i in 0..n {
            if p.valid(t, b0 + i) {
                let dhb = &mut dh[i * pp..][..pp];
                let dhr = &dh_rec[i * pp..][..pp];
                match m.rec {
                    Some(r) => {
                        let r = &r[(b0 + i) * pp..][..pp];
                        for j in 0..pp {
                            dhb[j] = dhr[j] * r[j];
                        }
                    }
                    None => dhb.copy_from_slice(dhr),
                }
                if m.zh.is_some() {
                    for (d, k) in dhb.iter_mut().zip(&keep_h[i * pp..][..pp]) {
                        *d += *k;
                    }
                }
            }
        }
    }
    // SAFETY: this chunk's rows of the initial-state gradients.
    unsafe {
        bufs.dh0.slice(b0 * pp, n * pp).copy_from_slice(&dh);
        bufs.dc0.slice(b0 * hh, n * hh).copy_from_slice(&dc);
    }
}

//! The fused layer-normalised LSTM and GRU recurrences (see [`crate::RnnConfig::layer_norm`] for
//! the formulas): [`FusedLayerNormRecurrence`], a Candle `CustomOp3` running one layer-direction's
//! whole sequence on the CPU (kernels in `lstm_ln` and `gru_ln`), [`fused_direction`], which runs
//! it for a cell, and the per-row normalisation and its backward that the kernels share.
//!
//! The input part `LN_x(W_ih x)` is computed for all steps at once before the recurrence (one
//! GEMM and one pass of row normalisations); the recurrent part `LN_h(W_hh h)` and, for LSTM,
//! `LN_c(c)` run inside each step. The composed twin is `CellParams::step`; tests hold the two
//! equal.

use super::cpu::{
    cpu_fwd3, recurrence_bwd, run_untracked, FlatGrads, TypedForward3, TypedRecurrenceBackward,
    UntrackedForward,
};
use super::grad::append;
use super::math::Float;
use super::problem::{ParamSizes, Problem, Weights};
use super::scratch;
use super::{gru_ln, lstm_ln};
use crate::cell::layer_norm::LAYER_NORM_EPS;
use crate::cell::params::CellParams;
use crate::config::Mode;
use crate::state::RnnState;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::any::Any;
use std::sync::Mutex;

/// Whether the fused layer-normalised recurrence can run `xs`: f32 or f64 on the CPU.
pub(crate) fn layer_norm_recurrence_supported(xs: &Tensor) -> bool {
    super::cpu::supports(xs)
}

/// Views of the packed parameters `[w_ih | w_hh | b_ih | b_hh | x_w | x_b | h_w | h_b | c_w | c_b]`
/// (biases optional, `c_*` LSTM only).
pub(crate) struct LnWeights<'a, T> {
    pub base: Weights<'a, T>,
    pub x_w: &'a [T],
    pub x_b: &'a [T],
    pub h_w: &'a [T],
    pub h_b: &'a [T],
    pub c_w: &'a [T],
    pub c_b: &'a [T],
}

/// The op: as `FusedRecurrence` (same arguments and result layout, no projection), with the
/// layer norms' gains and biases packed after the weights and biases.
pub(crate) struct FusedLayerNormRecurrence {
    pub(crate) mode: Mode,
    pub(crate) problem: Problem,
    pub(crate) sizes: ParamSizes,
    /// Activations saved by the forward for the backward (`LstmLnSaved<T>` or `GruLnSaved<T>`).
    pub(crate) saved: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    pub(crate) save: bool,
}

impl FusedLayerNormRecurrence {
    fn gates(&self) -> usize {
        self.mode.gate_count() * self.problem.hidden
    }

    fn cell_norm(&self) -> usize {
        if self.mode == Mode::Lstm {
            self.problem.hidden
        } else {
            0
        }
    }

    /// Length of the packed parameters.
    fn params_len(&self) -> usize {
        self.sizes.total() + 4 * self.gates() + 2 * self.cell_norm()
    }

    fn out_len(&self) -> usize {
        let p = &self.problem;
        p.rows() * p.hidden + p.batch * p.hidden + p.batch * self.cell_norm()
    }

    fn split<'a, T>(&self, flat: &'a [T]) -> LnWeights<'a, T> {
        let (base, rest) = flat.split_at(self.sizes.total());
        let g = self.gates();
        let (x_w, rest) = rest.split_at(g);
        let (x_b, rest) = rest.split_at(g);
        let (h_w, rest) = rest.split_at(g);
        let (h_b, rest) = rest.split_at(g);
        let (c_w, c_b) = rest.split_at(self.cell_norm());
        LnWeights {
            base: self.sizes.split(base),
            x_w,
            x_b,
            h_w,
            h_b,
            c_w,
            c_b,
        }
    }

    fn forward_typed<T: Float>(&self, xs: &[T], state0: &[T], params: &[T]) -> Vec<T> {
        let p = &self.problem;
        let (h0, c0) = state0.split_at(p.batch * p.hidden);
        self.forward_parts(xs, h0, c0, &self.split(params))
    }

    /// The forward from separate views of the initial state (`c0` empty unless LSTM) and the
    /// parameters.
    fn forward_parts<T: Float>(&self, xs: &[T], h0: &[T], c0: &[T], w: &LnWeights<T>) -> Vec<T> {
        let p = &self.problem;
        let mut out = scratch::take(self.out_len());
        let saved: Option<Box<dyn Any + Send + Sync>> = match self.mode {
            Mode::Lstm => {
                lstm_ln::forward(p, xs, h0, c0, w, &mut out, self.save).map(|s| Box::new(s) as _)
            }
            _ => gru_ln::forward(p, xs, h0, w, &mut out, self.save).map(|s| Box::new(s) as _),
        };
        if let Ok(mut slot) = self.saved.lock() {
            *slot = saved;
        }
        out
    }

    fn backward_typed<T: Float>(
        &self,
        xs: &[T],
        params: &[T],
        grad_out: &[T],
    ) -> Result<FlatGrads<T>> {
        let p = &self.problem;
        let w = self.split(params);
        let slot = match self.saved.lock() {
            Ok(slot) => slot,
            Err(_) => bail!("fused layer-norm recurrence: saved activations lock poisoned"),
        };
        let Some(saved) = slot.as_ref() else {
            bail!(
                "fused layer-norm recurrence: backward called but the forward saved no activations"
            )
        };
        let mut dparams = Vec::with_capacity(self.params_len());
        let (dx, dstate) = match self.mode {
            Mode::Lstm => {
                let Some(s) = saved.downcast_ref::<lstm_ln::LstmLnSaved<T>>() else {
                    bail!("fused layer-norm recurrence: saved activations have the wrong type")
                };
                let g = lstm_ln::backward(p, xs, &w, s, grad_out);
                append(&mut dparams, g.dw_ih);
                append(&mut dparams, g.dw_hh);
                if w.base.b_ih.is_some() {
                    dparams.extend_from_slice(&g.db);
                    dparams.extend_from_slice(&g.db);
                }
                dparams.extend(g.dnorm);
                let mut dstate = g.dh0;
                dstate.extend(g.dc0);
                (g.dx, dstate)
            }
            _ => {
                let Some(s) = saved.downcast_ref::<gru_ln::GruLnSaved<T>>() else {
                    bail!("fused layer-norm recurrence: saved activations have the wrong type")
                };
                let g = gru_ln::backward(p, xs, &w, s, grad_out);
                append(&mut dparams, g.dw_ih);
                append(&mut dparams, g.dw_hh);
                if w.base.b_ih.is_some() {
                    dparams.extend(g.db_ih);
                    dparams.extend(g.db_hh);
                }
                dparams.extend(g.dnorm);
                (g.dx, g.dh0)
            }
        };
        debug_assert_eq!(dparams.len(), self.params_len());
        Ok((dx, dstate, dparams))
    }
}

impl TypedRecurrenceBackward for FusedLayerNormRecurrence {
    fn backward<T: Float>(&self, xs: &[T], params: &[T], grad_out: &[T]) -> Result<FlatGrads<T>> {
        self.backward_typed(xs, params, grad_out)
    }
}

impl TypedForward3 for FusedLayerNormRecurrence {
    fn forward<T: Float>(&self, xs: &[T], state0: &[T], params: &[T]) -> Result<Vec<T>> {
        Ok(self.forward_typed(xs, state0, params))
    }
}

impl CustomOp3 for FusedLayerNormRecurrence {
    fn name(&self) -> &'static str {
        "fused-layer-norm-recurrence"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = cpu_fwd3(
            self,
            "fused layer-norm recurrence",
            (s1, l1),
            (s2, l2),
            (s3, l3),
        )?;
        Ok((out, Shape::from(self.out_len())))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        state0: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        recurrence_bwd(
            self,
            "fused layer-norm recurrence",
            [xs, state0, params],
            grad_res,
        )
    }
}

/// Runs the layer-normalised `cell` over the whole sequence `xs` with the fused op.
///
/// # Shapes
/// As [`super::fused_direction`]: `xs` `(batch, seq_len, input)` if `batch_first`, else
/// `(seq_len, batch, input)`; `init` `h (batch, hidden)`, `c (batch, hidden)` for LSTM.
pub(crate) fn fused_direction(
    cell: &CellParams,
    xs: &Tensor,
    batch_first: bool,
    init: &RnnState,
    lengths: Option<&[usize]>,
    reverse: bool,
) -> Result<(Tensor, RnnState)> {
    let Some(ln) = &cell.layer_norm else {
        bail!("fused layer-norm recurrence: the cell is not layer-normalised")
    };
    if cell.weight_hr.is_some() || !matches!(cell.mode, Mode::Lstm | Mode::Gru) {
        bail!("fused layer-norm recurrence: LSTM or GRU without projection only");
    }
    let (d0, d1, input) = xs.dims3()?;
    let (seq_len, batch) = if batch_first { (d1, d0) } else { (d0, d1) };
    let hidden = cell.hidden_size;
    let mut pieces = vec![cell.weight_ih.flatten_all()?, cell.weight_hh.flatten_all()?];
    let bias = match (&cell.bias_ih, &cell.bias_hh) {
        (Some(b_ih), Some(b_hh)) => {
            pieces.push(b_ih.clone());
            pieces.push(b_hh.clone());
            b_ih.elem_count()
        }
        _ => 0,
    };
    pieces.extend(ln.named().into_iter().map(|(_, t)| t.clone()));
    let mut state_pieces = vec![init.h.flatten_all()?];
    if let Some(c) = &init.c {
        state_pieces.push(c.flatten_all()?);
    }
    let xs = xs.contiguous()?;
    let save = xs.track_op()
        || state_pieces.iter().any(Tensor::track_op)
        || pieces.iter().any(Tensor::track_op);
    let op = FusedLayerNormRecurrence {
        mode: cell.mode,
        problem: Problem {
            seq_len,
            batch,
            input,
            hidden,
            state: hidden,
            batch_first,
            reverse,
            lengths: lengths.map(<[usize]>::to_vec),
            input_grad: xs.track_op(),
        },
        sizes: ParamSizes {
            w_ih: cell.weight_ih.elem_count(),
            w_hh: cell.weight_hh.elem_count(),
            bias,
            w_hr: 0,
        },
        saved: Mutex::new(None),
        save,
    };
    let out = if save {
        let params = Tensor::cat(&pieces, 0)?;
        let state0 = Tensor::cat(&state_pieces, 0)?;
        xs.apply_op3(&state0, &params, op)?
    } else {
        // Nothing to differentiate: run on views of the tensors as they are, without copying the
        // parameters and the state into the op's packed arguments.
        let mut args = vec![xs.clone()];
        args.extend(state_pieces);
        args.extend(pieces);
        run_untracked(&op, "fused layer-norm recurrence", &args)?
    };
    let rows = seq_len * batch;
    let ys = out.narrow(0, 0, rows * hidden)?.reshape((d0, d1, hidden))?;
    // Copied out, so that a carried state does not keep the whole output buffer alive.
    let h = out
        .narrow(0, rows * hidden, batch * hidden)?
        .reshape((batch, hidden))?
        .force_contiguous()?;
    let c = if cell.mode.has_cell_state() {
        Some(
            out.narrow(0, (rows + batch) * hidden, batch * hidden)?
                .reshape((batch, hidden))?
                .force_contiguous()?,
        )
    } else {
        None
    };
    Ok((ys, RnnState::new(h, c)))
}

/// The forward with no autograd graph, on `args = [xs, h0, (c0,) w_ih, w_hh, (b_ih, b_hh,) x_w,
/// x_b, h_w, h_b, (c_w, c_b)]`.
impl UntrackedForward for FusedLayerNormRecurrence {
    fn forward_views<T: Float>(&self, slices: &[&[T]]) -> Vec<T> {
        let lstm = self.mode == Mode::Lstm;
        let (x, h0) = (slices[0], slices[1]);
        let (c0, rest): (&[T], &[&[T]]) = if lstm {
            (slices[2], &slices[3..])
        } else {
            (&[], &slices[2..])
        };
        let (b_ih, b_hh, norms) = if self.sizes.bias > 0 {
            (Some(rest[2]), Some(rest[3]), &rest[4..])
        } else {
            (None, None, &rest[2..])
        };
        let empty: &[T] = &[];
        let w = LnWeights {
            base: Weights {
                w_ih: rest[0],
                w_hh: rest[1],
                b_ih,
                b_hh,
                w_hr: None,
            },
            x_w: norms[0],
            x_b: norms[1],
            h_w: norms[2],
            h_b: norms[3],
            c_w: norms.get(4).copied().unwrap_or(empty),
            c_b: norms.get(5).copied().unwrap_or(empty),
        };
        self.forward_parts(x, h0, c0, &w)
    }

    fn result_len(&self) -> usize {
        self.out_len()
    }
}

/// Lanes of the sums below: independent partial sums, so the compiler can vectorise them.
const LANES: usize = 8;

/// `sum_j a[j] * b[j] * c[j]` (with `b`, `c` `None` read as ones) in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum<T: Float>(a: &[T], b: Option<&[T]>, c: Option<&[T]>) -> T {
    let n = a.len();
    let ones = [T::one(); LANES];
    let mut acc = [T::zero(); LANES];
    let full = n / LANES * LANES;
    let term = |j: usize| a[j] * b.map_or(T::one(), |b| b[j]) * c.map_or(T::one(), |c| c[j]);
    let (a_c, b_c, c_c) = (
        a[..full].chunks_exact(LANES),
        b.map(|b| &b[..full]),
        c.map(|c| &c[..full]),
    );
    for (i, ac) in a_c.enumerate() {
        let bc = b_c.map_or(&ones[..], |b| &b[i * LANES..][..LANES]);
        let cc = c_c.map_or(&ones[..], |c| &c[i * LANES..][..LANES]);
        for ((s, x), (y, z)) in acc.iter_mut().zip(ac).zip(bc.iter().zip(cc)) {
            *s += *x * *y * *z;
        }
    }
    let tail = (full..n).fold(T::zero(), |s, j| s + term(j));
    acc.iter().fold(tail, |s, a| s + *a)
}

/// Normalises `v` in place to `(v - mean(v)) * rstd` and returns `rstd = 1 / sqrt(var(v) + eps)`
/// (biased variance).
#[inline]
#[allow(clippy::assign_op_pattern)] // `Float` has no `MulAssign`
pub(super) fn normalize<T: Float>(v: &mut [T]) -> T {
    let n = T::from(v.len()).unwrap_or_else(T::one);
    let mean = lane_sum(v, None, None) / n;
    for x in v.iter_mut() {
        *x -= mean;
    }
    let var = lane_sum(v, Some(v), None) / n;
    let eps = T::from(LAYER_NORM_EPS).unwrap_or_else(T::zero);
    let rstd = (var + eps).sqrt().recip();
    for x in v.iter_mut() {
        *x = *x * rstd;
    }
    rstd
}

/// Normalises every `width`-wide row of `buf` in place, writing each row's `rstd`.
pub(super) fn normalize_rows<T: Float>(buf: &mut [T], width: usize, rstd: &mut [T]) {
    if buf.len() < PARALLEL_MIN_ELEMS {
        for (row, r) in buf.chunks_exact_mut(width).zip(rstd.iter_mut()) {
            *r = normalize(row);
        }
        return;
    }
    buf.par_chunks_mut(width)
        .zip(rstd.par_iter_mut())
        .with_min_len(64)
        .for_each(|(row, r)| *r = normalize(row));
}

/// Fewest elements for which the passes over all rows run on several threads: below, waking
/// the pool costs more than it saves.
const PARALLEL_MIN_ELEMS: usize = 1 << 18;

/// The backward of `y = xhat * w + b` with `xhat = normalize(v)`, in place: `d` holds `dL/dy` on
/// entry and `dL/dv = rstd * (g - mean(g) - xhat * mean(g * xhat))`, `g = dy * w`, on return.
#[inline]
pub(super) fn normalize_backward<T: Float>(d: &mut [T], xhat: &[T], rstd: T, w: &[T]) {
    let n = T::from(d.len()).unwrap_or_else(T::one);
    let (xhat, w) = (&xhat[..d.len()], &w[..d.len()]);
    let m1 = lane_sum(d, Some(w), None) / n;
    let m2 = lane_sum(d, Some(w), Some(xhat)) / n;
    for ((d, x), w) in d.iter_mut().zip(xhat).zip(w) {
        *d = rstd * (*d * *w - m1 - *x * m2);
    }
}

/// [`normalize_backward`] on every `width`-wide row of `d`.
pub(super) fn normalize_backward_rows<T: Float>(
    d: &mut [T],
    xhat: &[T],
    rstd: &[T],
    w: &[T],
    width: usize,
) {
    if d.len() < PARALLEL_MIN_ELEMS {
        for ((d, x), r) in d
            .chunks_exact_mut(width)
            .zip(xhat.chunks_exact(width))
            .zip(rstd)
        {
            normalize_backward(d, x, *r, w);
        }
        return;
    }
    d.par_chunks_mut(width)
        .zip(xhat.par_chunks(width))
        .zip(rstd.par_iter())
        .with_min_len(64)
        .for_each(|((d, x), r)| normalize_backward(d, x, *r, w));
}

/// Column sums of a row-major `(rows, width)` buffer `dy`, and of `dy * xhat` for each buffer
/// of `xhats` (same shape): `(sum_rows dy, [sum_rows dy * xhat])`, in parallel over column
/// blocks (one pass over `dy`). These are the gradients of the LN biases and gains (and of the
/// cell's biases, which enter the same sum).
pub(super) fn column_sums<T: Float>(
    dy: &[T],
    xhats: &[&[T]],
    width: usize,
) -> (Vec<T>, Vec<Vec<T>>) {
    const BLOCK: usize = 64;
    let block = |blk: usize| {
        let (j0, j1) = (blk * BLOCK, ((blk + 1) * BLOCK).min(width));
        let mut db = vec![T::zero(); j1 - j0];
        let mut dws = vec![vec![T::zero(); j1 - j0]; xhats.len()];
        for (r, row) in dy.chunks_exact(width).enumerate() {
            let d = &row[j0..j1];
            for (o, v) in db.iter_mut().zip(d) {
                *o += *v;
            }
            for (dw, xhat) in dws.iter_mut().zip(xhats) {
                let x = &xhat[r * width + j0..r * width + j1];
                for ((o, v), x) in dw.iter_mut().zip(d).zip(x) {
                    *o += *v * *x;
                }
            }
        }
        (db, dws)
    };
    let n_blocks = width.div_ceil(BLOCK);
    let blocks: Vec<(Vec<T>, Vec<Vec<T>>)> = if dy.len() < PARALLEL_MIN_ELEMS {
        (0..n_blocks).map(block).collect()
    } else {
        (0..n_blocks).into_par_iter().map(block).collect()
    };
    let mut db = Vec::with_capacity(width);
    let mut dws = vec![Vec::with_capacity(width); xhats.len()];
    for (b, ws) in blocks {
        db.extend(b);
        for (dw, w) in dws.iter_mut().zip(ws) {
            dw.extend(w);
        }
    }
    (db, dws)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The normalisation and its backward against finite differences of
    /// `L = sum(c * (normalize(v) * w))`.
    #[test]
    fn normalize_backward_matches_finite_differences() {
        let v = [0.3f64, -1.2, 2.5, 0.7, -0.4];
        let w = [1.1f64, 0.9, -0.5, 2.0, 1.3];
        let c = [0.2f64, -0.7, 1.5, 0.4, -1.1];
        let loss = |v: &[f64]| {
            let mut x = v.to_vec();
            normalize(&mut x);
            x.iter()
                .zip(&w)
                .zip(&c)
                .map(|((x, w), c)| x * w * c)
                .sum::<f64>()
        };
        let mut xhat = v.to_vec();
        let rstd = normalize(&mut xhat);
        let mean = xhat.iter().sum::<f64>() / 5.0;
        let var = xhat.iter().map(|x| x * x).sum::<f64>() / 5.0;
        assert!(
            mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
        let mut d = c.to_vec();
        normalize_backward(&mut d, &xhat, rstd, &w);
        for i in 0..5 {
            let (mut up, mut down) = (v.to_vec(), v.to_vec());
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric = (loss(&up) - loss(&down)) / 2e-6;
            assert!((numeric - d[i]).abs() < 1e-7, "{i}: {numeric} vs {}", d[i]);
        }
    }
}

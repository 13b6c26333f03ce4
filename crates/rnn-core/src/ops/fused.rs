//! The fused recurrence op: [`FusedRecurrence`] as a Candle `CustomOp3` running one
//! layer-direction's whole sequence on the CPU (the kernels of `lstm`, `gru`, `rnn`) or, with the `cuda`
//! feature, on CUDA; and [`fused_direction`], which runs it for a cell.

use super::cpu::{
    cpu_fwd3, recurrence_bwd, run_untracked, FlatGrads, TypedForward3, TypedRecurrenceBackward,
    UntrackedForward,
};
#[cfg(feature = "cuda")]
use super::cuda;
use super::grad::append;
use super::math::Float;
use super::problem::{ParamSizes, Problem, Weights};
use super::recurrence::FusedRecurrence;
use super::scratch;
use super::{gru, lstm, masks, rnn};
use crate::cell::params::CellParams;
use crate::config::Mode;
use crate::regularize::StateMasks;
use crate::state::RnnState;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::any::Any;
use std::sync::Mutex;

impl FusedRecurrence {
    pub(crate) fn forward_typed<T: Float>(&self, xs: &[T], state0: &[T], params: &[T]) -> Vec<T> {
        let p = &self.problem;
        let (h0, c0) = state0.split_at(p.batch * p.state);
        self.forward_parts(xs, h0, c0, &self.sizes.split(params))
    }

    /// The forward from separate views of the initial state (`c0` empty unless LSTM) and the
    /// parameters.
    pub(crate) fn forward_parts<T: Float>(
        &self,
        xs: &[T],
        h0: &[T],
        c0: &[T],
        w: &Weights<T>,
    ) -> Vec<T> {
        // Every row of every step and the final state are written by the forward.
        let mut out = scratch::take(self.out_len());
        self.forward_into(xs, h0, c0, w, &mut out);
        out
    }

    /// [`FusedRecurrence::forward_parts`] into `out` (`out_len()` elements, all written).
    pub(crate) fn forward_into<T: Float>(
        &self,
        xs: &[T],
        h0: &[T],
        c0: &[T],
        w: &Weights<T>,
        out: &mut [T],
    ) {
        let p = &self.problem;
        let m = self.kernel_masks::<T>();
        let saved: Option<Box<dyn Any + Send + Sync>> = match self.mode {
            Mode::Lstm => {
                lstm::forward(p, xs, h0, c0, w, &m, out, self.save).map(|s| Box::new(s) as _)
            }
            Mode::Gru => gru::forward(p, xs, h0, w, &m, out, self.save).map(|s| Box::new(s) as _),
            Mode::RnnTanh | Mode::RnnRelu => {
                let relu = self.mode == Mode::RnnRelu;
                rnn::forward(p, relu, xs, h0, w, &m, out, self.save).map(|s| Box::new(s) as _)
            }
        };
        if let Ok(mut slot) = self.saved.lock() {
            *slot = saved;
        }
    }

    /// Elements of the flat `state0 = [h0 | c0]` argument.
    pub(crate) fn state_len(&self) -> usize {
        let p = &self.problem;
        let c = if self.mode.has_cell_state() {
            p.hidden
        } else {
            0
        };
        p.batch * (p.state + c)
    }

    /// Gradients `(d xs, d state0, d params)` as flat vectors (`d xs` only when
    /// [`Problem::input_grad`]).
    pub(crate) fn backward_typed<T: Float>(
        &self,
        xs: &[T],
        params: &[T],
        grad_out: &[T],
    ) -> Result<FlatGrads<T>> {
        let p = &self.problem;
        let w = self.sizes.split(params);
        let slot = match self.saved.lock() {
            Ok(slot) => slot,
            Err(_) => bail!("fused recurrence: saved activations lock poisoned"),
        };
        let Some(saved) = slot.as_ref() else {
            bail!("fused recurrence: backward called but the forward saved no activations")
        };
        let m = self.kernel_masks::<T>();
        let mut dparams = Vec::with_capacity(self.sizes.total());
        let (dx, dstate) = match self.mode {
            Mode::Lstm => {
                let Some(s) = saved.downcast_ref::<lstm::LstmSaved<T>>() else {
                    bail!("fused recurrence: saved activations have the wrong type")
                };
                let g = lstm::backward(p, xs, &w, &m, s, grad_out);
                append(&mut dparams, g.dw_ih);
                append(&mut dparams, g.dw_hh);
                if w.b_ih.is_some() {
                    dparams.extend_from_slice(&g.db);
                    dparams.extend(g.db);
                }
                append(&mut dparams, g.dw_hr);
                let mut dstate = g.dh0;
                dstate.extend(g.dc0);
                (g.dx, dstate)
            }
            Mode::Gru => {
                let Some(s) = saved.downcast_ref::<gru::GruSaved<T>>() else {
                    bail!("fused recurrence: saved activations have the wrong type")
                };
                let g = gru::backward(p, xs, &w, &m, s, grad_out);
                append(&mut dparams, g.dw_ih);
                append(&mut dparams, g.dw_hh);
                if w.b_ih.is_some() {
                    dparams.extend(g.db_ih);
                    dparams.extend(g.db_hh);
                }
                (g.dx, g.dh0)
            }
            Mode::RnnTanh | Mode::RnnRelu => {
                let Some(s) = saved.downcast_ref::<rnn::RnnSaved<T>>() else {
                    bail!("fused recurrence: saved activations have the wrong type")
                };
                let relu = self.mode == Mode::RnnRelu;
                let g = rnn::backward(p, relu, xs, &w, &m, s, grad_out);
                append(&mut dparams, g.dw_ih);
                append(&mut dparams, g.dw_hh);
                if w.b_ih.is_some() {
                    dparams.extend_from_slice(&g.db);
                    dparams.extend(g.db);
                }
                (g.dx, g.dh0)
            }
        };
        debug_assert_eq!(dparams.len(), self.sizes.total());
        Ok((dx, dstate, dparams))
    }
}

impl TypedRecurrenceBackward for FusedRecurrence {
    fn backward<T: Float>(&self, xs: &[T], params: &[T], grad_out: &[T]) -> Result<FlatGrads<T>> {
        self.backward_typed(xs, params, grad_out)
    }
}

impl TypedForward3 for FusedRecurrence {
    fn forward<T: Float>(&self, xs: &[T], state0: &[T], params: &[T]) -> Result<Vec<T>> {
        Ok(self.forward_typed(xs, state0, params))
    }
}

impl CustomOp3 for FusedRecurrence {
    fn name(&self) -> &'static str {
        "fused-recurrence"
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
        let out = cpu_fwd3(self, "fused recurrence", (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from(self.out_len())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self, s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        xs: &Tensor,
        state0: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if xs.device().is_cuda() {
            return cuda::backward(self, xs, state0, params, grad_res);
        }
        recurrence_bwd(self, "fused recurrence", [xs, state0, params], grad_res)
    }
}

/// Whether the fused recurrence can run `xs`: f32 or f64 on the CPU, or on CUDA in a build with
/// the `cuda` feature.
pub(crate) fn recurrence_supported(xs: &Tensor) -> bool {
    let device = xs.device().is_cpu() || (cfg!(feature = "cuda") && xs.device().is_cuda());
    device && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// The forward with no autograd graph, on `args = [xs, h0, (c0,) w_ih, w_hh, (b_ih, b_hh,)
/// (w_hr)]`.
impl UntrackedForward for FusedRecurrence {
    fn forward_views<T: Float>(&self, slices: &[&[T]]) -> Vec<T> {
        let lstm = self.mode.has_cell_state();
        let (x, h0) = (slices[0], slices[1]);
        let (c0, rest): (&[T], &[&[T]]) = if lstm {
            (slices[2], &slices[3..])
        } else {
            (&[], &slices[2..])
        };
        let bias = self.sizes.bias > 0;
        let w = Weights {
            w_ih: rest[0],
            w_hh: rest[1],
            b_ih: bias.then(|| rest[2]),
            b_hh: bias.then(|| rest[3]),
            w_hr: (self.sizes.w_hr > 0).then(|| rest[if bias { 4 } else { 2 }]),
        };
        self.forward_parts(x, h0, c0, &w)
    }

    fn result_len(&self) -> usize {
        self.out_len()
    }
}

/// One direction's fused op and its arguments, before it runs ([`build`]).
pub(crate) struct Built {
    pub op: FusedRecurrence,
    /// `xs`, contiguous.
    pub xs: Tensor,
    /// `[h0, (c0)]`, flattened.
    pub state_pieces: Vec<Tensor>,
    /// `[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`, flattened.
    pub pieces: Vec<Tensor>,
    /// Whether the op keeps what a backward needs (something is in a graph).
    pub save: bool,
    /// `xs`'s first two dimensions, the outputs' too.
    dims: (usize, usize),
}

/// The fused op for `cell` over `xs` and its packed arguments.
pub(crate) fn build(
    cell: &CellParams,
    xs: &Tensor,
    batch_first: bool,
    init: &RnnState,
    lengths: Option<&[usize]>,
    reverse: bool,
    reg: &StateMasks,
) -> Result<Built> {
    let (d0, d1, input) = xs.dims3()?;
    let (seq_len, batch) = if batch_first { (d1, d0) } else { (d0, d1) };
    let (hidden, state) = (cell.hidden_size, cell.state_size());
    let mut pieces = vec![cell.weight_ih.flatten_all()?, cell.weight_hh.flatten_all()?];
    let bias = match (&cell.bias_ih, &cell.bias_hh) {
        (Some(b_ih), Some(b_hh)) => {
            pieces.push(b_ih.clone());
            pieces.push(b_hh.clone());
            b_ih.elem_count()
        }
        _ => 0,
    };
    let w_hr = match &cell.weight_hr {
        Some(w) => {
            pieces.push(w.flatten_all()?);
            w.elem_count()
        }
        None => 0,
    };
    let mut state_pieces = vec![init.h.flatten_all()?];
    if let Some(c) = &init.c {
        state_pieces.push(c.flatten_all()?);
    }
    let xs = xs.contiguous()?;
    let save = xs.track_op()
        || state_pieces.iter().any(Tensor::track_op)
        || pieces.iter().any(Tensor::track_op);
    let op = FusedRecurrence {
        mode: cell.mode,
        problem: Problem {
            seq_len,
            batch,
            input,
            hidden,
            state,
            batch_first,
            reverse,
            lengths: lengths.map(<[usize]>::to_vec),
            input_grad: xs.track_op(),
        },
        sizes: ParamSizes {
            w_ih: cell.weight_ih.elem_count(),
            w_hh: cell.weight_hh.elem_count(),
            bias,
            w_hr,
        },
        saved: Mutex::new(None),
        save,
        masks: None,
    };
    let op = FusedRecurrence {
        masks: masks::own(reg, &op.problem, xs.dtype())?,
        ..op
    };
    Ok(Built {
        op,
        xs,
        state_pieces,
        pieces,
        save,
        dims: (d0, d1),
    })
}

impl Built {
    /// Where the op's result holds the outputs and the final state.
    pub(crate) fn unpack(&self) -> Unpack {
        Unpack::of(&self.op, self.dims)
    }

    /// Runs the op: with a graph when something is in one, else without copying the arguments
    /// (on the CPU) or on packed copies (on a device). Returns the op's flat result.
    pub(crate) fn run(self) -> Result<(Tensor, Unpack)> {
        let unpack = self.unpack();
        let Built {
            op,
            xs,
            state_pieces,
            pieces,
            save,
            dims: _,
        } = self;
        let out = if save {
            let params = Tensor::cat(&pieces, 0)?;
            let state0 = Tensor::cat(&state_pieces, 0)?;
            xs.apply_op3(&state0, &params, op)?
        } else if !xs.device().is_cpu() {
            // Nothing to differentiate on a device: the op runs on packed copies without a graph.
            let params = Tensor::cat(&pieces, 0)?;
            let state0 = Tensor::cat(&state_pieces, 0)?;
            xs.apply_op3_no_bwd(&state0, &params, &op)?
        } else {
            // Nothing to differentiate: run on views of the tensors as they are, without copying
            // the parameters and the state into the op's packed arguments.
            let mut args = vec![xs];
            args.extend(state_pieces);
            args.extend(pieces);
            run_untracked(&op, "fused recurrence", &args)?
        };
        Ok((out, unpack))
    }
}

/// How a direction's outputs and final state lie in the op's flat result.
#[derive(Clone, Copy)]
pub(crate) struct Unpack {
    dims: (usize, usize),
    rows: usize,
    batch: usize,
    state: usize,
    hidden: usize,
    cell_state: bool,
    len: usize,
}

impl Unpack {
    pub(crate) fn of(op: &FusedRecurrence, dims: (usize, usize)) -> Self {
        let p = &op.problem;
        Self {
            dims,
            rows: p.rows(),
            batch: p.batch,
            state: p.state,
            hidden: p.hidden,
            cell_state: op.mode.has_cell_state(),
            len: op.out_len(),
        }
    }

    /// `ys` in the layout of `xs` and the final state, from the flat result `out` whose
    /// elements from `offset` are this direction's.
    pub(crate) fn split(&self, out: &Tensor, offset: usize) -> Result<(Tensor, RnnState)> {
        let (rows, batch, state) = (self.rows, self.batch, self.state);
        let ys = out
            .narrow(0, offset, rows * state)?
            .reshape((self.dims.0, self.dims.1, state))?;
        // The final state is copied out of the op's result: as a view it would keep the whole
        // `(seq_len, batch, state)` output buffer alive for as long as the state is carried
        // (e.g. a state kept after a 100,000-step forward whose outputs were dropped).
        let h = out
            .narrow(0, offset + rows * state, batch * state)?
            .reshape((batch, state))?
            .force_contiguous()?;
        let c = if self.cell_state {
            Some(
                out.narrow(
                    0,
                    offset + rows * state + batch * state,
                    batch * self.hidden,
                )?
                .reshape((batch, self.hidden))?
                .force_contiguous()?,
            )
        } else {
            None
        };
        Ok((ys, RnnState::new(h, c)))
    }

    /// Elements of the flat result.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Runs `cell` over the whole sequence `xs` with the fused op.
///
/// # Shapes
/// - `xs`: `(batch, seq_len, input)` if `batch_first`, else `(seq_len, batch, input)`
/// - `init`: `h (batch, state)`, `c (batch, hidden)` for LSTM
/// - returns `ys` in the layout of `xs` with `state` features, and the final state
pub(crate) fn fused_direction(
    cell: &CellParams,
    xs: &Tensor,
    batch_first: bool,
    init: &RnnState,
    lengths: Option<&[usize]>,
    reverse: bool,
    reg: &StateMasks,
) -> Result<(Tensor, RnnState)> {
    if cell.layer_norm.is_some() {
        return super::layer_norm::fused_direction(cell, xs, batch_first, init, lengths, reverse);
    }
    let (out, unpack) = build(cell, xs, batch_first, init, lengths, reverse, reg)?.run()?;
    unpack.split(&out, 0)
}

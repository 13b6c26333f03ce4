//! Fused recurrences: one Candle `CustomOp3` runs one layer-direction's whole sequence on CPU, with
//! the input projection of all steps as one GEMM, one GEMM per step for the recurrence, fused gate
//! math, saved activations and a hand-written BPTT backward whose weight gradients are one large
//! GEMM each over all steps. Gradients for every parameter, the input and the initial state flow
//! through Candle's autograd: the op's three arguments are the input, the packed initial state and
//! the packed parameters, and its backward returns the gradient of each.
//!
//! This folder is the only device-specific code of the crate. The composed twin
//! (`crate::recurrence`) computes the same function from Candle tensor ops on any device; tests hold
//! the two equal.

pub(crate) mod cross_entropy;
#[cfg(feature = "cuda")]
mod cuda;
mod gemm;
mod gru;
pub(crate) mod linear_ce;
mod lstm;
pub(crate) mod math;
// The CUDA op's launch plan: used by the CUDA build, and run on the CPU by the tests.
#[cfg(any(test, feature = "cuda"))]
pub(crate) mod plan;
mod rnn;
pub(crate) mod scratch;

use crate::cell::params::CellParams;
use crate::{Mode, RnnState};
use candle_core::{
    bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use math::Float;
use std::any::Any;
use std::sync::Mutex;

/// Shapes and order of one layer-direction's run. Rows of the input, the output and every saved
/// buffer are (step, batch) pairs in the caller's layout: `t * batch + b` time-major, or
/// `b * seq_len + t` batch-first.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub seq_len: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
    /// Size of `h`: `proj_size` when projecting, else `hidden`.
    pub state: usize,
    pub batch_first: bool,
    pub reverse: bool,
    /// Valid steps per batch row; `None` = all `seq_len`.
    pub lengths: Option<Vec<usize>>,
    /// Whether the backward computes the input's gradient (`dx = dG · W_ih`, a product as large
    /// as a weight gradient): not when the input is data outside the autograd graph, as PyTorch
    /// skips the gradient of an input that does not require one.
    pub input_grad: bool,
}

impl Problem {
    fn rows(&self) -> usize {
        self.seq_len * self.batch
    }

    #[inline]
    fn row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.seq_len + t
        } else {
            t * self.batch + b
        }
    }

    /// `(start, len)` of the part of a `width`-column buffer holding step `t`'s rows for batch rows
    /// `b0 .. b0 + n`: only that chunk of the batch ever touches it.
    #[inline]
    fn span(&self, t: usize, b0: usize, n: usize, width: usize) -> (usize, usize) {
        let first = self.row(t, b0);
        let last = self.row(t, b0 + n - 1);
        (first * width, (last - first) * width + width)
    }

    /// Distance between consecutive batch rows of one step in a buffer of `width` columns.
    #[inline]
    fn step_rs(&self, width: usize) -> usize {
        if self.batch_first {
            self.seq_len * width
        } else {
            width
        }
    }

    #[inline]
    fn valid(&self, t: usize, b: usize) -> bool {
        self.lengths.as_ref().is_none_or(|l| t < l[b])
    }

    /// Steps in the order the forward pass visits them.
    fn forward_steps(&self) -> Box<dyn Iterator<Item = usize>> {
        if self.reverse {
            Box::new((0..self.seq_len).rev())
        } else {
            Box::new(0..self.seq_len)
        }
    }

    /// Steps in the order the backward pass visits them (the forward order reversed).
    fn backward_steps(&self) -> Box<dyn Iterator<Item = usize>> {
        if self.reverse {
            Box::new(0..self.seq_len)
        } else {
            Box::new((0..self.seq_len).rev())
        }
    }
}

/// Views of the packed parameters `[w_ih | w_hh | b_ih | b_hh | w_hr]` (biases and `w_hr` optional).
pub(crate) struct Weights<'a, T> {
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    pub b_ih: Option<&'a [T]>,
    pub b_hh: Option<&'a [T]>,
    pub w_hr: Option<&'a [T]>,
}

/// Lengths of the packed parameter pieces, in packing order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParamSizes {
    w_ih: usize,
    w_hh: usize,
    bias: usize,
    w_hr: usize,
}

impl ParamSizes {
    fn total(&self) -> usize {
        self.w_ih + self.w_hh + 2 * self.bias + self.w_hr
    }

    fn split<'a, T>(&self, flat: &'a [T]) -> Weights<'a, T> {
        let (w_ih, rest) = flat.split_at(self.w_ih);
        let (w_hh, rest) = rest.split_at(self.w_hh);
        let (b_ih, rest) = rest.split_at(self.bias);
        let (b_hh, rest) = rest.split_at(self.bias);
        let w_hr = &rest[..self.w_hr];
        let some = |s: &'a [T]| (!s.is_empty()).then_some(s);
        Weights {
            w_ih,
            w_hh,
            b_ih: some(b_ih),
            b_hh: some(b_hh),
            w_hr: some(w_hr),
        }
    }
}

/// A buffer that several threads write at once, each in its own rows (a chunk of the batch).
#[derive(Clone, Copy)]
pub(crate) struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Shared` only hands out slices through `slice`, whose callers guarantee that threads
// touch disjoint ranges while the underlying buffer is alive and not otherwise borrowed.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub fn new(buf: &mut [T]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `buf[start .. start + len]`.
    ///
    /// # Safety
    /// No other live reference may overlap the range: kernels give each batch chunk its own rows
    /// (see [`Problem::span`]) and take one range at a time.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "shared buffer range out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}

/// Fewest batch rows worth a thread of their own.
const MIN_ROWS_PER_THREAD: usize = 4;

/// Runs `f` on chunks of the batch rows `0..batch`, one per thread: the recurrences of different
/// sequences are independent, so each thread runs its chunk through every step with no
/// synchronisation (one thread when the batch is too small to split).
pub(crate) fn for_each_batch_chunk(batch: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let chunks = batch_chunks(batch);
    if chunks == 1 {
        f(0..batch);
        return;
    }
    let f = &f;
    rayon::scope(|s| {
        for c in 0..chunks {
            let range = c * batch / chunks..(c + 1) * batch / chunks;
            s.spawn(move |_| f(range));
        }
    });
}

/// Fewest rows per batch chunk for which each step's input projection runs inside the chunk's
/// recurrence (with the packed kernel) instead of as one GEMM over all rows before it: the
/// per-step product then fills whole register blocks, needs no pass of its own over the gates
/// and no synchronisation, and inference keeps no gates for all steps.
const PER_STEP_PROJECTION_MIN_ROWS: usize = 6;

/// Whether the input projection runs per step inside each batch chunk (see
/// [`PER_STEP_PROJECTION_MIN_ROWS`]).
pub(crate) fn per_step_projection<T: Float>(batch: usize) -> bool {
    gemm::PackedRhs::<T>::uses_kernel()
        && batch / batch_chunks(batch) >= PER_STEP_PROJECTION_MIN_ROWS
}

/// The input projection run per step inside a batch chunk: `x_t · W_ihᵀ (+ bias)`.
pub(crate) struct StepInput<'a, T> {
    pub x: &'a [T],
    pub w_ih_t: &'a gemm::PackedRhs<T>,
    pub bias: Option<&'a [T]>,
}

impl<T: Float> StepInput<'_, T> {
    /// Writes step `t`'s projection of batch rows `b0 .. b0 + n` into `dst` (row `i` at
    /// `dst[i * dst_rs..]`, as many columns as `W_ihᵀ` has).
    pub fn project(
        &self,
        p: &Problem,
        t: usize,
        b0: usize,
        n: usize,
        dst: &mut [T],
        dst_rs: usize,
    ) {
        if let Some(bias) = self.bias {
            for i in 0..n {
                dst[i * dst_rs..][..bias.len()].copy_from_slice(bias);
            }
        }
        let x_t = gemm::MatRef::strided(
            self.x,
            p.row(t, b0) * p.input,
            n,
            p.input,
            p.step_rs(p.input),
            1,
        );
        self.w_ih_t.matmul(dst, 0, dst_rs, self.bias.is_some(), x_t);
    }
}

/// How many chunks [`for_each_batch_chunk`] splits `batch` rows into.
fn batch_chunks(batch: usize) -> usize {
    rayon::current_num_threads()
        .min(batch / MIN_ROWS_PER_THREAD)
        .max(1)
}

/// The input's gradient `dx = dG · W_ih` of a backward, `None` unless [`Problem::input_grad`];
/// `dg` is `(rows, gates)` and `w_ih` `(gates, input)`.
fn input_gradient<T: Float>(
    p: &Problem,
    dg: gemm::MatRef<T>,
    w_ih: &[T],
    gates: usize,
) -> Option<Vec<T>> {
    p.input_grad.then(|| {
        // Overwritten by the product.
        let mut dx = scratch::take(p.rows() * p.input);
        let w_ih = gemm::MatRef::row_major(w_ih, gates, p.input);
        gemm::matmul(&mut dx, 0, p.input, false, dg, w_ih, true);
        dx
    })
}

/// Appends a weight gradient to the packed parameter gradient and recycles its buffer.
fn append<T: Float>(dst: &mut Vec<T>, grad: Vec<T>) {
    dst.extend_from_slice(&grad);
    scratch::give(grad);
}

/// Adds up the rows of a row-major `(rows, width)` buffer into `out (width)`.
fn colsum_into<T: Float>(data: &[T], width: usize, out: &mut [T]) {
    for row in data.chunks_exact(width) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += *v;
        }
    }
}

/// The op: one layer-direction over the whole sequence. Arguments: `xs` (rows, input) in the
/// problem's layout, `state0 = [h0 | c0]` flat, `params` packed flat. Result:
/// `[ys (rows, state) | h_n (batch, state) | c_n (batch, hidden)]` flat.
struct FusedRecurrence {
    mode: Mode,
    problem: Problem,
    sizes: ParamSizes,
    /// Activations saved by the forward for the backward (typed `LstmSaved<T>` etc.).
    saved: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    save: bool,
}

impl FusedRecurrence {
    fn out_len(&self) -> usize {
        let p = &self.problem;
        let c = if self.mode == Mode::Lstm {
            p.batch * p.hidden
        } else {
            0
        };
        p.rows() * p.state + p.batch * p.state + c
    }

    fn forward_typed<T: Float>(&self, xs: &[T], state0: &[T], params: &[T]) -> Vec<T> {
        let p = &self.problem;
        let (h0, c0) = state0.split_at(p.batch * p.state);
        self.forward_parts(xs, h0, c0, &self.sizes.split(params))
    }

    /// The forward from separate views of the initial state (`c0` empty unless LSTM) and the
    /// parameters.
    fn forward_parts<T: Float>(&self, xs: &[T], h0: &[T], c0: &[T], w: &Weights<T>) -> Vec<T> {
        let p = &self.problem;
        // Every row of every step and the final state are written by the forward.
        let mut out = scratch::take(self.out_len());
        let saved: Option<Box<dyn Any + Send + Sync>> = match self.mode {
            Mode::Lstm => {
                lstm::forward(p, xs, h0, c0, w, &mut out, self.save).map(|s| Box::new(s) as _)
            }
            Mode::Gru => gru::forward(p, xs, h0, w, &mut out, self.save).map(|s| Box::new(s) as _),
            Mode::RnnTanh | Mode::RnnRelu => {
                let relu = self.mode == Mode::RnnRelu;
                rnn::forward(p, relu, xs, h0, w, &mut out, self.save).map(|s| Box::new(s) as _)
            }
        };
        if let Ok(mut slot) = self.saved.lock() {
            *slot = saved;
        }
        out
    }

    /// Gradients `(d xs, d state0, d params)` as flat vectors (`d xs` only when
    /// [`Problem::input_grad`]).
    fn backward_typed<T: Float>(
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
        let mut dparams = Vec::with_capacity(self.sizes.total());
        let (dx, dstate) = match self.mode {
            Mode::Lstm => {
                let Some(s) = saved.downcast_ref::<lstm::LstmSaved<T>>() else {
                    bail!("fused recurrence: saved activations have the wrong type")
                };
                let g = lstm::backward(p, xs, &w, s, grad_out);
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
                let g = gru::backward(p, xs, &w, s, grad_out);
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
                let g = rnn::backward(p, relu, xs, &w, s, grad_out);
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

/// The contiguous slice of a CPU storage under `layout`.
fn cpu_slice<'a, T: WithDType>(s: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => bail!("fused recurrence: argument is not contiguous"),
    }
}

/// Reads a contiguous CPU tensor as a flat vector (no copy when already contiguous and in place).
fn with_cpu_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu_slice::<T>(cpu, layout)?),
        _ => bail!("fused recurrence: tensor is not on the CPU"),
    }
}

/// Flat gradients `(d xs, d state0, d params)` of the recurrence's backward (`d xs` only when
/// [`Problem::input_grad`]).
type FlatGrads<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

/// The three flat gradients of a `CustomOp3`'s backward as tensors shaped like its arguments
/// (the first one only when computed).
fn grads_like<T: WithDType>(
    (a, b, c): FlatGrads<T>,
    like: [&Tensor; 3],
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let dev = like[0].device();
    Ok((
        a.map(|a| Tensor::from_vec(a, like[0].shape(), dev))
            .transpose()?,
        Tensor::from_vec(b, like[1].shape(), dev)?,
        Tensor::from_vec(c, like[2].shape(), dev)?,
    ))
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
        let shape = Shape::from(self.out_len());
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let out = self.forward_typed::<f32>(
                    cpu_slice(s1, l1)?,
                    cpu_slice(s2, l2)?,
                    cpu_slice(s3, l3)?,
                );
                Ok((CpuStorage::F32(out), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let out = self.forward_typed::<f64>(
                    cpu_slice(s1, l1)?,
                    cpu_slice(s2, l2)?,
                    cpu_slice(s3, l3)?,
                );
                Ok((CpuStorage::F64(out), shape))
            }
            _ => bail!("fused recurrence: f32 or f64 only, all arguments of one dtype"),
        }
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
        fn run<T: Float>(
            op: &FusedRecurrence,
            xs: &Tensor,
            params: &Tensor,
            grad_res: &Tensor,
        ) -> Result<FlatGrads<T>> {
            with_cpu_slice::<T, _>(xs, |x| {
                with_cpu_slice::<T, _>(params, |w| {
                    with_cpu_slice::<T, _>(grad_res, |g| op.backward_typed(x, w, g))
                })
            })
        }
        let like = [xs, state0, params];
        let (dx, ds, dp) = match xs.dtype() {
            DType::F32 => grads_like(run::<f32>(self, xs, params, grad_res)?, like)?,
            DType::F64 => grads_like(run::<f64>(self, xs, params, grad_res)?, like)?,
            dt => bail!("fused recurrence: f32 or f64 only, got {dt:?}"),
        };
        // No gradient for a state outside the graph (`dx` is computed only for an input in it):
        // Candle would add it into a fresh zero buffer that nothing reads.
        Ok((dx, Some(ds).filter(|_| state0.track_op()), Some(dp)))
    }
}

/// Whether the fused CPU ops (the output layer's loss) can run `xs`: a CPU tensor of f32 or f64.
pub(crate) fn supports(xs: &Tensor) -> bool {
    xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// Whether the fused recurrence can run `xs`: f32 or f64 on the CPU, or on CUDA in a build with
/// the `cuda` feature.
pub(crate) fn recurrence_supported(xs: &Tensor) -> bool {
    let device = xs.device().is_cpu() || (cfg!(feature = "cuda") && xs.device().is_cuda());
    device && matches!(xs.dtype(), DType::F32 | DType::F64)
}

/// The op's forward with no autograd graph, on `args = [xs, h0, (c0,) w_ih, w_hh, (b_ih, b_hh,)
/// (w_hr)]` read in place (each made contiguous first).
fn run_untracked<T: Float>(op: &FusedRecurrence, args: &[Tensor]) -> Result<Vec<T>> {
    let args = args
        .iter()
        .map(Tensor::contiguous)
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = args.iter().map(Tensor::storage_and_layout).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(cpu) => slices.push(cpu_slice::<T>(cpu, layout)?),
            _ => bail!("fused recurrence: tensor is not on the CPU"),
        }
    }
    let lstm = op.mode.has_cell_state();
    let (x, h0) = (slices[0], slices[1]);
    let (c0, rest): (&[T], &[&[T]]) = if lstm {
        (slices[2], &slices[3..])
    } else {
        (&[], &slices[2..])
    };
    let bias = op.sizes.bias > 0;
    let w = Weights {
        w_ih: rest[0],
        w_hh: rest[1],
        b_ih: bias.then(|| rest[2]),
        b_hh: bias.then(|| rest[3]),
        w_hr: (op.sizes.w_hr > 0).then(|| rest[if bias { 4 } else { 2 }]),
    };
    Ok(op.forward_parts(x, h0, c0, &w))
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
) -> Result<(Tensor, RnnState)> {
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
    };
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
        // Nothing to differentiate: run on views of the tensors as they are, without copying the
        // parameters and the state into the op's packed arguments.
        let out_len = op.out_len();
        let mut args = vec![xs.clone()];
        args.extend(state_pieces);
        args.extend(pieces);
        match xs.dtype() {
            DType::F32 => {
                Tensor::from_vec(run_untracked::<f32>(&op, &args)?, out_len, xs.device())?
            }
            DType::F64 => {
                Tensor::from_vec(run_untracked::<f64>(&op, &args)?, out_len, xs.device())?
            }
            dt => bail!("fused recurrence: f32 or f64 only, got {dt:?}"),
        }
    };
    let rows = seq_len * batch;
    let ys = out.narrow(0, 0, rows * state)?.reshape((d0, d1, state))?;
    // The final state is copied out of the op's result: as a view it would keep the whole
    // `(seq_len, batch, state)` output buffer alive for as long as the state is carried (e.g. a
    // state kept after a 100,000-step forward whose outputs were dropped).
    let h = out
        .narrow(0, rows * state, batch * state)?
        .reshape((batch, state))?
        .force_contiguous()?;
    let c = if cell.mode.has_cell_state() {
        Some(
            out.narrow(0, rows * state + batch * state, batch * hidden)?
                .reshape((batch, hidden))?
                .force_contiguous()?,
        )
    } else {
        None
    };
    Ok((ys, RnnState::new(h, c)))
}

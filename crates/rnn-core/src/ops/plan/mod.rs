//! The fused CUDA recurrence's launch plan as data: for one layer-direction, the ordered list of
//! cuBLAS GEMMs (transposes, sizes, leading dimensions, buffer offsets), pointwise kernel calls
//! (kernel id, element count, argument block) and device copies that the forward and the backward
//! run. The CUDA op executes a plan on Candle's stream; [`host`] executes the same plan on the CPU,
//! with cuBLAS's column-major semantics and the kernels' own per-element bodies
//! (`crates/rnn-core/cuda/recurrence.cuh`, compiled for the host in `cargo test`), so every index
//! the GPU will use is tested against the CPU fused op here.
//!
//! Launches per layer-direction and `T` steps: forward `2T + 3` (LSTM; `2T + 2` GRU and RNN),
//! backward `2T + 5` (`2T + 4` without the input's gradient); an LSTM with projection adds two
//! per step each way (the `W_hr` product and its masking or resolving kernel).

mod args;
mod backward;
mod forward;
#[cfg(test)]
pub(crate) mod host;
#[cfg(test)]
mod tests;

pub(crate) use args::{ArgsDesc, StepArgs};
pub(crate) use backward::backward_plan;
pub(crate) use forward::forward_plan;

use crate::ops::problem::{ParamSizes, Problem};
use crate::Mode;

/// Pointwise kernels; the numbers are `RnnKernel` in `recurrence.cuh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub(crate) enum Kernel {
    LstmFwd = 0,
    LstmProjFwd = 1,
    GruFwd = 2,
    RnnFwd = 3,
    LstmBwd = 4,
    DhResolve = 5,
    GruBwd = 6,
    RnnBwd = 7,
    BwdFinal = 8,
    Colsum = 9,
    LstmRAll = 10,
}

impl Kernel {
    /// Every kernel, in id order.
    #[cfg(test)]
    pub const ALL: [Kernel; 11] = [
        Kernel::LstmFwd,
        Kernel::LstmProjFwd,
        Kernel::GruFwd,
        Kernel::RnnFwd,
        Kernel::LstmBwd,
        Kernel::DhResolve,
        Kernel::GruBwd,
        Kernel::RnnBwd,
        Kernel::BwdFinal,
        Kernel::Colsum,
        Kernel::LstmRAll,
    ];

    /// The `__global__` function's name stem in `recurrence.cu` (`<name>_f32`, `<name>_f64`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::LstmFwd => "rnn_lstm_fwd",
            Kernel::LstmProjFwd => "rnn_lstm_proj_fwd",
            Kernel::GruFwd => "rnn_gru_fwd",
            Kernel::RnnFwd => "rnn_rnn_fwd",
            Kernel::LstmBwd => "rnn_lstm_bwd",
            Kernel::DhResolve => "rnn_dh_resolve",
            Kernel::GruBwd => "rnn_gru_bwd",
            Kernel::RnnBwd => "rnn_rnn_bwd",
            Kernel::BwdFinal => "rnn_bwd_final",
            Kernel::Colsum => "rnn_colsum",
            Kernel::LstmRAll => "rnn_lstm_r_all",
        }
    }
}

/// A buffer a plan reads or writes. The first group is given by the caller, the rest are the
/// plan's own (sizes in [`Plan::scratch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Buf {
    /// `(rows, input)` input sequence.
    X,
    /// `[h0 (B, P) | c0 (B, H)]`.
    State0,
    /// `[w_ih | w_hh | b_ih | b_hh | w_hr]` packed as the CPU op packs them.
    Params,
    /// `(B)` valid steps per sequence, i64 (only with lengths).
    Lengths,
    /// Forward result `[ys (rows, P) | h_n (B, P) | c_n (B, H)]`.
    Out,
    /// Gradient of [`Buf::Out`].
    GradOut,
    /// Gradient of [`Buf::X`].
    DX,
    /// Gradient of [`Buf::State0`].
    DState,
    /// Gradient of [`Buf::Params`], same packing.
    DParams,
    /// Saved by the forward for the backward: gate activations `(rows, G*H)` (first the input
    /// projection, activated in place).
    Gates,
    /// Saved: state before each step `(rows, P)`.
    Hprev,
    /// Saved, LSTM: cell before each step `(rows, H)`.
    Cprev,
    /// Saved, LSTM: `tanh(c)` after each step `(rows, H)`.
    Tanhc,
    /// Saved, GRU: `W_hn h + b_hn` of each step `(rows, H)`.
    Hn,
    /// Forward scratch: GRU `h W_hh^T (B, 3H)`; LSTM projection `r W_hr^T (B, P)`.
    Hg,
    /// Forward scratch, LSTM projection: `o * tanh(c)` of this step `(B, H)`.
    R,
    /// Backward: gradient of the gate pre-activations `(rows, G*H)` (GRU: input side).
    Dg,
    /// Backward, GRU: gradient of the hidden-side pre-activations `(rows, 3H)`.
    Dgh,
    /// Backward: gradient carried to the earlier step `(B, P)`.
    Carry,
    /// Backward: `dgates W_hh` of the step just done `(B, P)`.
    DhRec,
    /// Backward, LSTM: gradient of `c` `(B, H)`.
    Dc,
    /// Backward, projection: `dh W_hr (B, H)`.
    Dr,
    /// Backward, projection: resolved gradient of `h` `(B, P)`.
    Dh,
    /// Backward, projection: resolved gradient of `h` of every row `(rows, P)`.
    DhAll,
    /// Backward, projection: `o * tanh(c)` of every row `(rows, H)`.
    RAll,
}

/// A position in a buffer (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufRef {
    pub buf: Buf,
    pub off: usize,
}

impl Buf {
    pub fn at(self, off: usize) -> BufRef {
        BufRef { buf: self, off }
    }
}

/// One cuBLAS `gemm` in its own column-major terms: `C (m, n) = op(A) op(B) + beta C`, alpha 1;
/// `beta` is 0 (C is not read) or 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gemm {
    pub transa: bool,
    pub transb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: BufRef,
    pub lda: usize,
    pub b: BufRef,
    pub ldb: usize,
    pub beta: f64,
    pub c: BufRef,
    pub ldc: usize,
}

/// A row-major matrix operand: `buf` at `ld` elements per row, used as stored or transposed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowMajor {
    pub at: BufRef,
    pub ld: usize,
    pub transposed: bool,
}

impl RowMajor {
    pub fn new(at: BufRef, ld: usize) -> Self {
        Self {
            at,
            ld,
            transposed: false,
        }
    }

    pub fn t(self) -> Self {
        Self {
            transposed: !self.transposed,
            ..self
        }
    }
}

impl Gemm {
    /// Row-major `C (m, n) (+)= A (m, k) B (k, n)` as the column-major product `C^T = B^T A^T`.
    pub fn row_major(
        c: BufRef,
        ldc: usize,
        (m, n, k): (usize, usize, usize),
        a: RowMajor,
        b: RowMajor,
        accumulate: bool,
    ) -> Self {
        Gemm {
            transa: b.transposed,
            transb: a.transposed,
            m: n,
            n: m,
            k,
            a: b.at,
            lda: b.ld,
            b: a.at,
            ldb: a.ld,
            beta: if accumulate { 1.0 } else { 0.0 },
            c,
            ldc,
        }
    }
}

/// One launch.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Gemm(Gemm),
    Pointwise {
        kernel: Kernel,
        n: usize,
        args: Box<ArgsDesc>,
    },
    /// Device-to-device copy of `len` elements.
    Copy {
        src: BufRef,
        dst: BufRef,
        len: usize,
    },
}

/// The launches of one pass, and the sizes of the buffers it uses besides the caller's.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    /// `(buffer, elements)` of every plan-owned buffer this pass uses (the forward's saved
    /// buffers included; the backward lists only its own).
    pub scratch: Vec<(Buf, usize)>,
}

/// The buffers the forward keeps for the backward (besides its inputs `X` and `Params`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) const SAVED: [Buf; 5] = [Buf::Gates, Buf::Hprev, Buf::Cprev, Buf::Tanhc, Buf::Hn];

impl Plan {
    /// Launches: GEMMs, kernel calls and copies.
    #[cfg(test)]
    pub fn launches(&self) -> usize {
        self.ops.len()
    }
}

/// What a plan is built from: one layer-direction's problem and parameters.
#[derive(Debug, Clone)]
pub(crate) struct Spec<'a> {
    pub mode: Mode,
    pub problem: &'a Problem,
    pub sizes: ParamSizes,
    /// Whether the forward keeps what the backward needs.
    pub save: bool,
}

impl Spec<'_> {
    /// Gates per unit: 4, 3 or 1.
    pub fn gates(&self) -> usize {
        match self.mode {
            Mode::Lstm => 4,
            Mode::Gru => 3,
            Mode::RnnTanh | Mode::RnnRelu => 1,
        }
    }

    pub fn proj(&self) -> bool {
        self.sizes.w_hr > 0
    }

    pub fn bias(&self) -> bool {
        self.sizes.bias > 0
    }

    /// Offsets of `w_ih`, `w_hh`, `b_ih`, `b_hh`, `w_hr` in the packed parameters.
    pub fn param_offsets(&self) -> [usize; 5] {
        let s = &self.sizes;
        let w_hh = s.w_ih;
        let b_ih = w_hh + s.w_hh;
        let b_hh = b_ih + s.bias;
        [0, w_hh, b_ih, b_hh, b_hh + s.bias]
    }

    /// `(row_base, row_stride)` of step `t`'s rows.
    pub fn rows_of_step(&self, t: usize) -> (usize, usize) {
        let p = self.problem;
        if p.batch_first {
            (t, p.seq_len)
        } else {
            (t * p.batch, 1)
        }
    }

    /// The argument block every kernel call of step `t` starts from.
    pub fn step_args(&self, t: usize, t_prev: Option<usize>) -> ArgsDesc {
        let p = self.problem;
        let (row_base, row_stride) = self.rows_of_step(t);
        ArgsDesc {
            batch: p.batch as i64,
            hidden: p.hidden as i64,
            state: p.state as i64,
            row_base: row_base as i64,
            row_stride: row_stride as i64,
            t: t as i64,
            t_prev: t_prev.map_or(-1, |t| t as i64),
            flags: if self.mode == Mode::RnnRelu { 1 } else { 0 },
            lengths: p.lengths.as_ref().map(|_| Buf::Lengths.at(0)),
            ..ArgsDesc::default()
        }
    }
}

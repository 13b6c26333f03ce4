//! The plan's vocabulary: kernels, buffers, GEMMs, operations, the plan itself, and the argument
//! blocks of the per-step kernels.
//!
//! A pointwise kernel's argument block: symbolic in a plan ([`ArgsDesc`]: buffer positions), and
//! resolved for a launch ([`StepArgs`]: pointers, the layout of `RnnStepArgs<T>` in
//! `recurrence.cuh`).
use crate::config::Mode;
use crate::ops::problem::{ParamSizes, Problem};

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

/// The argument block with buffer positions instead of pointers; `None` is a null pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ArgsDesc {
    pub batch: i64,
    pub hidden: i64,
    pub state: i64,
    pub row_base: i64,
    pub row_stride: i64,
    pub t: i64,
    pub t_prev: i64,
    pub rows: i64,
    pub width: i64,
    pub flags: i64,
    pub lengths: Option<BufRef>,
    pub b_ih: Option<BufRef>,
    pub b_hh: Option<BufRef>,
    pub gates: Option<BufRef>,
    pub hg: Option<BufRef>,
    pub h: Option<BufRef>,
    pub c: Option<BufRef>,
    pub y: Option<BufRef>,
    pub hprev: Option<BufRef>,
    pub cprev: Option<BufRef>,
    pub tanhc: Option<BufRef>,
    pub hn: Option<BufRef>,
    pub r: Option<BufRef>,
    pub dy: Option<BufRef>,
    pub carry_in: Option<BufRef>,
    pub carry_out: Option<BufRef>,
    pub dh_rec: Option<BufRef>,
    pub dc_in: Option<BufRef>,
    pub dc_out: Option<BufRef>,
    pub dr: Option<BufRef>,
    pub dg: Option<BufRef>,
    pub dgh: Option<BufRef>,
    pub dh: Option<BufRef>,
    pub dh_all: Option<BufRef>,
    pub out1: Option<BufRef>,
    pub out2: Option<BufRef>,
}

/// `RnnStepArgs<T>` of `recurrence.cuh`, field for field (the host harness's layout test holds
/// the two equal). Pointers are host or device addresses, whichever the executor runs on.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepArgs<T> {
    pub batch: i64,
    pub hidden: i64,
    pub state: i64,
    pub row_base: i64,
    pub row_stride: i64,
    pub t: i64,
    pub t_prev: i64,
    pub rows: i64,
    pub width: i64,
    pub flags: i64,
    pub lengths: *const i64,
    pub b_ih: *const T,
    pub b_hh: *const T,
    pub gates: *mut T,
    pub hg: *const T,
    pub h: *mut T,
    pub c: *mut T,
    pub y: *mut T,
    pub hprev: *mut T,
    pub cprev: *mut T,
    pub tanhc: *mut T,
    pub hn: *mut T,
    pub r: *mut T,
    pub dy: *const T,
    pub carry_in: *const T,
    pub carry_out: *mut T,
    pub dh_rec: *const T,
    pub dc_in: *const T,
    pub dc_out: *mut T,
    pub dr: *const T,
    pub dg: *mut T,
    pub dgh: *mut T,
    pub dh: *mut T,
    pub dh_all: *mut T,
    pub out1: *mut T,
    pub out2: *mut T,
}

impl ArgsDesc {
    /// The pointer block, with `ptr` giving the address of a buffer position and `lengths` that
    /// of the lengths buffer.
    pub fn resolve<T>(
        &self,
        mut ptr: impl FnMut(BufRef) -> *mut T,
        lengths: impl FnOnce(BufRef) -> *const i64,
    ) -> StepArgs<T> {
        let mut p = |r: Option<BufRef>| r.map_or(std::ptr::null_mut(), &mut ptr);
        StepArgs {
            batch: self.batch,
            hidden: self.hidden,
            state: self.state,
            row_base: self.row_base,
            row_stride: self.row_stride,
            t: self.t,
            t_prev: self.t_prev,
            rows: self.rows,
            width: self.width,
            flags: self.flags,
            b_ih: p(self.b_ih),
            b_hh: p(self.b_hh),
            gates: p(self.gates),
            hg: p(self.hg),
            h: p(self.h),
            c: p(self.c),
            y: p(self.y),
            hprev: p(self.hprev),
            cprev: p(self.cprev),
            tanhc: p(self.tanhc),
            hn: p(self.hn),
            r: p(self.r),
            dy: p(self.dy),
            carry_in: p(self.carry_in),
            carry_out: p(self.carry_out),
            dh_rec: p(self.dh_rec),
            dc_in: p(self.dc_in),
            dc_out: p(self.dc_out),
            dr: p(self.dr),
            dg: p(self.dg),
            dgh: p(self.dgh),
            dh: p(self.dh),
            dh_all: p(self.dh_all),
            out1: p(self.out1),
            out2: p(self.out2),
            lengths: self.lengths.map_or(std::ptr::null(), lengths),
        }
    }
}

/// Byte offsets of [`StepArgs`]'s fields in declaration order, after its size: the numbers the
/// host harness reports for `RnnStepArgs<double>`.
#[cfg(test)]
pub(crate) fn step_args_layout() -> Vec<i64> {
    use std::mem::{offset_of, size_of};
    type A = StepArgs<f64>;
    [
        size_of::<A>(),
        offset_of!(A, batch),
        offset_of!(A, hidden),
        offset_of!(A, state),
        offset_of!(A, row_base),
        offset_of!(A, row_stride),
        offset_of!(A, t),
        offset_of!(A, t_prev),
        offset_of!(A, rows),
        offset_of!(A, width),
        offset_of!(A, flags),
        offset_of!(A, lengths),
        offset_of!(A, b_ih),
        offset_of!(A, b_hh),
        offset_of!(A, gates),
        offset_of!(A, hg),
        offset_of!(A, h),
        offset_of!(A, c),
        offset_of!(A, y),
        offset_of!(A, hprev),
        offset_of!(A, cprev),
        offset_of!(A, tanhc),
        offset_of!(A, hn),
        offset_of!(A, r),
        offset_of!(A, dy),
        offset_of!(A, carry_in),
        offset_of!(A, carry_out),
        offset_of!(A, dh_rec),
        offset_of!(A, dc_in),
        offset_of!(A, dc_out),
        offset_of!(A, dr),
        offset_of!(A, dg),
        offset_of!(A, dgh),
        offset_of!(A, dh),
        offset_of!(A, dh_all),
        offset_of!(A, out1),
        offset_of!(A, out2),
    ]
    .into_iter()
    .map(|v| v as i64)
    .collect()
}

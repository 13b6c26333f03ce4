//! A pointwise kernel's argument block: symbolic in a plan ([`ArgsDesc`]: buffer positions), and
//! resolved for a launch ([`StepArgs`]: pointers, the layout of `RnnStepArgs<T>` in
//! `recurrence.cuh`).

use super::BufRef;

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

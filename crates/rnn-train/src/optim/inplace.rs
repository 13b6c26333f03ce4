//! The storage plumbing shared by the in-place element-wise updates (the SGD and AdamW steps,
//! the weight average's step): an update says what it does to contiguous f32/f64 slices
//! ([`Update2`], [`Update3`]); [`InPlace`] makes it Candle's `InplaceOp2`/`InplaceOp3`, which hand
//! over the raw storages and layouts; the loops run in parallel chunks ([`par_zip`]).

use std::ops::{Add, Div, Mul, Sub};

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout};
use rayon::prelude::*;

/// Elements per parallel task of an in-place update.
pub(crate) const CHUNK: usize = 1 << 15;

/// The element types the in-place updates run on (f32, f64), with the operations they use: each
/// one rounds as Candle's CPU op of the same name, so an update written with them equals its
/// composed twin bitwise when it does the same operations in the same order.
pub(crate) trait Elem:
    Copy
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    /// The value Candle's `affine` and scalar ops convert an f64 constant to (`T::from_f64`).
    fn of(x: f64) -> Self;
    /// Candle's `sqrt` (without the `mkl`/`accelerate` features, as this workspace builds it).
    fn sqrt(self) -> Self;
}

impl Elem for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Elem for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// `f(&mut a[i], b[i])` for every `i`, in parallel chunks.
pub(crate) fn par_zip<T: Elem>(a: &mut [T], b: &[T], f: impl Fn(&mut T, T) + Sync) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                f(a, b);
            }
        });
}

/// `f(&mut a[i], b[i], c[i])` for every `i`, in parallel chunks.
pub(crate) fn par_zip3<T: Elem>(a: &mut [T], b: &[T], c: &[T], f: impl Fn(&mut T, T, T) + Sync) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK)))
        .for_each(|(a, (b, c))| {
            for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
                f(a, b, c);
            }
        });
}

fn offsets(op: &str, l: &Layout) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: contiguous layouts only")))
}

/// An element-wise update of `a` from `b`, over contiguous slices of one dtype.
pub(crate) trait Update2: Sync {
    /// The name Candle's errors give the op.
    const NAME: &'static str;
    fn run<T: Elem>(&self, a: &mut [T], b: &[T]);
}

/// An element-wise update of `a` from `b` and `c`, over contiguous slices of one dtype.
pub(crate) trait Update3: Sync {
    /// The name Candle's errors give the op.
    const NAME: &'static str;
    fn run<T: Elem>(&self, a: &mut [T], b: &[T], c: &[T]);
}

/// An [`Update2`] or [`Update3`] as Candle's in-place op: `a.inplace_op2(&b, &InPlace(update))`.
/// It fails, writing nothing, on non-contiguous layouts, other dtypes or operands of different
/// sizes (and Candle refuses operands sharing the written tensor's storage before it runs).
pub(crate) struct InPlace<U>(pub U);

impl<U: Update2> InplaceOp2 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let ((a0, a1), (b0, b1)) = (offsets(U::NAME, l1)?, offsets(U::NAME, l2)?);
        if a1 - a0 != b1 - b0 {
            candle_core::bail!("{}: operands of different sizes", U::NAME);
        }
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => self.0.run(&mut a[a0..a1], &b[b0..b1]),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => self.0.run(&mut a[a0..a1], &b[b0..b1]),
            _ => candle_core::bail!("{}: f32 or f64 only", U::NAME),
        }
        Ok(())
    }
}

impl<U: Update3> InplaceOp3 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let op = U::NAME;
        let ((a0, a1), (b0, b1), (c0, c1)) = (offsets(op, l1)?, offsets(op, l2)?, offsets(op, l3)?);
        if a1 - a0 != b1 - b0 || a1 - a0 != c1 - c0 {
            candle_core::bail!("{op}: operands of different sizes");
        }
        match (s1, s2, s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                self.0.run(&mut a[a0..a1], &b[b0..b1], &c[c0..c1])
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                self.0.run(&mut a[a0..a1], &b[b0..b1], &c[c0..c1])
            }
            _ => candle_core::bail!("{op}: f32 or f64 only"),
        }
        Ok(())
    }
}

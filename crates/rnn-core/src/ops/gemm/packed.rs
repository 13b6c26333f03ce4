//! [`PackedRhs`]: a fixed right-hand matrix packed once for the many small products of a
//! recurrence.

use super::blocked::*;
use super::calibrate::{kernel_for, Class};
use super::matref::cast;
use super::matref::MatRef;
use super::product::matmul;
use super::simd::{kernel, KernelIsa};
use crate::ops::math::Float;
use crate::ops::scratch;

/// [`PackedRhs::matmul`] copies `a` into micro-panels from this inner dimension on (and at
/// least one full block of rows); below it the copy costs about what it saves.
pub(super) const PACK_A_MIN_K: usize = 128;

thread_local! {
    /// Per-thread scratch for [`PackedRhs::matmul`]'s packed copy of `a` (reused every step).
    static PACKED_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A fixed right-hand matrix `b (k, n)` of many small products `a (m, k) · b` (the recurrent
/// weights of every step), packed once into column panels for a register-blocked f32 kernel
/// (8x32 with AVX-512, 6x16 with AVX2+FMA). faer repacks `b` on every call and is tuned for
/// large `m`; with `m` = a batch chunk (1-32 rows) and `b` reused for every step, the packed kernel keeps the accumulators in
/// registers and reads each panel from cache. Other dtypes, CPUs without AVX2+FMA, and shape
/// classes where it measured fastest use [`matmul`] on a row-major copy: see
/// [`super::calibrate`]. The kernel is a property of the packed object (the panels' layout
/// depends on it), chosen when it is built.
pub(crate) struct PackedRhs<T> {
    pub(super) k: usize,
    pub(super) n: usize,
    /// The kernel `panels` are packed for; `Portable` when `row_major` is used instead.
    pub(super) isa: KernelIsa,
    /// A contiguous row-major copy of `b` for [`matmul`] when the kernel does not apply.
    pub(super) row_major: Vec<T>,
    /// `ceil(n / NR)` panels, each `k` rows of `NR` values (zero beyond `n`); empty when unused.
    pub(super) panels: Vec<f32>,
}

impl<T> Drop for PackedRhs<T> {
    fn drop(&mut self) {
        scratch::give(std::mem::take(&mut self.panels));
    }
}

impl<T: Float> PackedRhs<T> {
    /// The kernel [`PackedRhs::new`] packs a `(k, n)` matrix for, products of `rows` rows at a
    /// time: the one chosen for the shape class ([`super::calibrate`]) for f32, else
    /// `Portable` (no measurement).
    pub fn chosen(rows: usize, k: usize, n: usize) -> KernelIsa {
        if Self::kernel_for(KernelIsa::Avx2) == KernelIsa::Portable {
            return KernelIsa::Portable;
        }
        kernel_for(Class::packed(rows, k, n))
    }

    /// The kernel that [`PackedRhs::with_kernel`] with `isa` runs: `isa` for f32, else
    /// `Portable` (the kernels are f32 only).
    pub(super) fn kernel_for(isa: KernelIsa) -> KernelIsa {
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
            isa
        } else {
            KernelIsa::Portable
        }
    }

    /// Packs `b` for the kernel chosen for products of `rows` rows ([`PackedRhs::chosen`]), or
    /// copies it row-major for the portable path.
    pub fn new(b: MatRef<T>, rows: usize) -> Self {
        Self::with_kernel(b, Self::chosen(rows, b.rows, b.cols))
    }

    /// [`PackedRhs::new`] for `isa`'s kernel instead of the chosen one (f32; other dtypes
    /// always take the portable path). Panics if this CPU cannot run `isa`.
    pub fn with_kernel(b: MatRef<T>, isa: KernelIsa) -> Self {
        let (k, n) = (b.rows, b.cols);
        let isa = Self::kernel_for(isa);
        if isa == KernelIsa::Portable {
            let at = |p: usize, j: usize| b.data[b.offset + p * b.rs + j * b.cs];
            let mut row_major = Vec::with_capacity(k * n);
            for p in 0..k {
                row_major.extend((0..n).map(|j| at(p, j)));
            }
            return Self {
                k,
                n,
                isa,
                row_major,
                panels: Vec::new(),
            };
        }
        isa.assert_simd();
        let nr = isa.nr();
        let np = n.div_ceil(nr);
        // Every element is written by `pack_panels` (zero past `n`).
        let mut panels = scratch::take(np * k * nr);
        pack_panels(&mut panels, nr, cast(b));
        Self {
            k,
            n,
            isa,
            row_major: Vec::new(),
            panels,
        }
    }

    /// `dst (m, n) [+]= a (m, k) · b`, single-threaded; `dst` as in [`matmul`].
    pub fn matmul(
        &self,
        dst: &mut [T],
        dst_offset: usize,
        dst_rs: usize,
        accumulate: bool,
        a: MatRef<T>,
    ) {
        let (m, k, n) = (a.rows, self.k, self.n);
        assert_eq!(a.cols, k, "packed matmul: inner dimensions differ");
        if self.isa == KernelIsa::Portable || m == 0 || n == 0 || k == 0 {
            let b = MatRef::row_major(&self.row_major, k, n);
            matmul(dst, dst_offset, dst_rs, accumulate, a, b, false);
            return;
        }
        assert!(
            dst_offset + (m - 1) * dst_rs + n <= dst.len(),
            "packed matmul: destination out of bounds"
        );
        assert!(
            a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(),
            "packed matmul: left-hand view out of bounds"
        );
        // SAFETY: `panels` is non-empty only for T = f32 and a kernel this CPU runs (checked in
        // `with_kernel`), so the pointer casts are identities; both views' bounds are asserted
        // above.
        let (isa, mr) = (self.isa, self.isa.mr());
        if m >= mr && k >= PACK_A_MIN_K {
            // Copy `a` into micro-panels of MR rows (element (i, p) at [i / MR][p][i % MR]): the
            // kernel then reads one contiguous stream instead of MR strided rows.
            PACKED_A.with_borrow_mut(|apack| {
                let len = m.div_ceil(mr) * k * mr;
                if apack.len() < len {
                    apack.resize(len, 0.0);
                }
                // Row blocks of `a` are the kernel's column panels of `aᵀ`.
                pack_panels(&mut apack[..len], mr, cast(a).t());
                // SAFETY: as below; `apack` holds `blocks` micro-panels of `k` steps.
                unsafe {
                    let c_ptr = (dst.as_mut_ptr() as *mut f32).add(dst_offset);
                    kernel::run(
                        isa,
                        (m, k, n),
                        (apack.as_ptr(), 1, mr, k * mr),
                        &self.panels,
                        (c_ptr, dst_rs),
                        accumulate,
                    );
                }
            });
            return;
        }
        unsafe {
            let a_ptr = (a.data.as_ptr() as *const f32).add(a.offset);
            let c_ptr = (dst.as_mut_ptr() as *mut f32).add(dst_offset);
            kernel::run(
                isa,
                (m, k, n),
                (a_ptr, a.rs, a.cs, mr * a.rs),
                &self.panels,
                (c_ptr, dst_rs),
                accumulate,
            );
        }
    }
}

//! Executes a plan on the CPU: GEMMs with cuBLAS's column-major semantics, copies, and pointwise
//! calls through a caller-given runner (the tests pass the kernels' own bodies compiled for the
//! host). Every buffer sits between guard zones of NaN, and plan-owned buffers start as NaN, as
//! device memory from an allocator starts as garbage: a read outside a buffer or of an element
//! no launch wrote shows up as NaN in the results, and a write outside a buffer breaks a guard.

use super::ir::{Buf, BufRef, Gemm, Kernel, Op, Plan, StepArgs};
use crate::ops::math::Float;
use std::collections::BTreeMap;

/// Elements of NaN before and after every buffer.
pub(crate) const GUARD: usize = 64;

/// The buffers of one execution, each between guard zones.
pub(crate) struct HostBuffers<T> {
    bufs: BTreeMap<Buf, Vec<T>>,
    lengths: Vec<i64>,
}

impl<T: Float> HostBuffers<T> {
    pub fn new() -> Self {
        Self {
            bufs: BTreeMap::new(),
            lengths: Vec::new(),
        }
    }

    /// Sets `buf` to `data` (between guards).
    pub fn set(&mut self, buf: Buf, data: &[T]) {
        let mut v = vec![T::nan(); data.len() + 2 * GUARD];
        v[GUARD..GUARD + data.len()].copy_from_slice(data);
        self.bufs.insert(buf, v);
    }

    /// Makes `buf` a NaN-filled buffer of `len` elements, as an allocator would hand out garbage.
    pub fn alloc(&mut self, buf: Buf, len: usize) {
        self.bufs.insert(buf, vec![T::nan(); len + 2 * GUARD]);
    }

    pub fn set_lengths(&mut self, lengths: &[usize]) {
        self.lengths = vec![i64::MIN; lengths.len() + 2 * GUARD];
        for (d, l) in self.lengths[GUARD..].iter_mut().zip(lengths) {
            *d = *l as i64;
        }
    }

    /// Drops every buffer but those `keep` accepts, as the device executor keeps only the
    /// forward's inputs and its [`super::SAVED`] activations for the backward.
    pub fn retain(&mut self, keep: impl Fn(Buf) -> bool) {
        self.bufs.retain(|b, _| keep(*b));
    }

    /// The contents of `buf` (without guards).
    pub fn get(&self, buf: Buf) -> &[T] {
        let v = &self.bufs[&buf];
        &v[GUARD..v.len() - GUARD]
    }

    /// Buffers whose guard zones were written.
    pub fn broken_guards(&self) -> Vec<Buf> {
        self.bufs
            .iter()
            .filter(|(_, v)| {
                let n = v.len();
                v[..GUARD]
                    .iter()
                    .chain(&v[n - GUARD..])
                    .any(|x| !x.is_nan())
            })
            .map(|(b, _)| *b)
            .collect()
    }

    fn ptr(&mut self, r: BufRef) -> *mut T {
        let v = self
            .bufs
            .get_mut(&r.buf)
            .unwrap_or_else(|| panic!("plan uses {:?}, which was not given", r.buf));
        assert!(
            r.off + GUARD <= v.len() - GUARD,
            "{:?} at {} is outside its {} elements",
            r.buf,
            r.off,
            v.len() - 2 * GUARD
        );
        // SAFETY: in bounds (checked above).
        unsafe { v.as_mut_ptr().add(GUARD + r.off) }
    }

    /// The element `i` after position `r`, checked against the buffer's bounds.
    fn at(&mut self, r: BufRef, i: usize) -> &mut T {
        let v = self.bufs.get_mut(&r.buf).expect("buffer given");
        let len = v.len() - 2 * GUARD;
        let at = r.off + i;
        assert!(at < len, "{:?}[{at}] is outside its {len} elements", r.buf);
        &mut v[GUARD + at]
    }
}

impl<T: Float> Default for HostBuffers<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a pointwise kernel over elements `0..n` with a resolved argument block.
pub(crate) type PointwiseRunner<'a, T> = &'a dyn Fn(Kernel, &StepArgs<T>, usize);

/// Runs `plan`: allocates its scratch buffers (NaN-filled, as garbage), then every launch in order.
pub(crate) fn execute<T: Float>(plan: &Plan, bufs: &mut HostBuffers<T>, run: PointwiseRunner<T>) {
    for &(buf, len) in &plan.scratch {
        if !bufs.bufs.contains_key(&buf) {
            bufs.alloc(buf, len);
        }
    }
    for op in &plan.ops {
        match op {
            Op::Copy { src, dst, len } => {
                for i in 0..*len {
                    let v = *bufs.at(*src, i);
                    *bufs.at(*dst, i) = v;
                }
            }
            Op::Gemm(g) => gemm(bufs, g),
            Op::Pointwise { kernel, n, args } => {
                let lengths_ptr = bufs.lengths.as_ptr().wrapping_add(GUARD);
                let a = args.resolve(|r| bufs.ptr(r), |_| lengths_ptr);
                run(*kernel, &a, *n);
            }
        }
    }
}

/// cuBLAS `gemm` (column-major, alpha 1, beta 0 or 1; C not read when beta is 0), summing over
/// `k` in order.
fn gemm<T: Float>(bufs: &mut HostBuffers<T>, g: &Gemm) {
    let op_a = |bufs: &mut HostBuffers<T>, i: usize, l: usize| {
        *bufs.at(
            g.a,
            if g.transa {
                l + i * g.lda
            } else {
                i + l * g.lda
            },
        )
    };
    let op_b = |bufs: &mut HostBuffers<T>, l: usize, j: usize| {
        *bufs.at(
            g.b,
            if g.transb {
                j + l * g.ldb
            } else {
                l + j * g.ldb
            },
        )
    };
    assert!(g.ldc >= g.m, "ldc {} < m {}", g.ldc, g.m);
    assert!(
        g.lda >= if g.transa { g.k } else { g.m },
        "lda {} too small",
        g.lda
    );
    assert!(
        g.ldb >= if g.transb { g.n } else { g.k },
        "ldb {} too small",
        g.ldb
    );
    let mut out = vec![T::zero(); g.m * g.n];
    for j in 0..g.n {
        for i in 0..g.m {
            let mut s = T::zero();
            for l in 0..g.k {
                s += op_a(bufs, i, l) * op_b(bufs, l, j);
            }
            out[i + j * g.m] = s;
        }
    }
    for j in 0..g.n {
        for i in 0..g.m {
            let c = bufs.at(g.c, i + j * g.ldc);
            *c = if g.beta == 0.0 {
                out[i + j * g.m]
            } else {
                *c + out[i + j * g.m]
            };
        }
    }
}

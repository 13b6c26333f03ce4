//! [`matmul`] and [`matmul_shared_lhs`]: the entry points, which route each product to the
//! axpy path (a few rows), the cache-blocked f32 product ([`super::blocked`]) or faer.

use super::blocked::*;
use super::calibrate::{kernel_for, Class};
use super::matref::cast;
use super::matref::MatRef;
use super::simd::KernelIsa;
use crate::ops::math::Float;

/// `dst (m, n) [+]= a (m, k) · b (k, n)`; `dst` row `i` starts at `dst[dst_offset + i * dst_rs]`
/// and is contiguous. With `may_thread`, multi-threaded (rayon) when the product is large enough to
/// pay for it; callers already running on a batch chunk's thread pass `false`.
pub(crate) fn matmul<T: Float>(
    dst: &mut [T],
    dst_offset: usize,
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<T>,
    b: MatRef<T>,
    may_thread: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_offset + (m - 1) * dst_rs + n <= dst.len(),
        "matmul: destination out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[dst_offset + i * dst_rs..][..n].fill(T::zero());
            }
        }
        return;
    }
    if m <= SMALL_M && b.cs == 1 {
        // A few rows (streaming, batch 1-4): row-by-row axpy over b's contiguous rows beats a
        // packed GEMM, which would repack all of `b` on every call.
        for i in 0..m {
            let row = &mut dst[dst_offset + i * dst_rs..][..n];
            if !accumulate {
                row.fill(T::zero());
            }
            for p in 0..k {
                let alpha = a.data[a.offset + i * a.rs + p * a.cs];
                T::axpy(alpha, &b.data[b.offset + p * b.rs..][..n], row);
            }
        }
        return;
    }
    if let Some(isa) = blocked_kernel(&a, &b) {
        // SAFETY: T is f32 (checked by `blocked_kernel`), so the cast of `dst` is an identity.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len());
            blocked_f32(
                isa,
                dst,
                dst_offset,
                dst_rs,
                accumulate,
                cast(a),
                cast(b),
                may_thread,
            );
        }
        return;
    }
    faer_matmul(dst, dst_offset, dst_rs, accumulate, a, b, may_thread);
}

/// The kernel with which [`matmul`] runs `a · b` on [`blocked_f32`] (`m`, `n`, `k` > 0), or
/// `None` for faer: f32 with a transposed `a`, large enough, and a register kernel chosen for
/// the weight gradients' class ([`super::calibrate`]; faer when `Portable` measured fastest).
pub(super) fn blocked_kernel<T: Float>(a: &MatRef<T>, b: &MatRef<T>) -> Option<KernelIsa> {
    let layout = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && a.rs == 1
        && a.cs > 1
        && a.rows >= BLOCKED_MIN_M
        && b.cols >= 32
        && a.rows * a.cols * b.cols >= BLOCKED_MIN_MACS;
    if !layout {
        return None;
    }
    let isa = kernel_for(Class::Blocked);
    (isa != KernelIsa::Portable && b.cols >= isa.nr()).then_some(isa)
}

/// `dst_j = a · b_j` for every part `(dst_j, dst_rs_j, b_j)` (rows contiguous, from offset 0,
/// overwritten), one left-hand side for all. Equal to one [`matmul`] per part; where the blocked
/// kernel runs them, `a` is packed once for all parts instead of once per part.
pub(crate) fn matmul_shared_lhs<T: Float>(
    a: MatRef<T>,
    parts: &mut [(&mut [T], usize, MatRef<T>)],
    may_thread: bool,
) {
    let (m, k) = (a.rows, a.cols);
    let isa = if m > 0 && k > 0 && parts.len() > 1 {
        let isas: Option<Vec<KernelIsa>> = parts
            .iter()
            .map(|(_, _, b)| blocked_kernel(&a, b).filter(|_| b.rows == k))
            .collect();
        isas.and_then(|isas| isas.first().copied())
    } else {
        None
    };
    let Some(isa) = isa else {
        for (dst, rs, b) in parts.iter_mut() {
            matmul(dst, 0, *rs, false, a, *b, may_thread);
        }
        return;
    };
    for (dst, rs, b) in parts.iter() {
        assert!(
            (m - 1) * rs + b.cols <= dst.len(),
            "matmul: destination out of bounds"
        );
    }
    let mut views: Vec<Part> = parts
        .iter_mut()
        .map(|(dst, rs, b)| {
            // SAFETY: T is f32 (checked by `blocked_kernel`), so the cast is an identity.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len()) };
            (dst, 0, *rs, cast(*b))
        })
        .collect();
    blocked_f32_parts(isa, &mut views, false, cast(a), may_thread);
}

/// [`matmul`] through faer (any dtype); `m`, `n`, `k` > 0 and `dst` bounds checked by the caller.
/// A parallel product of narrow outputs (`n <= ROW_SPLIT_MAX_COLS`) with enough rows runs as row
/// blocks on Rayon's threads, each a single-threaded faer product: faer's own parallel GEMM
/// spent much of such products in its workers' barriers (benches/README.md).
pub(super) fn faer_matmul<T: Float>(
    dst: &mut [T],
    dst_offset: usize,
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<T>,
    b: MatRef<T>,
    may_thread: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let macs = m * n * k;
    let parallel = may_thread && macs >= PARALLEL_MIN_MACS && (n >= 512 || macs >= 1 << 25);
    let threads = crate::ops::batch::threads();
    // SAFETY (both calls): `dst` covers the product's rows from `dst_offset` (checked by the
    // caller) and is borrowed exclusively; the row blocks are disjoint.
    if parallel && threads > 1 && n <= ROW_SPLIT_MAX_COLS && m >= ROW_SPLIT_MIN_ROWS * threads {
        let dst = crate::ops::batch::Shared::new(dst);
        rayon::scope(|s| {
            for c in 0..threads {
                let (r0, r1) = (c * m / threads, (c + 1) * m / threads);
                s.spawn(move |_| {
                    let a_c = MatRef::strided(a.data, a.offset + r0 * a.rs, r1 - r0, k, a.rs, a.cs);
                    let d = dst.ptr_at(dst_offset + r0 * dst_rs);
                    unsafe { faer_matmul_raw(d, dst_rs, accumulate, a_c, b, faer::Par::Seq) };
                });
            }
        });
        return;
    }
    let par = if parallel && threads > 1 {
        faer::Par::rayon(threads)
    } else {
        faer::Par::Seq
    };
    unsafe {
        faer_matmul_raw(
            dst.as_mut_ptr().add(dst_offset),
            dst_rs,
            accumulate,
            a,
            b,
            par,
        )
    };
}

/// `dst (m, n) [+]= a · b` through faer with `par`.
///
/// # Safety
/// `dst` points at `m` rows of `n` values, `dst_rs` apart, that nothing else reads or writes
/// meanwhile; `a` and `b` lie inside their slices (`MatRef::strided`'s bounds, checked in debug
/// builds, for views this crate's kernels build from the shapes they allocate).
unsafe fn faer_matmul_raw<T: Float>(
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<T>,
    b: MatRef<T>,
    par: faer::Par,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 {
        return;
    }
    let dst = faer::MatMut::from_raw_parts_mut(dst, m, n, dst_rs as isize, 1);
    let lhs = faer::MatRef::from_raw_parts(
        a.data.as_ptr().add(a.offset),
        m,
        k,
        a.rs as isize,
        a.cs as isize,
    );
    let rhs = faer::MatRef::from_raw_parts(
        b.data.as_ptr().add(b.offset),
        k,
        n,
        b.rs as isize,
        b.cs as isize,
    );
    let accum = if accumulate {
        faer::Accum::Add
    } else {
        faer::Accum::Replace
    };
    faer::linalg::matmul::matmul(dst, accum, lhs, rhs, T::one(), par);
}

/// Fewest rows of `a` per thread for which a parallel faer product of at most
/// [`ROW_SPLIT_MAX_COLS`] columns runs as row blocks on Rayon's threads.
const ROW_SPLIT_MIN_ROWS: usize = 64;

/// Widest output [`faer_matmul`] splits by rows: each block repacks all of `b`, which wider
/// products (a decoder's vocabulary) would pay for once per thread.
const ROW_SPLIT_MAX_COLS: usize = 512;

/// Products with at most this many rows in `a` take the axpy path.
pub(super) const SMALL_M: usize = 4;

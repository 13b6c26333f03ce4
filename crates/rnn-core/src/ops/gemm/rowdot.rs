//! [`RowsRhs`]: products `a · wᵀ` with the rows of a row-major weight matrix `w` read in place,
//! as dot products: no packing. For a few rows of `a` (a batch-1 step: a matrix-vector product)
//! every element of `w` is used once per call, so packing it first (a copy as large as `w`)
//! costs about as much as the product; streaming the rows of `w` against `a` in L1 does not.

use super::calibrate::{kernel_for, Class};
use super::matref::f32_view;
use super::simd::KernelIsa;
use crate::ops::math::Float;
use std::ops::Range;

/// The right-hand side `wᵀ` of products `a (m, k) · wᵀ`, whose `n` columns are rows of `w`
/// (row-major, `k` wide) taken block after block from `blocks` (say the i, f, g, o rows of one
/// slice of hidden units), read in place.
pub(crate) struct RowsRhs<'a, T> {
    w: &'a [T],
    k: usize,
    blocks: Vec<Range<usize>>,
    isa: KernelIsa,
}

impl<'a, T: Float> RowsRhs<'a, T> {
    /// The rows `blocks` of `w`, for products of `rows` rows of `a` at a time (the kernel is
    /// the one chosen for the shape class: [`super::calibrate`]).
    pub fn new(w: &'a [T], k: usize, blocks: Vec<Range<usize>>, rows: usize) -> Self {
        let n = blocks.iter().map(|b| b.len()).sum();
        let isa = if f32_view(w).is_some() {
            kernel_for(Class::rowdot(rows, k, n))
        } else {
            KernelIsa::Portable
        };
        Self::with_kernel(w, k, blocks, isa)
    }

    /// [`RowsRhs::new`] on `isa`'s kernel (f32; other dtypes take the portable path). Panics if
    /// this CPU cannot run `isa` or a block lies outside `w`.
    pub fn with_kernel(w: &'a [T], k: usize, blocks: Vec<Range<usize>>, isa: KernelIsa) -> Self {
        for b in &blocks {
            assert!(b.end * k <= w.len(), "row block {b:?} outside the matrix");
        }
        let isa = if f32_view(w).is_some() {
            isa
        } else {
            KernelIsa::Portable
        };
        if isa != KernelIsa::Portable {
            isa.assert_simd();
        }
        Self { w, k, blocks, isa }
    }

    /// Columns of the product.
    pub fn n(&self) -> usize {
        self.blocks.iter().map(|b| b.len()).sum()
    }

    /// `dst (m, n) [+]= a (m, k) · wᵀ`, row `i` of `dst` at `dst[i * dst_rs..]`; `a` is `m` rows
    /// of `k` contiguous values, `a_rs` apart. Single-threaded.
    pub fn matmul(
        &self,
        dst: &mut [T],
        dst_rs: usize,
        accumulate: bool,
        (a, m, a_rs): (&[T], usize, usize),
    ) {
        let (k, n) = (self.k, self.n());
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            (m - 1) * dst_rs + n <= dst.len(),
            "row-dot: destination out of bounds"
        );
        assert!(
            (m - 1) * a_rs + k <= a.len(),
            "row-dot: left-hand side out of bounds"
        );
        let mut col = 0;
        for b in &self.blocks {
            let w = &self.w[b.start * k..b.end * k];
            match (self.isa, f32_view(a), f32_view(w)) {
                #[cfg(target_arch = "x86_64")]
                (KernelIsa::Avx512 | KernelIsa::Avx2, Some(a), Some(w)) => {
                    // SAFETY: T is f32 (the views exist), the kernel runs here (checked in
                    // `with_kernel`), and the bounds of `a`, `w` and `dst` are asserted above.
                    unsafe {
                        let c = (dst.as_mut_ptr() as *mut f32).add(col);
                        kernel::run(
                            self.isa,
                            (m, k, b.len()),
                            (a.as_ptr(), a_rs),
                            w,
                            (c, dst_rs),
                            accumulate,
                        );
                    }
                }
                _ => portable(dst, col, dst_rs, accumulate, (a, m, a_rs), w, k),
            }
            col += b.len();
        }
    }
}

/// The product on any dtype: eight partial sums per dot product, so the compiler vectorises it.
fn portable<T: Float>(
    dst: &mut [T],
    col: usize,
    dst_rs: usize,
    accumulate: bool,
    (a, m, a_rs): (&[T], usize, usize),
    w: &[T],
    k: usize,
) {
    for i in 0..m {
        let ai = &a[i * a_rs..][..k];
        for (j, wj) in w.chunks_exact(k).enumerate() {
            let mut part = [T::zero(); 8];
            let (ah, at) = ai.split_at(k / 8 * 8);
            let (wh, wt) = wj.split_at(k / 8 * 8);
            for (ac, wc) in ah.chunks_exact(8).zip(wh.chunks_exact(8)) {
                for l in 0..8 {
                    part[l] += ac[l] * wc[l];
                }
            }
            let mut s = part.iter().copied().sum::<T>();
            for (x, y) in at.iter().zip(wt) {
                s += *x * *y;
            }
            let d = &mut dst[i * dst_rs + col + j];
            *d = if accumulate { *d + s } else { s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // index loops over register arrays read clearer
pub(super) mod kernel {
    use super::KernelIsa;
    use std::arch::x86_64::*;

    /// `c (m, n) [+]= a (m, k) · wᵀ` with `w` `n` contiguous rows of `k`.
    ///
    /// # Safety
    /// `isa` is a SIMD kernel this CPU runs; `a` covers `m` rows of `k` values `a_rs` apart, `w`
    /// covers `n * k` values, `c` covers `(m, n)` with row stride `c_rs`.
    pub unsafe fn run(
        isa: KernelIsa,
        (m, k, n): (usize, usize, usize),
        a: (*const f32, usize),
        w: &[f32],
        c: (*mut f32, usize),
        accumulate: bool,
    ) {
        match isa {
            KernelIsa::Avx512 => avx512::run((m, k, n), a, w.as_ptr(), c, accumulate),
            KernelIsa::Avx2 => avx2::run((m, k, n), a, w.as_ptr(), c, accumulate),
            KernelIsa::Portable => unreachable!("the portable path has no SIMD kernel"),
        }
    }

    /// Row blocks of `w` (`R` rows) times row blocks of `a` (up to `mr` rows): `block(r, mi,
    /// w_rows, a_rows, c)` runs one register block.
    #[inline(always)]
    unsafe fn drive(
        (m, k, n): (usize, usize, usize),
        (a, a_rs): (*const f32, usize),
        w: *const f32,
        (c, c_rs): (*mut f32, usize),
        mr: usize,
        block: impl Fn(usize, usize, *const f32, *const f32, *mut f32),
    ) {
        let mut j = 0;
        while j < n {
            let r = 4.min(n - j);
            let mut i = 0;
            while i < m {
                let mi = mr.min(m - i);
                block(r, mi, w.add(j * k), a.add(i * a_rs), c.add(i * c_rs + j));
                i += mi;
            }
            j += r;
        }
        let _ = (k, a_rs, c_rs);
    }

    mod avx512 {
        use super::*;

        #[target_feature(enable = "avx512f")]
        pub unsafe fn run(
            dims: (usize, usize, usize),
            a: (*const f32, usize),
            w: *const f32,
            c: (*mut f32, usize),
            accumulate: bool,
        ) {
            let (k, a_rs, c_rs) = (dims.1, a.1, c.1);
            drive(dims, a, w, c, 4, |r, mi, w, a, c| {
                let args = (k, w, a, a_rs, c, c_rs, accumulate);
                match (r, mi) {
                    (4, 4) => block::<4, 4, 1>(args),
                    (4, 3) => block::<4, 3, 1>(args),
                    (4, 2) => block::<4, 2, 1>(args),
                    (4, 1) => block::<4, 1, 2>(args),
                    (3, 4) => block::<3, 4, 1>(args),
                    (3, 3) => block::<3, 3, 1>(args),
                    (3, 2) => block::<3, 2, 1>(args),
                    (3, 1) => block::<3, 1, 2>(args),
                    (2, 4) => block::<2, 4, 1>(args),
                    (2, 3) => block::<2, 3, 1>(args),
                    (2, 2) => block::<2, 2, 2>(args),
                    (2, 1) => block::<2, 1, 4>(args),
                    (_, 4) => block::<1, 4, 2>(args),
                    (_, 3) => block::<1, 3, 2>(args),
                    (_, 2) => block::<1, 2, 4>(args),
                    _ => block::<1, 1, 4>(args),
                }
            });
        }

        /// `M` rows of `a` against `R` rows of `w`: `R x M` dot products of `k`, each on `U`
        /// accumulators (16 lanes each) that alternate by step of 16, so that at least eight
        /// independent FMA chains hide the FMA latency.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn block<const R: usize, const M: usize, const U: usize>(
            (k, w, a, a_rs, c, c_rs, accumulate): (
                usize,
                *const f32,
                *const f32,
                usize,
                *mut f32,
                usize,
                bool,
            ),
        ) {
            let mut acc = [[[_mm512_setzero_ps(); M]; R]; U];
            let full = k / 16;
            let mut q = 0;
            while q < full {
                for (u, acc) in acc.iter_mut().enumerate().take(full - q) {
                    let p = (q + u) * 16;
                    let av: [__m512; M] =
                        std::array::from_fn(|i| _mm512_loadu_ps(a.add(i * a_rs + p)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_loadu_ps(w.add(r * k + p));
                        for i in 0..M {
                            acc[i] = _mm512_fmadd_ps(av[i], wv, acc[i]);
                        }
                    }
                }
                q += U;
            }
            let rest = k - full * 16;
            if rest > 0 {
                let mask = ((1u32 << rest) - 1) as __mmask16;
                let p = full * 16;
                let av: [__m512; M] =
                    std::array::from_fn(|i| _mm512_maskz_loadu_ps(mask, a.add(i * a_rs + p)));
                for r in 0..R {
                    let wv = _mm512_maskz_loadu_ps(mask, w.add(r * k + p));
                    for i in 0..M {
                        acc[0][r][i] = _mm512_fmadd_ps(av[i], wv, acc[0][r][i]);
                    }
                }
            }
            for r in 0..R {
                for i in 0..M {
                    let mut v = acc[0][r][i];
                    for set in acc.iter().skip(1) {
                        v = _mm512_add_ps(v, set[r][i]);
                    }
                    let s = _mm512_reduce_add_ps(v);
                    let d = c.add(i * c_rs + r);
                    *d = if accumulate { *d + s } else { s };
                }
            }
        }
    }

    mod avx2 {
        use super::*;
        use crate::ops::gemm::simd::kernel::lanes;

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn run(
            dims: (usize, usize, usize),
            a: (*const f32, usize),
            w: *const f32,
            c: (*mut f32, usize),
            accumulate: bool,
        ) {
            let (k, a_rs, c_rs) = (dims.1, a.1, c.1);
            drive(dims, a, w, c, 2, |r, mi, w, a, c| {
                let args = (k, w, a, a_rs, c, c_rs, accumulate);
                match (r, mi) {
                    (4, 2) => block::<4, 2, 1>(args),
                    (4, 1) => block::<4, 1, 2>(args),
                    (3, 2) => block::<3, 2, 1>(args),
                    (3, 1) => block::<3, 1, 2>(args),
                    (2, 2) => block::<2, 2, 2>(args),
                    (2, 1) => block::<2, 1, 4>(args),
                    (_, 2) => block::<1, 2, 4>(args),
                    _ => block::<1, 1, 4>(args),
                }
            });
        }

        /// Sum of the eight lanes.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }

        /// As the AVX-512 block, on 8-lane accumulators.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn block<const R: usize, const M: usize, const U: usize>(
            (k, w, a, a_rs, c, c_rs, accumulate): (
                usize,
                *const f32,
                *const f32,
                usize,
                *mut f32,
                usize,
                bool,
            ),
        ) {
            let mut acc = [[[_mm256_setzero_ps(); M]; R]; U];
            let full = k / 8;
            let mut q = 0;
            while q < full {
                for (u, acc) in acc.iter_mut().enumerate().take(full - q) {
                    let p = (q + u) * 8;
                    let av: [__m256; M] =
                        std::array::from_fn(|i| _mm256_loadu_ps(a.add(i * a_rs + p)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm256_loadu_ps(w.add(r * k + p));
                        for i in 0..M {
                            acc[i] = _mm256_fmadd_ps(av[i], wv, acc[i]);
                        }
                    }
                }
                q += U;
            }
            let rest = k - full * 8;
            if rest > 0 {
                let mask = lanes(rest);
                let p = full * 8;
                let av: [__m256; M] =
                    std::array::from_fn(|i| _mm256_maskload_ps(a.add(i * a_rs + p), mask));
                for r in 0..R {
                    let wv = _mm256_maskload_ps(w.add(r * k + p), mask);
                    for i in 0..M {
                        acc[0][r][i] = _mm256_fmadd_ps(av[i], wv, acc[0][r][i]);
                    }
                }
            }
            for r in 0..R {
                for i in 0..M {
                    let mut v = acc[0][r][i];
                    for set in acc.iter().skip(1) {
                        v = _mm256_add_ps(v, set[r][i]);
                    }
                    let s = hsum(v);
                    let d = c.add(i * c_rs + r);
                    *d = if accumulate { *d + s } else { s };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs equals a plain f64 product, on shapes with every remainder of
    /// rows (of `a` and of `w`) and of `k` against the vector widths, with and without
    /// accumulation, over two blocks of rows.
    #[test]
    fn each_kernel_equals_the_plain_product() {
        let val = |s: usize| ((s * 7919 + 13) % 101) as f32 / 50.0 - 1.0;
        for isa in KernelIsa::supported() {
            for m in [1, 2, 3, 4, 5, 7, 9] {
                for k in [1, 7, 8, 15, 16, 17, 33, 64, 100] {
                    let w: Vec<f32> = (0..20 * k).map(|s| val(s + 3)).collect();
                    let blocks = vec![2..9, 13..20];
                    let a_rs = k + 3;
                    let a: Vec<f32> = (0..m * a_rs).map(val).collect();
                    let rhs = RowsRhs::with_kernel(&w, k, blocks.clone(), isa);
                    let n = rhs.n();
                    for accumulate in [false, true] {
                        let dst_rs = n + 2;
                        let mut dst: Vec<f32> = (0..m * dst_rs).map(|s| val(s + 9)).collect();
                        let before = dst.clone();
                        rhs.matmul(&mut dst, dst_rs, accumulate, (&a, m, a_rs));
                        let rows: Vec<usize> = blocks.iter().flat_map(|b| b.clone()).collect();
                        for i in 0..m {
                            for (j, &row) in rows.iter().enumerate() {
                                let mut want: f64 = (0..k)
                                    .map(|p| a[i * a_rs + p] as f64 * w[row * k + p] as f64)
                                    .sum();
                                if accumulate {
                                    want += before[i * dst_rs + j] as f64;
                                }
                                let got = dst[i * dst_rs + j] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "{isa} m {m} k {k} acc {accumulate} ({i}, {j}): {got} vs {want}"
                                );
                            }
                            // Padding between rows untouched.
                            for j in n..dst_rs {
                                assert_eq!(dst[i * dst_rs + j], before[i * dst_rs + j]);
                            }
                        }
                    }
                }
            }
        }
    }
}

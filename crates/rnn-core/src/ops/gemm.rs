//! Matrix products on row-major slices, with explicit strides so per-step views and transposes
//! need no copies: faer's matmul for most products (about twice the `gemm` crate's rate, measured
//! on an AVX-512 CPU: 170 vs 80 GFLOP/s at 2048x1024x256, 2 threads); a cache-blocked f32 product
//! on this module's register-blocked kernel for the large weight gradients with a transposed left
//! side, where faer measured up to 2x slower on an AVX2 CPU; and [`PackedRhs`], the same kernel
//! (8x32 with AVX-512, 6x16 with AVX2+FMA, chosen at run time: [`KernelIsa`]) for the many small
//! products of a recurrence with one fixed right-hand matrix.

use super::math::Float;
use super::scratch;

/// A read-only strided matrix view: element (i, j) is at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    offset: usize,
    rs: usize,
    cs: usize,
    rows: usize,
    cols: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `(rows, cols)` matrix stored contiguously from `data[0]`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, rows, cols, cols, 1)
    }

    /// Any layout; panics in debug builds if a corner falls outside `data`.
    pub fn strided(
        data: &'a [T],
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        debug_assert!(
            rows == 0 || cols == 0 || offset + (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view out of bounds"
        );
        Self {
            data,
            offset,
            rs,
            cs,
            rows,
            cols,
        }
    }

    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            rows: self.cols,
            cols: self.rows,
            ..self
        }
    }
}

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
    if blocked_applies(&a, &b) {
        // SAFETY: T is f32 (checked by `blocked_applies`), so the cast of `dst` is an identity.
        unsafe {
            let dst = std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len());
            blocked_f32(
                KernelIsa::detected(),
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

/// Whether [`matmul`] runs `a · b` with [`blocked_f32`] (`m`, `n`, `k` > 0).
fn blocked_applies<T: Float>(a: &MatRef<T>, b: &MatRef<T>) -> bool {
    let isa = KernelIsa::detected();
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && isa != KernelIsa::Portable
        && a.rs == 1
        && a.cs > 1
        && a.rows >= BLOCKED_MIN_M
        && b.cols >= isa.nr()
        && a.rows * a.cols * b.cols >= BLOCKED_MIN_MACS
}

/// `v` viewed as f32; `T` must be f32.
fn cast<T: Float>(v: MatRef<'_, T>) -> MatRef<'_, f32> {
    MatRef {
        data: f32_view(v.data).expect("T is f32"),
        offset: v.offset,
        rs: v.rs,
        cs: v.cs,
        rows: v.rows,
        cols: v.cols,
    }
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
    let merged = m > 0
        && k > 0
        && parts.len() > 1
        && parts
            .iter()
            .all(|(_, _, b)| b.rows == k && blocked_applies(&a, b));
    if !merged {
        for (dst, rs, b) in parts.iter_mut() {
            matmul(dst, 0, *rs, false, a, *b, may_thread);
        }
        return;
    }
    for (dst, rs, b) in parts.iter() {
        assert!(
            (m - 1) * rs + b.cols <= dst.len(),
            "matmul: destination out of bounds"
        );
    }
    let mut views: Vec<Part> = parts
        .iter_mut()
        .map(|(dst, rs, b)| {
            // SAFETY: T is f32 (checked by `blocked_applies`), so the cast is an identity.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len()) };
            (dst, 0, *rs, cast(*b))
        })
        .collect();
    blocked_f32_parts(
        KernelIsa::detected(),
        &mut views,
        false,
        cast(a),
        may_thread,
    );
}

/// [`matmul`] through faer (any dtype); `m`, `n`, `k` > 0 and `dst` bounds checked by the caller.
fn faer_matmul<T: Float>(
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
    let par = if parallel && rayon::current_num_threads() > 1 {
        faer::Par::rayon(rayon::current_num_threads())
    } else {
        faer::Par::Seq
    };
    // SAFETY: every index touched is inside the slices: checked by the assert above for `dst`
    // and by `MatRef::strided`'s bounds (debug) for `a` and `b`, whose views are built by this
    // crate's kernels from the shapes they allocate. `dst` does not alias `a` or `b` (it is a
    // distinct `&mut` borrow).
    unsafe {
        let dst = faer::MatMut::from_raw_parts_mut(
            dst.as_mut_ptr().add(dst_offset),
            m,
            n,
            dst_rs as isize,
            1,
        );
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
}

/// Rows of `a` packed per block of the cache-blocked f32 product: `MC x KC` floats (96 KiB) stay
/// in L2 while every column panel of `b` passes over them.
const MC: usize = 96;

/// The cache-blocked f32 product applies to a column-major (transposed) `a` -- the `x^T · dG`
/// weight gradients over all steps, where faer's kernels measured ~2x slower on this layout --
/// from this many rows of `a` ...
const BLOCKED_MIN_M: usize = 32;
/// ... and this many multiply-adds. Elsewhere (row-major `a`, smaller products) faer measured
/// as fast or faster, so those stay on faer.
const BLOCKED_MIN_MACS: usize = 1 << 26;

/// `dst [+]= a · b` for f32 with `isa`'s register-blocked kernel (panics for `Portable` or one
/// this CPU lacks), BLIS-style: `b` packed once into column panels (in parallel), then blocks of
/// `MC` rows of `a` packed per `KC` steps of the inner dimension, spread over rayon's threads
/// when `may_thread` and the product is large. Used for
/// the weight gradients over all steps (`a` a transpose): measured 1.0-1.9x faster than faer there
/// on the AVX2 machine (see [`BLOCKED_MIN_MACS`]); any layout of `a` and `b` is accepted.
#[allow(clippy::too_many_arguments)]
fn blocked_f32(
    isa: KernelIsa,
    dst: &mut [f32],
    dst_offset: usize,
    dst_rs: usize,
    accumulate: bool,
    a: MatRef<f32>,
    b: MatRef<f32>,
    may_thread: bool,
) {
    blocked_f32_parts(
        isa,
        &mut [(dst, dst_offset, dst_rs, b)],
        accumulate,
        a,
        may_thread,
    )
}

/// One right-hand side of [`blocked_f32_parts`] with its destination: `(dst, dst_offset,
/// dst_rs, b)`, `dst` as in [`matmul`].
type Part<'a, 'b> = (&'a mut [f32], usize, usize, MatRef<'b, f32>);

/// [`blocked_f32`] for one `a` times several `b`s at once (`a · [b_1 | b_2 ..]` with each part's
/// columns in its own destination): every block of `a` is packed once for all of them, as for one
/// product of their total width. The weight gradients `dG^T x` and `dG^T h_prev` share `dG^T`.
fn blocked_f32_parts(
    isa: KernelIsa,
    parts: &mut [Part],
    accumulate: bool,
    a: MatRef<f32>,
    may_thread: bool,
) {
    use rayon::prelude::*;
    isa.assert_simd();
    let (m, k) = (a.rows, a.cols);
    let (nr, mr) = (isa.nr(), isa.mr());
    let n_total: usize = parts.iter().map(|p| p.3.cols).sum();
    let threads = if may_thread && m * n_total * k >= PARALLEL_MIN_MACS {
        rayon::current_num_threads()
    } else {
        1
    };
    // Row blocks of at most MC rows, a multiple of MR, as many per thread as possible.
    let mc_max = {
        let per = m.div_ceil(MC).next_multiple_of(threads);
        m.div_ceil(per).next_multiple_of(mr)
    };
    // Every part's panels, one after the other: (part, panel index within the part).
    let panel_of: Vec<(usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(j, p)| (0..p.3.cols.div_ceil(nr)).map(move |q| (j, q)))
        .collect();
    // Every element is written by `pack_b` (zero past each part's last column).
    let mut panels = scratch::take(panel_of.len() * k * nr);
    let pack_b = |(i, panel): (usize, &mut [f32])| {
        let (j, q) = panel_of[i];
        let b = parts[j].3;
        let cols = nr.min(b.cols - q * nr);
        let first = b.offset + q * nr * b.cs;
        pack_panels(
            panel,
            nr,
            MatRef::strided(b.data, first, k, cols, b.rs, b.cs),
        );
    };
    if threads > 1 {
        panels.par_chunks_mut(k * nr).enumerate().for_each(pack_b);
    } else {
        panels.chunks_mut(k * nr).enumerate().for_each(pack_b);
    }
    // Per part: its destination's first row, row stride, width and first panel.
    let mut first_panel = 0;
    let outs: Vec<(SendPtr, usize, usize, usize)> = parts
        .iter_mut()
        .map(|(dst, offset, rs, b)| {
            // SAFETY: `offset` is inside `dst` (bounds asserted by `matmul`).
            let base = SendPtr(unsafe { dst.as_mut_ptr().add(*offset) });
            let out = (base, *rs, b.cols, first_panel);
            first_panel += b.cols.div_ceil(nr);
            out
        })
        .collect();
    let kc_max = kernel::KC.min(k);
    // One block of MC rows: pack a's rows per KC steps, run every panel of every part over them.
    let row_block = |apack: &mut Vec<f32>, i0: usize| {
        let mc = mc_max.min(m - i0);
        let blocks = mc.div_ceil(mr);
        for p0 in (0..k).step_by(kernel::KC) {
            let kc = kernel::KC.min(k - p0);
            // Micro-panels of MR rows: element (i, p) at [blk][p][i % MR], zero-padded rows:
            // the column panels of this block's transpose.
            let len = blocks * kc * mr;
            if apack.len() < len {
                apack.resize(len, 0.0);
            }
            let block =
                MatRef::strided(a.data, a.offset + i0 * a.rs + p0 * a.cs, mc, kc, a.rs, a.cs);
            pack_panels(&mut apack[..len], mr, block.t());
            for (base, dst_rs, n, first) in &outs {
                // SAFETY: `apack` holds `blocks` micro-panels of `kc` steps; `panels` holds this
                // part's panels of `k` rows from `first`; the destination rows `i0..i0 + mc` of
                // the part are inside its slice (checked by `matmul`'s bounds assert), and no
                // other block writes them; `isa` runs here (asserted above).
                unsafe {
                    kernel::run_packed(
                        isa,
                        (mc, kc, *n),
                        apack.as_ptr(),
                        &panels[(first * k + p0) * nr..],
                        k,
                        (base.0.add(i0 * dst_rs), *dst_rs),
                        accumulate || p0 > 0,
                    );
                }
            }
        }
    };
    let starts: Vec<usize> = (0..m).step_by(mc_max).collect();
    let run = |apack: &mut Vec<f32>, &i0: &usize| row_block(apack, i0);
    if threads > 1 && starts.len() > 1 {
        starts
            .par_iter()
            .for_each_init(|| Vec::with_capacity(mc_max * kc_max), run);
    } else {
        let mut apack = Vec::with_capacity(mc_max * kc_max);
        starts.iter().for_each(|i0| run(&mut apack, i0));
    }
    scratch::give(panels);
}

/// `data` as `&[f32]` when `T` is `f32`.
fn f32_view<T: Float>(data: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same TypeId), so the cast is an identity.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, data.len()) })
}

/// Fills `dst` with runs of `N` floats, run `p` read from `src[start + p * stride..]`: the packing
/// copies with the run length a constant (`copy_from_slice` of a run-time length of a few floats
/// is a `memmove` call per run, measured at about 5% of an LSTM training step).
fn copy_rows<const N: usize>(dst: &mut [f32], src: &[f32], start: usize, stride: usize) {
    for (p, d) in dst.chunks_exact_mut(N).enumerate() {
        let s: &[f32; N] = src[start + p * stride..][..N].try_into().expect("N floats");
        let d: &mut [f32; N] = d.try_into().expect("N floats");
        *d = *s;
    }
}

/// [`copy_rows`] for a run length known only at run time.
fn copy_rows_dyn(dst: &mut [f32], n: usize, src: &[f32], start: usize, stride: usize) {
    for (p, d) in dst.chunks_exact_mut(n).enumerate() {
        d.copy_from_slice(&src[start + p * stride..][..n]);
    }
}

/// Packs `b (k, n)` into `ceil(n / nr)` column panels of `k` rows of `nr` floats (element
/// `(p, j)` at `dst[(j / nr) * k * nr + p * nr + j % nr]`, zero past column `n`): the layout of
/// [`PackedRhs`]'s panels, and with `b = aᵀ` that of the kernel's row micro-panels of `a`.
/// `dst` must hold exactly that many floats; every one is written.
fn pack_panels(dst: &mut [f32], nr: usize, b: MatRef<f32>) {
    let (k, n) = (b.rows, b.cols);
    assert_eq!(
        dst.len(),
        n.div_ceil(nr) * k * nr,
        "pack_panels: destination size"
    );
    for (q, panel) in dst.chunks_exact_mut(k * nr).enumerate() {
        let cols = nr.min(n - q * nr);
        let first = b.offset + q * nr * b.cs;
        if b.cs == 1 && cols == nr {
            // Each row of the panel is a contiguous run of `b`.
            match nr {
                6 => copy_rows::<6>(panel, b.data, first, b.rs),
                8 => copy_rows::<8>(panel, b.data, first, b.rs),
                16 => copy_rows::<16>(panel, b.data, first, b.rs),
                32 => copy_rows::<32>(panel, b.data, first, b.rs),
                _ => copy_rows_dyn(panel, nr, b.data, first, b.rs),
            }
        } else if b.rs == 1 {
            // Each column of the panel is a contiguous run of `b` (a transpose): interleave them.
            match nr {
                6 => interleave::<6>(panel, b.data, first, b.cs, cols, k),
                8 => interleave::<8>(panel, b.data, first, b.cs, cols, k),
                16 => interleave::<16>(panel, b.data, first, b.cs, cols, k),
                32 => interleave::<32>(panel, b.data, first, b.cs, cols, k),
                _ => interleave_dyn(panel, nr, b.data, first, b.cs, cols, k),
            }
        } else {
            for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if j < cols {
                        b.data[first + p * b.rs + j * b.cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// `dst[p * N + j] = src[start + j * stride + p]` for `p < k` and `j < cols`, zero for
/// `cols <= j < N`: `cols` contiguous runs of `k` floats interleaved (a transpose). With `N` a
/// constant the runs' positions stay in registers and the loop has no bounds checks.
fn interleave<const N: usize>(
    dst: &mut [f32],
    src: &[f32],
    start: usize,
    stride: usize,
    cols: usize,
    k: usize,
) {
    if cols < N {
        // A remainder block (e.g. the last 4 rows of a 16-row batch chunk in 6-row blocks).
        let runs: [&[f32]; N] = std::array::from_fn(|j| {
            if j < cols {
                &src[start + j * stride..][..k]
            } else {
                &[]
            }
        });
        for (p, d) in dst[..k * N].chunks_exact_mut(N).enumerate() {
            for (j, v) in d.iter_mut().enumerate() {
                *v = if j < cols { runs[j][p] } else { 0.0 };
            }
        }
        return;
    }
    let runs: [&[f32]; N] = std::array::from_fn(|j| &src[start + j * stride..][..k]);
    for (p, d) in dst[..k * N].chunks_exact_mut(N).enumerate() {
        let d: &mut [f32; N] = d.try_into().expect("N floats");
        for j in 0..N {
            d[j] = runs[j][p];
        }
    }
}

/// [`interleave`] with a run-time width `n` (and any `cols <= n`).
fn interleave_dyn(
    dst: &mut [f32],
    n: usize,
    src: &[f32],
    start: usize,
    stride: usize,
    cols: usize,
    k: usize,
) {
    for (j, run) in (0..cols).map(|j| (j, &src[start + j * stride..][..k])) {
        for (p, v) in run.iter().enumerate() {
            dst[p * n + j] = *v;
        }
    }
    for p in 0..k {
        dst[p * n + cols..][..n - cols].fill(0.0);
    }
}

/// A destination pointer shared by the threads of [`blocked_f32`], which write disjoint rows.
struct SendPtr(*mut f32);
// SAFETY: each thread writes only its own row block through the pointer.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Below this many multiply-adds a product runs on one thread (threading costs more than it saves);
/// measured on this project's 2-core machines with faer 0.24. At 1 << 21 the B=1 T=100 input
/// projection (3.3M) was threaded, and the LSTM's inference was ~5% slower in each of five
/// interleaved rounds (AMD AVX2 machine, 2026-12-03).
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// [`PackedRhs::matmul`] copies `a` into micro-panels from this inner dimension on (and at
/// least one full block of rows); below it the copy costs about what it saves.
const PACK_A_MIN_K: usize = 128;

thread_local! {
    /// Per-thread scratch for [`PackedRhs::matmul`]'s packed copy of `a` (reused every step).
    static PACKED_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Products with at most this many rows in `a` take the axpy path.
const SMALL_M: usize = 4;

/// A fixed right-hand matrix `b (k, n)` of many small products `a (m, k) · b` (the recurrent
/// weights of every step), packed once into column panels for a register-blocked f32 kernel
/// (8x32 with AVX-512, 6x16 with AVX2+FMA). faer repacks `b` on every call and is tuned for
/// large `m`; with `m` = a batch chunk (1-32 rows) and `b` reused for every step, the packed kernel keeps the accumulators in
/// registers and reads each panel from cache. Other dtypes or CPUs without AVX2+FMA use
/// [`matmul`] on the original view, as does every CPU when the environment variable
/// `RNN_PACKED_KERNEL=off` is set (for comparing the two in benchmarks): see [`KernelIsa`].
pub(crate) struct PackedRhs<T> {
    k: usize,
    n: usize,
    /// The kernel `panels` are packed for; `Portable` when `row_major` is used instead.
    isa: KernelIsa,
    /// A contiguous row-major copy of `b` for [`matmul`] when the kernel does not apply.
    row_major: Vec<T>,
    /// `ceil(n / NR)` panels, each `k` rows of `NR` values (zero beyond `n`); empty when unused.
    panels: Vec<f32>,
}

impl<T> Drop for PackedRhs<T> {
    fn drop(&mut self) {
        scratch::give(std::mem::take(&mut self.panels));
    }
}

impl<T: Float> PackedRhs<T> {
    /// Whether [`PackedRhs::new`] packs for the register-blocked kernel (f32 on a CPU with one).
    pub fn uses_kernel() -> bool {
        Self::kernel_for(KernelIsa::detected()) != KernelIsa::Portable
    }

    /// The kernel that [`PackedRhs::with_kernel`] with `isa` runs: `isa` for f32, else
    /// `Portable` (the kernels are f32 only).
    fn kernel_for(isa: KernelIsa) -> KernelIsa {
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
            isa
        } else {
            KernelIsa::Portable
        }
    }

    /// Packs `b` for the fast kernel (f32 on a CPU with AVX-512 or AVX2+FMA), else copies it
    /// row-major.
    pub fn new(b: MatRef<T>) -> Self {
        Self::with_kernel(b, KernelIsa::detected())
    }

    /// [`PackedRhs::new`] for `isa`'s kernel instead of the detected one (f32; other dtypes
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
            // kernel then reads one contiguous stream instead of MR strided rows, measured
            // ~1.3x faster for a batch chunk of 32 rows times 1024 x 4096 recurrent weights.
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

/// Which register-blocked f32 kernel runs [`PackedRhs`] and [`blocked_f32`]. A process runs
/// [`KernelIsa::detected`]; tests name each one [`KernelIsa::supported`] lists to check it
/// against the portable path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum KernelIsa {
    /// 8 rows x 32 columns: two 16-lane registers per row (x86_64 with AVX-512F).
    Avx512,
    /// 6 rows x 16 columns: two 8-lane registers per row, 12 accumulators of 16 registers
    /// (x86_64 with AVX2 and FMA).
    Avx2,
    /// No register-blocked kernel: the products run on [`matmul`] (faer, or the axpy path for a
    /// few rows) instead. Other architectures, x86_64 CPUs without AVX2+FMA, and any CPU with
    /// `RNN_PACKED_KERNEL=off`.
    Portable,
}

impl KernelIsa {
    /// The kernel this process runs, decided once: the fastest the CPU supports, or `Portable`
    /// when the environment variable `RNN_PACKED_KERNEL` is `off` (for comparing the two in
    /// benchmarks; any other value is ignored).
    pub fn detected() -> Self {
        static ISA: std::sync::OnceLock<KernelIsa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| Self::choose(std::env::var_os("RNN_PACKED_KERNEL").as_deref()))
    }

    /// The kernel for a value of `RNN_PACKED_KERNEL` (`None` when unset): `Portable` for `off`,
    /// else the fastest this CPU runs.
    fn choose(env: Option<&std::ffi::OsStr>) -> Self {
        if env.is_some_and(|v| v == "off") {
            Self::Portable
        } else {
            Self::supported()[0]
        }
    }

    /// Every kernel this CPU runs, fastest first; `Portable` (always) last.
    pub fn supported() -> Vec<Self> {
        [Self::Avx512, Self::Avx2, Self::Portable]
            .into_iter()
            .filter(|isa| isa.runs_here())
            .collect()
    }

    /// Whether this CPU has the instructions of the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 | Self::Avx2 => false,
            Self::Portable => true,
        }
    }

    /// Columns per packed panel of the kernel.
    fn nr(self) -> usize {
        match self {
            Self::Avx512 => 32,
            _ => 16,
        }
    }

    /// Rows per register block of the kernel.
    fn mr(self) -> usize {
        match self {
            Self::Avx512 => 8,
            _ => 6,
        }
    }

    /// Panics unless `self` is a register-blocked kernel this CPU runs: the safety condition of
    /// `kernel::run` and `kernel::run_packed`.
    fn assert_simd(self) {
        assert!(
            self != Self::Portable && self.runs_here(),
            "the {self:?} kernel does not run on this CPU"
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::KernelIsa;
    use std::arch::x86_64::*;

    /// Steps of the inner dimension per block: a panel's block (KC x NR floats, 32 KiB with
    /// AVX-512, 16 KiB with AVX2) stays in L1 while the row blocks of `a` pass over it.
    pub const KC: usize = 256;

    /// `c (m, n) [+]= a · b` with `isa`'s kernel over `kc` steps of the inner dimension, with `a`
    /// packed in micro-panels of `mr` rows (element (i, p) at
    /// `a[(i / mr) * kc * mr + p * mr + i % mr]`) and `panels` starting at the block's first
    /// step, `k` rows apart (`mr`, `nr` of `isa`).
    ///
    /// # Safety
    /// `isa` is a SIMD kernel this CPU runs ([`KernelIsa::runs_here`], not `Portable`); `a`
    /// holds `ceil(m / mr)` micro-panels of `kc` steps; `panels` holds `ceil(n / nr)` panels
    /// `k * nr` apart, each with `kc` rows from its start; `c` covers `(m, n)` with row stride
    /// `c_rs`.
    pub unsafe fn run_packed(
        isa: KernelIsa,
        (m, kc, n): (usize, usize, usize),
        a: *const f32,
        panels: &[f32],
        k: usize,
        c: (*mut f32, usize),
        accumulate: bool,
    ) {
        match isa {
            KernelIsa::Avx512 => avx512::run_packed((m, kc, n), a, panels, k, c, accumulate),
            KernelIsa::Avx2 => avx2::run_packed((m, kc, n), a, panels, k, c, accumulate),
            KernelIsa::Portable => unreachable!("the portable path has no register kernel"),
        }
    }

    /// The loops of [`run_packed`]: panels of NR columns, micro-panels of MR rows.
    #[inline(always)]
    unsafe fn drive_packed<const NR: usize, const MR: usize>(
        (m, kc, n): (usize, usize, usize),
        a: *const f32,
        panels: &[f32],
        k: usize,
        (c, c_rs): (*mut f32, usize),
        accumulate: bool,
        block: impl Fn(usize, Args),
    ) {
        for q in 0..n.div_ceil(NR) {
            let panel = panels.as_ptr().add(q * k * NR);
            let cols = NR.min(n - q * NR);
            let mut i = 0;
            while i < m {
                let rows = MR.min(m - i);
                let a_blk = a.add(i * kc);
                let c_blk = c.add(i * c_rs + q * NR);
                block(
                    rows,
                    (kc, a_blk, 1, MR, panel, c_blk, c_rs, accumulate, cols),
                );
                i += rows;
            }
        }
    }

    /// `c (m, n) [+]= a · b` with `isa`'s kernel (`mr`, `nr` of `isa`).
    ///
    /// # Safety
    /// `isa` is a SIMD kernel this CPU runs ([`KernelIsa::runs_here`], not `Portable`); `a`
    /// covers `(m, k)`: element `(i, p)` of a block of `mr` rows starting at row `i0` is at
    /// `(i0 / mr) * a_bs + (i - i0) * a_rs + p * a_cs` (a plain strided view has
    /// `a_bs = mr * a_rs`; packed micro-panels have `a_rs = 1`, `a_cs = mr`, `a_bs = k * mr`);
    /// `c` covers `(m, n)` with row stride `c_rs`; `panels` holds `ceil(n / nr)` packed panels
    /// of `k` rows.
    pub unsafe fn run(
        isa: KernelIsa,
        dims: (usize, usize, usize),
        a: (*const f32, usize, usize, usize),
        panels: &[f32],
        c: (*mut f32, usize),
        accumulate: bool,
    ) {
        match isa {
            KernelIsa::Avx512 => avx512::run(dims, a, panels, c, accumulate),
            KernelIsa::Avx2 => avx2::run(dims, a, panels, c, accumulate),
            KernelIsa::Portable => unreachable!("the portable path has no register kernel"),
        }
    }

    type Args = (
        usize,
        *const f32,
        usize,
        usize,
        *const f32,
        *mut f32,
        usize,
        bool,
        usize,
    );

    /// The loops around the register block shared by both kernels: panels of NR columns, blocks
    /// of KC steps of k, row blocks of MR rows; `block(rows, args)` does one register block.
    /// Panels outermost, so `panels` is read front to back once per call: with a large `b` (4096
    /// columns of 1024 rows, 16 MiB) that streams from L3 in prefetch order and measured ~1.4x
    /// faster than walking every panel per block of k (which jumps 64 KiB between reads).
    #[inline(always)]
    unsafe fn drive<const NR: usize, const MR: usize>(
        (m, k, n): (usize, usize, usize),
        (a, a_rs, a_cs, a_bs): (*const f32, usize, usize, usize),
        panels: &[f32],
        (c, c_rs): (*mut f32, usize),
        accumulate: bool,
        block: impl Fn(usize, Args),
    ) {
        for q in 0..n.div_ceil(NR) {
            let cols = NR.min(n - q * NR);
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                let acc = accumulate || p0 > 0;
                let panel = panels.as_ptr().add(q * k * NR + p0 * NR);
                let mut i = 0;
                while i < m {
                    let rows = MR.min(m - i);
                    let a_blk = a.add(i / MR * a_bs + p0 * a_cs);
                    let c_blk = c.add(i * c_rs + q * NR);
                    block(rows, (kc, a_blk, a_rs, a_cs, panel, c_blk, c_rs, acc, cols));
                    i += rows;
                }
            }
        }
    }

    mod avx512 {
        use super::*;
        const NR: usize = 32;
        const MR: usize = 8;

        #[target_feature(enable = "avx512f")]
        pub unsafe fn run(
            dims: (usize, usize, usize),
            a: (*const f32, usize, usize, usize),
            panels: &[f32],
            c: (*mut f32, usize),
            accumulate: bool,
        ) {
            drive::<NR, MR>(dims, a, panels, c, accumulate, |rows, args| {
                dispatch(rows, args)
            });
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn run_packed(
            dims: (usize, usize, usize),
            a: *const f32,
            panels: &[f32],
            k: usize,
            c: (*mut f32, usize),
            accumulate: bool,
        ) {
            drive_packed::<NR, MR>(dims, a, panels, k, c, accumulate, |rows, args| {
                dispatch(rows, args)
            });
        }

        /// The register block for `rows` rows.
        #[inline(always)]
        unsafe fn dispatch(rows: usize, args: Args) {
            match rows {
                8 => block::<8>(args),
                7 => block::<7>(args),
                6 => block::<6>(args),
                5 => block::<5>(args),
                4 => block::<4>(args),
                3 => block::<3>(args),
                2 => block::<2>(args),
                _ => block::<1>(args),
            }
        }

        /// `M` rows x up to `NR` columns of `c [+]= a · panel`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn block<const M: usize>(
            (k, a, a_rs, a_cs, panel, c, c_rs, accumulate, cols): Args,
        ) {
            let mut acc0 = [_mm512_setzero_ps(); M];
            let mut acc1 = [_mm512_setzero_ps(); M];
            for p in 0..k {
                let b0 = _mm512_loadu_ps(panel.add(p * NR));
                let b1 = _mm512_loadu_ps(panel.add(p * NR + 16));
                for i in 0..M {
                    let av = _mm512_set1_ps(*a.add(i * a_rs + p * a_cs));
                    acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
                    acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
                }
            }
            let mask = |w: usize| -> __mmask16 {
                if w >= 16 {
                    0xffff
                } else {
                    ((1u32 << w) - 1) as u16
                }
            };
            let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
            for i in 0..M {
                let row = c.add(i * c_rs);
                // Masked-off lanes are neither read nor written (no fault past the row's end).
                let hi = row.wrapping_add(16);
                let (mut v0, mut v1) = (acc0[i], acc1[i]);
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, hi));
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                _mm512_mask_storeu_ps(hi, m1, v1);
            }
        }
    }

    mod avx2 {
        use super::*;
        const NR: usize = 16;
        const MR: usize = 6;

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn run(
            dims: (usize, usize, usize),
            a: (*const f32, usize, usize, usize),
            panels: &[f32],
            c: (*mut f32, usize),
            accumulate: bool,
        ) {
            if a.1 == 1 && a.2 == MR {
                // `a` in micro-panels: the strides are constants of the block.
                drive::<NR, MR>(dims, a, panels, c, accumulate, |rows, args| {
                    dispatch::<true>(rows, args)
                });
            } else {
                drive::<NR, MR>(dims, a, panels, c, accumulate, |rows, args| {
                    dispatch::<false>(rows, args)
                });
            }
        }

        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn run_packed(
            dims: (usize, usize, usize),
            a: *const f32,
            panels: &[f32],
            k: usize,
            c: (*mut f32, usize),
            accumulate: bool,
        ) {
            drive_packed::<NR, MR>(dims, a, panels, k, c, accumulate, |rows, args| {
                dispatch::<true>(rows, args)
            });
        }

        /// The register block for `rows` rows. Blocks of 1-3 rows keep 4, 2 or 2 sets of
        /// accumulators (steps of k alternate between them) so that at least 8 independent FMA
        /// chains hide the FMA latency; a single row with one set measured 27 GFLOP/s against
        /// 90 for six rows.
        #[inline(always)]
        unsafe fn dispatch<const PACKED: bool>(rows: usize, args: Args) {
            match rows {
                6 => block::<6, 1, PACKED>(args),
                5 => block::<5, 1, PACKED>(args),
                4 => block::<4, 1, PACKED>(args),
                3 => block::<3, 2, PACKED>(args),
                2 => block::<2, 2, PACKED>(args),
                _ => block::<1, 4, PACKED>(args),
            }
        }

        /// Lane mask of the first `w` (at most 8) lanes, for maskload/maskstore.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn lanes(w: usize) -> __m256i {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(w.min(8) as i32), idx)
        }

        /// `M` rows x up to `NR` columns of `c [+]= a · panel`, with `U` sets of accumulators
        /// (step `p` of k adds into set `p % U`) and, when `PACKED`, `a` in a micro-panel
        /// (`a_rs = 1`, `a_cs = MR`, so every load is at a constant offset of one pointer).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn block<const M: usize, const U: usize, const PACKED: bool>(
            (k, a, a_rs, a_cs, panel, c, c_rs, accumulate, cols): Args,
        ) {
            let (a_rs, a_cs) = if PACKED { (1, MR) } else { (a_rs, a_cs) };
            let mut sets0 = [[_mm256_setzero_ps(); M]; U];
            let mut sets1 = [[_mm256_setzero_ps(); M]; U];
            // Steps of k in groups of 4 (U divides 4), then the rest into set 0. Not with six
            // strided rows: their pointers then no longer fit in registers (measured 92 -> 65
            // GFLOP/s for 6 x 64 x 512).
            let group = if PACKED || U > 1 { 4 } else { 1 };
            // Step `q` of k into accumulator set `set`.
            macro_rules! step {
                ($q:expr, $set:expr) => {{
                    let (q, acc0, acc1) = ($q, &mut sets0[$set], &mut sets1[$set]);
                    let b0 = _mm256_loadu_ps(panel.add(q * NR));
                    let b1 = _mm256_loadu_ps(panel.add(q * NR + 8));
                    for i in 0..M {
                        let av = _mm256_broadcast_ss(&*a.add(i * a_rs + q * a_cs));
                        acc0[i] = _mm256_fmadd_ps(av, b0, acc0[i]);
                        acc1[i] = _mm256_fmadd_ps(av, b1, acc1[i]);
                    }
                }};
            }
            let mut p = 0;
            while p + group <= k {
                for s in 0..group {
                    step!(p + s, s % U);
                }
                p += group;
            }
            while p < k {
                step!(p, 0);
                p += 1;
            }
            let (mut acc0, mut acc1) = (sets0[0], sets1[0]);
            for s in 1..U {
                for i in 0..M {
                    acc0[i] = _mm256_add_ps(acc0[i], sets0[s][i]);
                    acc1[i] = _mm256_add_ps(acc1[i], sets1[s][i]);
                }
            }
            if cols == NR {
                for i in 0..M {
                    let row = c.add(i * c_rs);
                    let (mut v0, mut v1) = (acc0[i], acc1[i]);
                    if accumulate {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                    }
                    _mm256_storeu_ps(row, v0);
                    _mm256_storeu_ps(row.add(8), v1);
                }
                return;
            }
            let (m0, m1) = (lanes(cols), lanes(cols.saturating_sub(8)));
            for i in 0..M {
                let row = c.add(i * c_rs);
                // Masked-off lanes are neither read nor written (no fault past the row's end).
                let hi = row.wrapping_add(8);
                let (mut v0, mut v1) = (acc0[i], acc1[i]);
                if accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(row, m0));
                    v1 = _mm256_add_ps(v1, _mm256_maskload_ps(hi, m1));
                }
                _mm256_maskstore_ps(row, m0, v0);
                _mm256_maskstore_ps(hi, m1, v1);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::KernelIsa;
    pub const KC: usize = 256;
    pub unsafe fn run_packed(
        _: KernelIsa,
        _: (usize, usize, usize),
        _: *const f32,
        _: &[f32],
        _: usize,
        _: (*mut f32, usize),
        _: bool,
    ) {
        unreachable!("the packed kernel is only built on x86_64")
    }
    pub unsafe fn run(
        _: KernelIsa,
        _: (usize, usize, usize),
        _: (*const f32, usize, usize, usize),
        _: &[f32],
        _: (*mut f32, usize),
        _: bool,
    ) {
        unreachable!("the packed kernel is only built on x86_64")
    }
}

#[cfg(test)]
mod isa_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache-blocked f32 product equals the naive one: remainders in `m` (not a multiple of
    /// MR or MC) and `n` (not a multiple of NR), `k` over several KC blocks, row blocks on both
    /// threads, row- and column-major `a`, strided `b`, accumulate, a destination with a row
    /// stride and offset. Called directly, so it runs whatever `matmul`'s routing thresholds, with
    /// every register kernel the CPU has (`isa_tests` checks that they are all exercised).
    #[test]
    fn blocked_f32_equals_naive_product() {
        let shapes = [
            (7, 5, 3),
            (37, 300, 21),
            (200, 530, 50),
            (97, 64, 17),
            (300, 257, 40),
        ];
        for &(m, k, n) in &shapes {
            for &(trans_a, trans_b, accumulate) in &[
                (false, false, false),
                (true, false, false),
                (true, true, true),
                (false, true, true),
            ] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02)
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 53 % 89) as f32 - 44.0) * 0.03)
                    .collect();
                // The same logical matrices, stored row- or column-major.
                let at: Vec<f32> = (0..m * k).map(|i| a[(i % m) * k + i / m]).collect();
                let bt: Vec<f32> = (0..k * n).map(|i| b[(i % k) * n + i / k]).collect();
                let av = if trans_a {
                    MatRef::row_major(&at, k, m).t()
                } else {
                    MatRef::row_major(&a, m, k)
                };
                let bv = if trans_b {
                    MatRef::row_major(&bt, n, k).t()
                } else {
                    MatRef::row_major(&b, k, n)
                };
                let (offset, rs) = (3, n + 5);
                let init: Vec<f32> = (0..offset + m * rs).map(|i| (i % 7) as f32).collect();
                let af: Vec<f64> = a.iter().map(|&v| v as f64).collect();
                let bf: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                let want = naive(&af, &bf, m, k, n);
                for isa in KernelIsa::supported() {
                    if isa == KernelIsa::Portable {
                        continue;
                    }
                    let mut dst = init.clone();
                    blocked_f32(isa, &mut dst, offset, rs, accumulate, av, bv, true);
                    for (idx, (&got, &old)) in dst.iter().zip(&init).enumerate() {
                        let (i, j) = (
                            (idx.wrapping_sub(offset)) / rs,
                            (idx.wrapping_sub(offset)) % rs,
                        );
                        let expect = if idx >= offset && j < n {
                            want[i * n + j] + if accumulate { old as f64 } else { 0.0 }
                        } else {
                            old as f64 // padding between rows is untouched
                        };
                        assert!(
                            (got as f64 - expect).abs() <= 1e-4 * (1.0 + expect.abs()),
                            "{isa:?} ({m},{k},{n}) trans_a {trans_a} trans_b {trans_b} acc \
                         {accumulate}: dst[{idx}] = {got}, want {expect}"
                        );
                    }
                }
            }
        }
    }

    /// One left-hand side times several right-hand sides: each destination equals the naive
    /// product, on the merged blocked path (a transposed `a`, large enough, one part narrower than
    /// a panel multiple, one strided `b`) and on the per-part fallback (f64; a row-major `a`), with
    /// stale values in the destinations overwritten and the padding between rows untouched.
    #[test]
    fn shared_lhs_products_equal_one_product_per_part() {
        fn check<T: Float>(m: usize, k: usize, widths: &[usize], transposed_a: bool) {
            let a: Vec<f64> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) * 0.02)
                .collect();
            let at: Vec<T> = (0..m * k)
                .map(|i| T::from(a[(i % m) * k + i / m]).unwrap())
                .collect();
            let ar: Vec<T> = a.iter().map(|&v| T::from(v).unwrap()).collect();
            let av = if transposed_a {
                MatRef::row_major(&at, k, m).t()
            } else {
                MatRef::row_major(&ar, m, k)
            };
            let bs: Vec<Vec<f64>> = widths
                .iter()
                .enumerate()
                .map(|(j, &n)| {
                    (0..k * n)
                        .map(|i| ((i * (53 + j) % 89) as f64 - 44.0) * 0.03)
                        .collect()
                })
                .collect();
            // The second part's `b` is read through a column stride (stored transposed).
            let stored: Vec<Vec<T>> = bs
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(j, (b, &n))| {
                    (0..k * n)
                        .map(|i| {
                            T::from(if j == 1 { b[(i % k) * n + i / k] } else { b[i] }).unwrap()
                        })
                        .collect()
                })
                .collect();
            let views: Vec<MatRef<T>> = stored
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(j, (b, &n))| {
                    if j == 1 {
                        MatRef::row_major(b, n, k).t()
                    } else {
                        MatRef::row_major(b, k, n)
                    }
                })
                .collect();
            let mut dsts: Vec<Vec<T>> = widths
                .iter()
                .map(|&n| vec![T::from(7.0).unwrap(); m * (n + 3)])
                .collect();
            let mut parts: Vec<(&mut [T], usize, MatRef<T>)> = dsts
                .iter_mut()
                .zip(widths)
                .zip(&views)
                .map(|((d, &n), &v)| (&mut d[..], n + 3, v))
                .collect();
            matmul_shared_lhs(av, &mut parts, true);
            for ((dst, b), &n) in dsts.iter().zip(&bs).zip(widths) {
                let want = naive(&a, b, m, k, n);
                for i in 0..m {
                    for jj in 0..n + 3 {
                        let got = num_traits::ToPrimitive::to_f64(&dst[i * (n + 3) + jj]).unwrap();
                        let expect = if jj < n { want[i * n + jj] } else { 7.0 };
                        assert!(
                            (got - expect).abs() <= 1e-4 * (1.0 + expect.abs()),
                            "({m},{k},{widths:?}) part of width {n}: [{i},{jj}] = {got}, want \
                             {expect}"
                        );
                    }
                }
            }
        }
        // m * k * n >= BLOCKED_MIN_MACS for every part: the merged path when the kernel runs.
        check::<f32>(200, 1400, &[256, 250], true);
        check::<f32>(64, 1 << 12, &[256, 264, 300], true);
        // Fallbacks: one part per product.
        check::<f32>(100, 300, &[40, 20], true);
        check::<f32>(200, 1400, &[256, 250], false);
        check::<f64>(120, 500, &[40, 33], true);
    }

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn plain_transposed_strided_and_accumulating_products() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(
            &mut c,
            0,
            n,
            false,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            true,
        );
        assert!(c.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-12));
        // a given as the transpose of its (k, m) transpose.
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut c2 = vec![1.0; m * n];
        matmul(
            &mut c2,
            0,
            n,
            true,
            MatRef::row_major(&at, k, m).t(),
            MatRef::row_major(&b, k, n),
            true,
        );
        assert!(c2
            .iter()
            .zip(&want)
            .all(|(x, y)| (x - 1.0 - y).abs() < 1e-12));
        // Destination rows with a stride (every other row of a larger buffer, from offset n).
        let mut big = vec![9.0; 2 * m * n + n];
        matmul(
            &mut big,
            n,
            2 * n,
            false,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            true,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((big[n + i * 2 * n + j] - want[i * n + j]).abs() < 1e-12);
            }
        }
        assert_eq!(big[0], 9.0);
    }

    #[test]
    fn small_m_axpy_path_matches() {
        for m in 1..=SMALL_M + 1 {
            let (k, n) = (6, 9);
            let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.7).sin()).collect();
            let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.3).cos()).collect();
            let want = naive(&a, &b, m, k, n);
            let mut c = vec![0.5; m * n];
            matmul(
                &mut c,
                0,
                n,
                true,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                true,
            );
            assert!(
                c.iter()
                    .zip(&want)
                    .all(|(x, y)| (x - 0.5 - y).abs() < 1e-12),
                "m = {m}"
            );
        }
    }

    /// `pack_panels` puts element `(p, j)` of any layout at `[j / nr][p][j % nr]` and zero past
    /// the last column, for every panel width the kernels use and a run-time one.
    #[test]
    fn panels_hold_every_element_and_zero_padding() {
        for &(k, n) in &[(1, 1), (3, 5), (7, 16), (9, 33), (130, 70), (5, 6)] {
            let src: Vec<f32> = (0..3 * k * n + 7).map(|i| i as f32 + 0.5).collect();
            // Row-major, column-major (a transpose) and fully strided views, all at an offset.
            let views = [
                MatRef::strided(&src, 3, k, n, n, 1),
                MatRef::strided(&src, 5, k, n, 1, k + 1),
                MatRef::strided(&src, 2, k, n, 2 * n, 2),
            ];
            for b in views {
                for nr in [6, 8, 16, 32, 5] {
                    let np = n.div_ceil(nr);
                    let mut dst = vec![f32::NAN; np * k * nr];
                    pack_panels(&mut dst, nr, b);
                    for q in 0..np {
                        for p in 0..k {
                            for lane in 0..nr {
                                let j = q * nr + lane;
                                let want = if j < n {
                                    src[b.offset + p * b.rs + j * b.cs]
                                } else {
                                    0.0
                                };
                                let got = dst[q * k * nr + p * nr + lane];
                                assert_eq!(got, want, "k={k} n={n} nr={nr} ({p},{j})");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The packed kernel (f32) and its fallback (f64) against the naive product: every row
    /// remainder of the register block, column counts around the panel width, a transposed
    /// right-hand view, strided left-hand rows and destination rows, with and without
    /// accumulation.
    #[test]
    fn packed_products_match_the_naive_product() {
        for &(m, k, n) in &[
            (1, 3, 5),
            (2, 7, 19),
            (9, 130, 21),
            (7, 17, 31),
            (9, 8, 32),
            (16, 33, 33),
            (13, 5, 70),
            // More than one block of the inner dimension (KC = 256); from k = PACK_A_MIN_K on
            // with at least MR rows, `a` is copied into micro-panels first (remainder rows too).
            (7, 300, 20),
            (20, 140, 40),
            (13, 600, 17),
        ] {
            let a: Vec<f64> = (0..2 * m * k).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
            // a's rows are every other k-row of a 2m-row buffer.
            let a_rows: Vec<f64> = (0..m).flat_map(|i| a[2 * i * k..][..k].to_vec()).collect();
            let want = naive(&a_rows, &b, m, k, n);
            // b given as the transpose view of its (n, k) transpose.
            let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let af: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let btf: Vec<f32> = bt.iter().map(|&v| v as f32).collect();
            let p64 = PackedRhs::new(MatRef::row_major(&bt, n, k).t());
            let p32 = PackedRhs::new(MatRef::row_major(&btf, n, k).t());
            for accumulate in [false, true] {
                let init = if accumulate { 0.5 } else { 9.0 };
                let mut c64 = vec![init; 3 * m * n];
                let mut c32 = vec![init as f32; 3 * m * n];
                let a64 = MatRef::strided(&a, 0, m, k, 2 * k, 1);
                let a32 = MatRef::strided(&af, 0, m, k, 2 * k, 1);
                p64.matmul(&mut c64, n, 3 * n, accumulate, a64);
                p32.matmul(&mut c32, n, 3 * n, accumulate, a32);
                let base = if accumulate { 0.5 } else { 0.0 };
                for i in 0..m {
                    for j in 0..n {
                        let w = want[i * n + j] + base;
                        let (g64, g32) = (c64[n + i * 3 * n + j], c32[n + i * 3 * n + j]);
                        assert!((g64 - w).abs() < 1e-12, "f64 m={m} k={k} n={n} ({i},{j})");
                        assert!(
                            (g32 as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                            "f32 m={m} k={k} n={n} ({i},{j}): {g32} vs {w}"
                        );
                    }
                }
                // Outside the destination rows nothing was touched.
                assert_eq!(c32[0], init as f32, "m={m} k={k} n={n}");
                assert_eq!(c32[n + n], init as f32, "m={m} k={k} n={n}");
                assert_eq!(c64[3 * m * n - 1], init, "m={m} k={k} n={n}");
            }
        }
    }
}

//! The cache-blocked f32 product on the register kernels, for the large weight gradients with a
//! transposed left side; and the panel packing it shares with [`super::packed`].

use super::matref::MatRef;
use super::simd::{kernel, KernelIsa};
use crate::ops::scratch;

/// Rows of `a` packed per block of the cache-blocked f32 product: `MC x KC` floats (96 KiB) stay
/// in L2 while every column panel of `b` passes over them.
pub(super) const MC: usize = 96;

/// The cache-blocked f32 product applies to a column-major (transposed) `a` -- the `x^T · dG`
/// weight gradients over all steps, a layout faer's kernels handle poorly -- from this many rows
/// of `a` ...
pub(super) const BLOCKED_MIN_M: usize = 32;
/// ... and this many multiply-adds. Elsewhere (row-major `a`, smaller products) faer is as fast
/// or faster, so those stay on faer.
pub(super) const BLOCKED_MIN_MACS: usize = 1 << 26;

/// `dst [+]= a · b` for f32 with `isa`'s register-blocked kernel (panics for `Portable` or one
/// this CPU lacks), BLIS-style: `b` packed once into column panels (in parallel), then blocks of
/// `MC` rows of `a` packed per `KC` steps of the inner dimension, spread over rayon's threads
/// when `may_thread` and the product is large. Used for the weight gradients over all steps (`a`
/// a transpose), where it beats faer (see [`BLOCKED_MIN_MACS`]); any layout of `a` and `b` is
/// accepted.
#[allow(clippy::too_many_arguments)]
pub(super) fn blocked_f32(
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
/// dst_rs, b)`, `dst` as in [`matmul`](super::matmul).
pub(super) type Part<'a, 'b> = (&'a mut [f32], usize, usize, MatRef<'b, f32>);

/// [`blocked_f32`] for one `a` times several `b`s at once (`a · [b_1 | b_2 ..]` with each part's
/// columns in its own destination): every block of `a` is packed once for all of them, as for one
/// product of their total width. The weight gradients `dG^T x` and `dG^T h_prev` share `dG^T`.
pub(super) fn blocked_f32_parts(
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
        crate::ops::batch::threads()
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

/// Fills `dst` with runs of `N` floats, run `p` read from `src[start + p * stride..]`: the packing
/// copies with the run length a constant (`copy_from_slice` of a run-time length of a few floats
/// is a `memmove` call per run).
pub(super) fn copy_rows<const N: usize>(dst: &mut [f32], src: &[f32], start: usize, stride: usize) {
    for (p, d) in dst.chunks_exact_mut(N).enumerate() {
        let s: &[f32; N] = src[start + p * stride..][..N].try_into().expect("N floats");
        let d: &mut [f32; N] = d.try_into().expect("N floats");
        *d = *s;
    }
}

/// [`copy_rows`] for a run length known only at run time.
pub(super) fn copy_rows_dyn(dst: &mut [f32], n: usize, src: &[f32], start: usize, stride: usize) {
    for (p, d) in dst.chunks_exact_mut(n).enumerate() {
        d.copy_from_slice(&src[start + p * stride..][..n]);
    }
}

/// Packs `b (k, n)` into `ceil(n / nr)` column panels of `k` rows of `nr` floats (element
/// `(p, j)` at `dst[(j / nr) * k * nr + p * nr + j % nr]`, zero past column `n`): the layout of
/// [`PackedRhs`](super::PackedRhs)'s panels, and with `b = aᵀ` that of the kernel's row micro-panels of `a`.
/// `dst` must hold exactly that many floats; every one is written.
pub(super) fn pack_panels(dst: &mut [f32], nr: usize, b: MatRef<f32>) {
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

/// Steps of `k` per block of [`interleave`]: one 64-byte cache line of f32 per run.
const INTERLEAVE_BLOCK: usize = 16;

/// Strides (in f32) at which [`interleave`]'s runs share L1 sets: 2 KiB.
const ALIASING_STRIDE: usize = 512;

/// `dst[p * N + j] = src[start + j * stride + p]` for `p < k` and `j < cols`, zero for
/// `cols <= j < N`: `cols` contiguous runs of `k` floats interleaved (a transpose). With `N` a
/// constant the runs' positions stay in registers.
///
/// Reading one value of every run per step keeps `N` lines of the runs live at once; when the
/// runs lie a multiple of 2 KiB apart (hidden 512, 1024, 2048) those lines fall into one or two
/// L1 sets and, from 16 runs (the weights' panels), evict each other on every step. There the
/// runs go in blocks of [`INTERLEAVE_BLOCK`] steps instead: each run's next cache line is read
/// once and spread over the block's rows of `dst`, which stay in L1. Elsewhere one value of
/// every run per step, each row of `dst` one store, measured faster (benches/README.md,
/// "Packing a transposed `W_hh`").
pub(super) fn interleave<const N: usize>(
    dst: &mut [f32],
    src: &[f32],
    start: usize,
    stride: usize,
    cols: usize,
    k: usize,
) {
    if N >= 16 && stride.is_multiple_of(ALIASING_STRIDE) {
        for (b, block) in dst[..k * N].chunks_mut(INTERLEAVE_BLOCK * N).enumerate() {
            let (p0, steps) = (b * INTERLEAVE_BLOCK, block.len() / N);
            for j in 0..N {
                if j < cols {
                    let run = &src[start + j * stride + p0..][..steps];
                    for (row, v) in block.chunks_exact_mut(N).zip(run) {
                        row[j] = *v;
                    }
                } else {
                    for row in block.chunks_exact_mut(N) {
                        row[j] = 0.0;
                    }
                }
            }
        }
        return;
    }
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
pub(super) fn interleave_dyn(
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
pub(super) struct SendPtr(*mut f32);
// SAFETY: each thread writes only its own row block through the pointer.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Below this many multiply-adds a product runs on one thread (threading costs more than it saves
/// there). Set so that a streaming model's input projection (batch 1, a hundred steps) stays on
/// one thread.
pub(super) const PARALLEL_MIN_MACS: usize = 1 << 22;

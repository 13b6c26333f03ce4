//! Every register kernel the CPU runs (AVX-512, AVX2+FMA) and the portable path, each forced by
//! name ([`KernelIsa`]), against the portable path and a naive product. Forcing by name, not by
//! `RNN_PACKED_KERNEL` (read once per process, and shared by tests running in parallel), lets an
//! AVX-512 machine test both SIMD kernels in one run.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest allowed difference of an f32 result (from the naive product, and between kernels),
/// relative to the magnitude of its terms `|c_ij| + Σ_p |a_ip b_pj|` (not to the result, which
/// cancellation can make arbitrarily small).
const F32_TOL: f64 = 1e-5;
/// [`F32_TOL`] for f64.
const F64_TOL: f64 = 1e-12;
/// The destination outside the product's view, which no kernel may write.
const SENTINEL: f64 = 7.25;

/// How a logical `(rows, cols)` matrix is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Rows contiguous, `pad` floats between rows.
    RowMajor,
    /// Columns contiguous (the view is a transpose), `pad` floats between columns.
    ColMajor,
    /// Neither: every other float of a row, rows `2 * cols + pad` apart.
    Strided,
}

const LAYOUTS: [Layout; 3] = [Layout::RowMajor, Layout::ColMajor, Layout::Strided];

/// `vals (rows, cols)` (row-major) stored with `layout` from offset `pad`, NaN everywhere else
/// (so a kernel reading outside the view yields NaN): `(storage, offset, rs, cs)`.
fn store(
    vals: &[f64],
    (rows, cols): (usize, usize),
    layout: Layout,
    pad: usize,
) -> (Vec<f64>, usize, usize, usize) {
    let (rs, cs) = match layout {
        Layout::RowMajor => (cols + pad, 1),
        Layout::ColMajor => (1, rows + pad),
        Layout::Strided => (2 * cols + pad, 2),
    };
    let mut data = vec![f64::NAN; pad + (rows - 1) * rs + (cols - 1) * cs + 1 + pad];
    for i in 0..rows {
        for j in 0..cols {
            data[pad + i * rs + j * cs] = vals[i * cols + j];
        }
    }
    (data, pad, rs, cs)
}

/// One product `c (m, n) [+]= a (m, k) · b (k, n)` with its layouts.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    a: Layout,
    b: Layout,
    accumulate: bool,
    /// Floats between the destination's rows (and before its first).
    dst_pad: usize,
}

/// The logical operands of a case, uniform in [-1, 1] (rounded to f32 for f32 cases, so the
/// reference multiplies the very values the kernels see).
struct Operands {
    a: Vec<f64>,
    b: Vec<f64>,
    c0: Vec<f64>,
}

impl Operands {
    fn random(rng: &mut ChaCha8Rng, case: &Case, f32_values: bool) -> Self {
        let mut draw = |len: usize| -> Vec<f64> {
            (0..len)
                .map(|_| {
                    let v: f64 = rng.random_range(-1.0..1.0);
                    if f32_values {
                        v as f32 as f64
                    } else {
                        v
                    }
                })
                .collect()
        };
        Self {
            a: draw(case.m * case.k),
            b: draw(case.k * case.n),
            c0: draw(case.m * case.n),
        }
    }

    /// The naive product and, per element, the magnitude of its terms (for the tolerance).
    fn naive(&self, case: &Case) -> (Vec<f64>, Vec<f64>) {
        let Case { m, k, n, .. } = *case;
        let mut want = vec![0.0; m * n];
        let mut mag = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let c0 = if case.accumulate {
                    self.c0[i * n + j]
                } else {
                    0.0
                };
                let (mut sum, mut abs) = (c0, c0.abs());
                for p in 0..k {
                    let t = self.a[i * k + p] * self.b[p * n + j];
                    sum += t;
                    abs += t.abs();
                }
                want[i * n + j] = sum;
                mag[i * n + j] = abs;
            }
        }
        (want, mag)
    }
}

/// A destination for a case: rows `n + dst_pad` apart from offset `dst_pad`, the view holding
/// `c0` when accumulating and NaN otherwise (an overwrite must not read it), [`SENTINEL`]
/// elsewhere. Returns `(storage, offset, row stride)`.
fn destination<T: Float>(case: &Case, c0: &[f64]) -> (Vec<T>, usize, usize) {
    let (m, n, pad) = (case.m, case.n, case.dst_pad);
    let rs = n + pad;
    let mut dst = vec![T::from(SENTINEL).unwrap(); pad + m * rs];
    for i in 0..m {
        for j in 0..n {
            let v = if case.accumulate {
                c0[i * n + j]
            } else {
                f64::NAN
            };
            dst[pad + i * rs + j] = T::from(v).unwrap();
        }
    }
    (dst, pad, rs)
}

/// The `(m, n)` view of a destination as f64, after checking that nothing outside it changed.
fn view_of<T: Float>(dst: &[T], case: &Case, what: &str) -> Vec<f64> {
    let (m, n, pad) = (case.m, case.n, case.dst_pad);
    let rs = n + pad;
    let mut out = vec![0.0; m * n];
    for (idx, v) in dst.iter().enumerate() {
        let v = v.to_f64().unwrap();
        let (i, j) = ((idx.wrapping_sub(pad)) / rs, (idx.wrapping_sub(pad)) % rs);
        if idx >= pad && j < n {
            out[i * n + j] = v;
        } else {
            assert_eq!(
                v.to_bits(),
                SENTINEL.to_bits(),
                "{what} {case:?}: dst[{idx}] outside the view was written"
            );
        }
    }
    out
}

/// Asserts `got` within `tol * mag` of `want`, element by element (NaN fails).
fn assert_close(got: &[f64], want: &[f64], mag: &[f64], tol: f64, what: &str, case: &Case) {
    for (idx, ((&g, &w), &s)) in got.iter().zip(want).zip(mag).enumerate() {
        let (i, j) = (idx / case.n, idx % case.n);
        assert!(
            (g - w).abs() <= tol * s,
            "{what} {case:?}: ({i},{j}) = {g}, want {w} (terms' magnitude {s})"
        );
    }
}

/// Shapes around every block edge of both kernels (rows around MR = 6 and 8 and two blocks of
/// them; columns around NR = 16 and 32; inner dimensions around `PACK_A_MIN_K` and `KC`), then
/// random shapes of a recurrence (a batch chunk of 1-70 rows, 1-300 hidden units and gate
/// columns), every layout and both modes, with seed `seed`.
fn cases(seed: u64) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut push = |rng: &mut ChaCha8Rng, m, k, n| {
        out.push(Case {
            m,
            k,
            n,
            a: LAYOUTS[rng.random_range(0..3)],
            b: LAYOUTS[rng.random_range(0..3)],
            accumulate: rng.random_bool(0.5),
            dst_pad: rng.random_range(0..4),
        })
    };
    for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17] {
        for n in [1, 5, 15, 16, 17, 31, 32, 33, 48, 65] {
            let k = [1, 2, 3, 17, 127, 128, 129, 255, 256, 257][(m + n) % 10];
            push(&mut rng, m, k, n);
        }
    }
    for k in [1, 7, 127, 128, 129, 255, 256, 257, 300, 513] {
        push(&mut rng, 8, k, 33);
        push(&mut rng, 13, k, 31);
    }
    for _ in 0..300 {
        let (m, k, n) = (
            rng.random_range(1..=70),
            rng.random_range(1..=300),
            rng.random_range(1..=300),
        );
        push(&mut rng, m, k, n);
    }
    out
}

/// Adds `isa` to `exercised` unless it is there.
fn note(exercised: &mut Vec<KernelIsa>, isa: KernelIsa) {
    if !exercised.contains(&isa) {
        exercised.push(isa);
    }
}

/// For every case: each f32 kernel the CPU runs, through [`PackedRhs`] (plain and packed `a`)
/// and through [`blocked_f32`] (its other entry point), against the portable path and the naive
/// product; f64 (the portable path whatever the kernel asked for) against the naive product.
/// Fails unless every SIMD kernel the CPU reports was exercised.
#[test]
fn every_kernel_the_cpu_runs_matches_the_portable_path_and_the_naive_product() {
    let isas = KernelIsa::supported();
    assert_eq!(isas.last(), Some(&KernelIsa::Portable));
    let simd: Vec<KernelIsa> = isas
        .iter()
        .copied()
        .filter(|&isa| isa != KernelIsa::Portable)
        .collect();
    // f64 has no register kernel: asking for one gives the portable path.
    for &isa in &isas {
        assert_eq!(PackedRhs::<f64>::kernel_for(isa), KernelIsa::Portable);
    }
    let cases = cases(0x15a_2804);
    let mut rng = ChaCha8Rng::seed_from_u64(0x0be7_a5e5);
    let mut exercised: Vec<KernelIsa> = Vec::new();
    for case in &cases {
        let Case { m, k, n, .. } = *case;
        // f32: every kernel, the portable one first (the others are compared with it).
        let ops = Operands::random(&mut rng, case, true);
        let (want, mag) = ops.naive(case);
        let (a_store, a_off, a_rs, a_cs) = store(&ops.a, (m, k), case.a, 3);
        let (b_store, b_off, b_rs, b_cs) = store(&ops.b, (k, n), case.b, 2);
        let a32: Vec<f32> = a_store.iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = b_store.iter().map(|&v| v as f32).collect();
        let av = MatRef::strided(&a32, a_off, m, k, a_rs, a_cs);
        let bv = MatRef::strided(&b32, b_off, k, n, b_rs, b_cs);
        let packed_product = |isa: KernelIsa| -> Vec<f64> {
            let what = format!("f32 PackedRhs {isa:?}");
            let packed = PackedRhs::with_kernel(bv, isa);
            // The kernel asked for is the one that runs (no silent fallback).
            assert_eq!(packed.isa, isa, "{what}");
            let (mut dst, off, rs) = destination::<f32>(case, &ops.c0);
            packed.matmul(&mut dst, off, rs, case.accumulate, av);
            view_of(&dst, case, &what)
        };
        let portable = packed_product(KernelIsa::Portable);
        assert_close(&portable, &want, &mag, F32_TOL, "f32 Portable", case);
        note(&mut exercised, KernelIsa::Portable);
        for &isa in &simd {
            let blocked = {
                let what = format!("f32 blocked {isa:?}");
                let (mut dst, off, rs) = destination::<f32>(case, &ops.c0);
                blocked_f32(isa, &mut dst, off, rs, case.accumulate, av, bv, false);
                view_of(&dst, case, &what)
            };
            for (got, path) in [(packed_product(isa), "PackedRhs"), (blocked, "blocked")] {
                let what = format!("f32 {path} {isa:?}");
                assert_close(&got, &want, &mag, F32_TOL, &what, case);
                let vs = format!("{what} vs Portable");
                assert_close(&got, &portable, &mag, F32_TOL, &vs, case);
            }
            note(&mut exercised, isa);
        }
        // f64, with values that are not all f32 values.
        let ops = Operands::random(&mut rng, case, false);
        let (want, mag) = ops.naive(case);
        let (a_store, a_off, a_rs, a_cs) = store(&ops.a, (m, k), case.a, 3);
        let (b_store, b_off, b_rs, b_cs) = store(&ops.b, (k, n), case.b, 2);
        let av = MatRef::strided(&a_store, a_off, m, k, a_rs, a_cs);
        let packed = PackedRhs::new(MatRef::strided(&b_store, b_off, k, n, b_rs, b_cs), m);
        let (mut dst, off, rs) = destination::<f64>(case, &ops.c0);
        packed.matmul(&mut dst, off, rs, case.accumulate, av);
        let got = view_of(&dst, case, "f64 PackedRhs");
        assert_close(&got, &want, &mag, F64_TOL, "f64 PackedRhs", case);
    }
    // What the CPU reports, asked independently of `KernelIsa::runs_here`.
    #[cfg(target_arch = "x86_64")]
    let (avx512f, avx2_fma) = (
        std::arch::is_x86_feature_detected!("avx512f"),
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (avx512f, avx2_fma) = (false, false);
    eprintln!(
        "packed f32 GEMM kernels exercised: {exercised:?} over {} shapes (CPU reports avx512f: \
         {avx512f}, avx2+fma: {avx2_fma}); f64 has no register kernel and ran the portable path",
        cases.len(),
    );
    for (reported, isa) in [(avx512f, KernelIsa::Avx512), (avx2_fma, KernelIsa::Avx2)] {
        assert!(
            !reported || exercised.contains(&isa),
            "the CPU reports {isa:?} but its kernel was not exercised: {exercised:?}"
        );
    }
    assert!(exercised.contains(&KernelIsa::Portable));
}

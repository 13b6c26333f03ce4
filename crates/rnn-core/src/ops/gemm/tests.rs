//! Each product path against the naive product.

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
                    .map(|i| T::from(if j == 1 { b[(i % k) * n + i / k] } else { b[i] }).unwrap())
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
    for &(k, n) in &[
        (1, 1),
        (3, 5),
        (7, 16),
        (9, 33),
        (130, 70),
        (5, 6),
        (48, 64),
        (40, 20),
    ] {
        let src: Vec<f32> = (0..(3 * k + 1024) * n + 7)
            .map(|i| i as f32 + 0.5)
            .collect();
        // Row-major, column-major (a transpose; also with columns 4 KiB apart, as a transposed
        // `W_hh` at hidden 1024) and fully strided views, all at an offset.
        let views = [
            MatRef::strided(&src, 3, k, n, n, 1),
            MatRef::strided(&src, 5, k, n, 1, k + 1),
            MatRef::strided(&src, 6, k, n, 1, 1024),
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
        let p64 = PackedRhs::new(MatRef::row_major(&bt, n, k).t(), m);
        let p32 = PackedRhs::new(MatRef::row_major(&btf, n, k).t(), m);
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

/// A parallel product narrow enough to run as row blocks on Rayon's threads (3 threads, so the
/// blocks are uneven), into strided destination rows with accumulation: equal to the plain
/// product, and the padding between rows untouched.
#[test]
fn row_blocked_parallel_products_equal_the_plain_product() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let (m, k, n) = (401, 300, 290);
    assert!(m * k * n >= 1 << 25, "large enough to run in parallel");
    let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
    let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
    let want = naive(&a, &b, m, k, n);
    let rs = n + 5;
    let mut big = vec![2.0; n + m * rs];
    pool.install(|| {
        matmul(
            &mut big,
            n,
            rs,
            true,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            true,
        )
    });
    for i in 0..m {
        for j in 0..rs {
            let got = big[n + i * rs + j];
            if j < n {
                assert!((got - 2.0 - want[i * n + j]).abs() < 1e-9, "({i}, {j})");
            } else {
                assert_eq!(got, 2.0, "padding ({i}, {j})");
            }
        }
    }
    assert!(big[..n].iter().all(|&v| v == 2.0));
}

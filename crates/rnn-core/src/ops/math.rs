//! Element types of the fused CPU kernels and their vectorised activations.
//!
//! f32 uses a Cephes-style `exp` (range reduction to [-ln2/2, ln2/2], degree-5 polynomial,
//! relative error about 2e-7) written so that the compiler vectorises it, compiled for AVX-512,
//! AVX2+FMA and a baseline and picked at run time. f64 uses the standard library (exact reference
//! numerics; f64 is for checking, not for speed).

use super::scratch::Pooled;
use multiversion::multiversion;

/// A float the fused kernels run on (f32, f64).
pub(crate) trait Float:
    num_traits::Float
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::iter::Sum
    + candle_core::WithDType
    + Default
    + faer::traits::ComplexField
    + Send
    + Sync
    + 'static
    + Pooled
{
    /// `xs[i] = 1 / (1 + exp(-xs[i]))`.
    fn sigmoid_inplace(xs: &mut [Self]);
    /// `xs[i] = tanh(xs[i])`.
    fn tanh_inplace(xs: &mut [Self]);
    /// `dst[i] = tanh(src[i])`.
    fn tanh_into(src: &[Self], dst: &mut [Self]);
    /// `y[i] += alpha * x[i]`.
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]);
    /// `xs[i] = exp(xs[i] - shift)`; returns the sum of the new values.
    fn exp_shifted_inplace(xs: &mut [Self], shift: Self) -> Self;
    /// `xs[i] *= alpha`.
    fn scale_inplace(xs: &mut [Self], alpha: Self);
    /// `xs[i] += bias[i]` (over the shorter of the two); returns the largest new value (negative
    /// infinity if none is above it; NaNs are passed over) and whether any new value is NaN.
    fn add_bias_max(xs: &mut [Self], bias: &[Self]) -> (Self, bool);
}

/// The scalar body of [`Float::add_bias_max`] (f64, and the tail of the f32 lanes).
#[inline(always)]
fn add_bias_max_scalar<T: num_traits::Float>(xs: &mut [T], bias: &[T]) -> (T, bool) {
    let (mut max, mut nan) = (T::neg_infinity(), false);
    for (x, &b) in xs.iter_mut().zip(bias) {
        *x = *x + b;
        nan |= x.is_nan();
        if *x > max {
            max = *x;
        }
    }
    (max, nan)
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * *x;
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn axpy_f64(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * *x;
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// exp(x) for f32, branch-free so loops over it vectorise.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2^n from the bits of n + 1.5 * 2^23 (n is an integer in [-126, 127]): integer ops only, so the
    // loop vectorises (an `as i32` cast would be scalarised for its NaN and saturation rules).
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    y * scale
}

#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    // tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow, absolute error ~1e-7.
    let e = exp_f32(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn sigmoid_f32_slice(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = sigmoid_f32(*x);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn tanh_f32_slice(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = tanh_f32(*x);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn tanh_f32_into(src: &[f32], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = tanh_f32(*s);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn exp_shifted_f32(xs: &mut [f32], shift: f32) -> f32 {
    // Sixteen partial sums, so the reduction vectorises (and rounds less than one running sum).
    let mut acc = [0f32; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk.iter_mut()) {
            *x = exp_f32(*x - shift);
            *a += *x;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn add_bias_max_f32(xs: &mut [f32], bias: &[f32]) -> (f32, bool) {
    // Sixteen running maxima and NaN flags: one running maximum is a chain of compares that does
    // not vectorise (the order of a floating-point reduction is kept), sixteen independent ones
    // do. The maximum of the lanes is the same number whatever the order (NaNs never win).
    let n = xs.len().min(bias.len());
    let (xs, bias) = (&mut xs[..n], &bias[..n]);
    let mut max = [f32::NEG_INFINITY; 16];
    let mut nan = [false; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    let mut bchunks = bias.chunks_exact(16);
    for (chunk, b) in (&mut chunks).zip(&mut bchunks) {
        for i in 0..16 {
            let z = chunk[i] + b[i];
            chunk[i] = z;
            nan[i] |= z.is_nan();
            max[i] = if z > max[i] { z } else { max[i] };
        }
    }
    let (tail_max, tail_nan) = add_bias_max_scalar(chunks.into_remainder(), bchunks.remainder());
    let lanes = max.iter().fold(tail_max, |m, &x| if x > m { x } else { m });
    (lanes, tail_nan || nan.iter().any(|&f| f))
}

#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn scale_f32(xs: &mut [f32], alpha: f32) {
    for x in xs.iter_mut() {
        *x *= alpha;
    }
}

impl Float for f32 {
    fn sigmoid_inplace(xs: &mut [Self]) {
        sigmoid_f32_slice(xs)
    }
    fn tanh_inplace(xs: &mut [Self]) {
        tanh_f32_slice(xs)
    }
    fn tanh_into(src: &[Self], dst: &mut [Self]) {
        tanh_f32_into(src, dst)
    }
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]) {
        axpy_f32(alpha, x, y)
    }
    fn exp_shifted_inplace(xs: &mut [Self], shift: Self) -> Self {
        exp_shifted_f32(xs, shift)
    }
    fn scale_inplace(xs: &mut [Self], alpha: Self) {
        scale_f32(xs, alpha)
    }
    fn add_bias_max(xs: &mut [Self], bias: &[Self]) -> (Self, bool) {
        add_bias_max_f32(xs, bias)
    }
}

impl Float for f64 {
    fn sigmoid_inplace(xs: &mut [Self]) {
        for x in xs.iter_mut() {
            *x = 1.0 / (1.0 + (-*x).exp());
        }
    }
    fn tanh_inplace(xs: &mut [Self]) {
        for x in xs.iter_mut() {
            *x = x.tanh();
        }
    }
    fn tanh_into(src: &[Self], dst: &mut [Self]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.tanh();
        }
    }
    fn axpy(alpha: Self, x: &[Self], y: &mut [Self]) {
        axpy_f64(alpha, x, y)
    }
    fn exp_shifted_inplace(xs: &mut [Self], shift: Self) -> Self {
        let mut sum = 0.0;
        for x in xs.iter_mut() {
            *x = (*x - shift).exp();
            sum += *x;
        }
        sum
    }
    fn scale_inplace(xs: &mut [Self], alpha: Self) {
        for x in xs.iter_mut() {
            *x *= alpha;
        }
    }
    fn add_bias_max(xs: &mut [Self], bias: &[Self]) -> (Self, bool) {
        add_bias_max_scalar(xs, bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_activations_match_std_closely() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 100.0).collect();
        let mut s = xs.clone();
        f32::sigmoid_inplace(&mut s);
        let mut t = xs.clone();
        f32::tanh_inplace(&mut t);
        for ((x, s), t) in xs.iter().zip(&s).zip(&t) {
            let x64 = *x as f64;
            let s_ref = 1.0 / (1.0 + (-x64).exp());
            assert!(
                (*s as f64 - s_ref).abs() < 2e-7,
                "sigmoid({x}) = {s} vs {s_ref}"
            );
            assert!(
                (*t as f64 - x64.tanh()).abs() < 3e-7,
                "tanh({x}) = {t} vs {}",
                x64.tanh()
            );
        }
        let mut extremes = vec![-1e30f32, -100.0, 100.0, 1e30, 0.0, -0.0];
        f32::tanh_inplace(&mut extremes);
        assert_eq!(extremes, vec![-1.0, -1.0, 1.0, 1.0, 0.0, -0.0]);
        let mut extremes = vec![-1e30f32, 1e30];
        f32::sigmoid_inplace(&mut extremes);
        assert!(extremes[0] >= 0.0 && extremes[0] < 1e-37 && extremes[1] == 1.0);
    }

    /// The multiversioned f32 slice functions, run on the target the CPU selects, equal their
    /// scalar bodies (one call per element, on the baseline target) bit for bit, for lengths
    /// around every vector width and for extreme inputs: no target reorders, contracts into FMA or
    /// approximates differently. multiversion 0.8 defines each target's clone inside the
    /// dispatching function, where it cannot be named, so only the selected target (the best one
    /// the CPU has) is checked, not every target the CPU could run.
    #[test]
    fn dispatched_slice_functions_equal_their_scalar_bodies_bit_for_bit() {
        use std::hint::black_box;
        let same =
            |got: f32, want: f32| got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan();
        let specials = [
            0.0f32,
            -0.0,
            1e-40,
            -1e-40,
            86.9,
            87.5,
            88.5,
            -87.5,
            -104.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut lengths: Vec<usize> = (0..=70).collect();
        lengths.extend([127, 128, 129, 1000, 1003]);
        for len in lengths {
            let xs: Vec<f32> = (0..len)
                .map(|i| {
                    if i % 13 == 5 {
                        specials[i / 13 % specials.len()]
                    } else {
                        ((i * 7919 % 2001) as f32 - 1000.0) * 0.031
                    }
                })
                .collect();
            let ys: Vec<f32> = xs.iter().map(|x| (x * 0.37).sin()).collect();
            let check = |what: &str, got: &[f32], want: &dyn Fn(usize) -> f32| {
                for (i, &g) in got.iter().enumerate() {
                    let w = want(i);
                    assert!(
                        same(g, w),
                        "{what}, len {len}: [{i}] ({}) = {g}, want {w}",
                        xs[i]
                    );
                }
            };
            let mut s = xs.clone();
            sigmoid_f32_slice(&mut s);
            check("sigmoid", &s, &|i| sigmoid_f32(black_box(xs[i])));
            let mut t = xs.clone();
            tanh_f32_slice(&mut t);
            check("tanh", &t, &|i| tanh_f32(black_box(xs[i])));
            let mut t = vec![f32::NAN; len];
            tanh_f32_into(&xs, &mut t);
            check("tanh_into", &t, &|i| tanh_f32(black_box(xs[i])));
            let mut y = ys.clone();
            axpy_f32(-1.7, &xs, &mut y);
            check("axpy", &y, &|i| black_box(ys[i]) + -1.7 * black_box(xs[i]));
            let mut y = xs.clone();
            scale_f32(&mut y, 0.3);
            check("scale", &y, &|i| black_box(xs[i]) * 0.3);
            // exp_shifted: the values, and the sum in its documented order (16 lanes, then the
            // tail). Without the infinities and NaN, whose sums are not comparable bit for bit.
            let finite: Vec<f32> = xs
                .iter()
                .map(|x| if x.is_finite() { *x } else { 1.5 })
                .collect();
            let mut e = finite.clone();
            let sum = exp_shifted_f32(&mut e, 2.5);
            check("exp_shifted", &e, &|i| exp_f32(black_box(finite[i]) - 2.5));
            let (mut lanes, mut tail) = ([0f32; 16], 0f32);
            let full = len / 16 * 16;
            for (i, &v) in e.iter().enumerate() {
                if i < full {
                    lanes[i % 16] += black_box(v);
                } else {
                    tail += black_box(v);
                }
            }
            let want = lanes.iter().fold(0f32, |acc, v| black_box(acc + v)) + tail;
            assert!(
                same(sum, want),
                "exp_shifted sum, len {len}: {sum}, want {want}"
            );
            // add_bias_max: the sums, their maximum (any order gives the same number) and the
            // NaN flag, against the scalar body.
            let mut z = xs.clone();
            let (max, nan) = add_bias_max_f32(&mut z, &ys);
            check("add_bias_max", &z, &|i| black_box(xs[i]) + black_box(ys[i]));
            let mut zs = xs.clone();
            let (want_max, want_nan) = add_bias_max_scalar(&mut zs, &ys);
            assert!(
                max == want_max && nan == want_nan,
                "add_bias_max, len {len}: ({max}, {nan}), want ({want_max}, {want_nan})"
            );
            assert_eq!(nan, zs.iter().any(|x| x.is_nan()), "len {len}");
            // f64 axpy is multiversioned too.
            let x64: Vec<f64> = finite.iter().map(|&v| v as f64 * 1.1).collect();
            let y64: Vec<f64> = ys.iter().map(|&v| v as f64 / 3.0).collect();
            let mut y = y64.clone();
            axpy_f64(0.7, &x64, &mut y);
            for (i, &g) in y.iter().enumerate() {
                let w = black_box(y64[i]) + 0.7 * black_box(x64[i]);
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "axpy f64, len {len}: [{i}] = {g}, want {w}"
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            let has = |f: &str| match f {
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                _ => std::arch::is_x86_feature_detected!("fma"),
            };
            // The first of the targets listed on the functions that the CPU has.
            let target = if ["avx512f", "avx512vl", "avx2", "fma"]
                .iter()
                .all(|f| has(f))
            {
                "x86_64+avx512f+avx512vl+avx2+fma"
            } else if has("avx2") && has("fma") {
                "x86_64+avx2+fma"
            } else {
                "the baseline"
            };
            eprintln!("multiversioned math checked on its selected target only: {target}");
        }
    }

    #[test]
    fn exp_relative_error_is_small() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let e = exp_f32(x) as f64;
            let r = (x as f64).exp();
            assert!(((e - r) / r).abs() < 3e-7, "exp({x}) = {e} vs {r}");
        }
    }
}

//! Element types of the fused CPU kernels and their vectorised activations.
//!
//! f32 uses a Cephes-style `exp` (range reduction to [-ln2/2, ln2/2], degree-5 polynomial,
//! relative error about 2e-7) written so that the compiler vectorises it, compiled for AVX-512,
//! AVX2+FMA and a baseline and picked at run time. f64 uses the standard library (exact reference
//! numerics; f64 is for checking, not for speed).

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
    /// The recycled-buffer cache of this dtype ([`super::scratch`]).
    fn pool() -> &'static super::scratch::Pool<Self>;
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
    fn pool() -> &'static super::scratch::Pool<Self> {
        static POOL: super::scratch::Pool<f32> = super::scratch::Pool::new();
        &POOL
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
    fn pool() -> &'static super::scratch::Pool<Self> {
        static POOL: super::scratch::Pool<f64> = super::scratch::Pool::new();
        &POOL
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

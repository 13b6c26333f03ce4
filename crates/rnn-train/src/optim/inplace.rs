//! The storage plumbing shared by the in-place element-wise updates (the SGD and AdamW steps,
//! the weight average's step): an update says what it does to contiguous f32/f64 slices
//! ([`Update2`], [`Update3`]); [`InPlace`] makes it Candle's `InplaceOp2`/`InplaceOp3`, which hand
//! over the raw storages and layouts; the loops run in parallel chunks ([`par_zip`]).

use std::ops::{Add, Div, Mul, Sub};

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout};
use rayon::prelude::*;

/// Elements per parallel task of an in-place update.
pub(crate) const CHUNK: usize = 1 << 15;

/// The element types the in-place updates run on (f32, f64), with the operations they use: each
/// one rounds as Candle's CPU op of the same name, so an update written with them equals its
/// composed twin bitwise when it does the same operations in the same order.
pub(crate) trait Elem:
    Copy
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    /// The value Candle's `affine` and scalar ops convert an f64 constant to (`T::from_f64`).
    fn of(x: f64) -> Self;
    /// Candle's `sqrt` (without the `mkl`/`accelerate` features, as this workspace builds it).
    fn sqrt(self) -> Self;
}

impl Elem for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Elem for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// `f(&mut a[i], b[i])` for every `i`, in parallel chunks.
pub(crate) fn par_zip<T: Elem>(a: &mut [T], b: &[T], f: impl Fn(&mut T, T) + Sync) {
    let isa = Isa::host();
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| zip_chunk(isa, a, b, &f));
}

/// `f(&mut a[i], b[i], c[i])` for every `i`, in parallel chunks.
pub(crate) fn par_zip3<T: Elem>(a: &mut [T], b: &[T], c: &[T], f: impl Fn(&mut T, T, T) + Sync) {
    let isa = Isa::host();
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK)))
        .for_each(|(a, (b, c))| zip3_chunk(isa, a, b, c, &f));
}

/// `f(&mut a[i])` for every `i`, in parallel chunks.
pub(crate) fn par_map<T: Elem>(a: &mut [T], f: impl Fn(&mut T) + Sync) {
    let isa = Isa::host();
    a.par_chunks_mut(CHUNK).for_each(|a| map_chunk(isa, a, &f));
}

/// The instruction set a chunk loop is compiled for. The crate is built for the baseline
/// x86-64, whose SSE2 holds four f32; the loops also exist for AVX2 and AVX-512 and run with the
/// widest the host has (benches/README.md, "What changed", item 8). The updates are plain IEEE additions, multiplications, divisions and square roots, which round
/// the same at any width (nothing is contracted into FMAs), so every version equals the
/// composed twin bitwise; tests hold each version the host runs equal to the baseline one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

impl Isa {
    /// Whether this host runs `self`.
    pub(crate) fn supported(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && Isa::Avx2.supported()
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest this host runs.
    pub(crate) fn host() -> Isa {
        static HOST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.supported())
                .unwrap_or(Isa::Baseline)
        })
    }
}

#[inline(always)]
fn zip_body<T: Elem, F: Fn(&mut T, T)>(a: &mut [T], b: &[T], f: &F) {
    for (a, &b) in a.iter_mut().zip(b) {
        f(a, b);
    }
}

#[inline(always)]
fn zip3_body<T: Elem, F: Fn(&mut T, T, T)>(a: &mut [T], b: &[T], c: &[T], f: &F) {
    for ((a, &b), &c) in a.iter_mut().zip(b).zip(c) {
        f(a, b, c);
    }
}

/// Defines `$name(isa, args..) -> $ret` that runs `$body(args..)` (an `#[inline(always)]`
/// function, so that its loops are compiled into each version) with AVX-512 or AVX2 where `isa`
/// asks for it and the host has it, else at the crate's baseline.
macro_rules! isa_versions {
    ($(#[$doc:meta])* $vis:vis fn $name:ident<$($g:ident: $b:path),*>($($a:ident: $t:ty),*) -> $ret:ty = $body:ident) => {
        $(#[$doc])*
        $vis fn $name<$($g: $b),*>(isa: Isa, $($a: $t),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512<$($g: $b),*>($($a: $t),*) -> $ret {
                    $body($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2<$($g: $b),*>($($a: $t),*) -> $ret {
                    $body($($a),*)
                }
                if isa.supported() {
                    match isa {
                        // SAFETY: the host has the features (checked just above).
                        Isa::Avx512 => return unsafe { avx512($($a),*) },
                        // SAFETY: as above.
                        Isa::Avx2 => return unsafe { avx2($($a),*) },
                        Isa::Baseline => {}
                    }
                }
            }
            let _ = isa;
            $body($($a),*)
        }
    };
}
pub(crate) use isa_versions;

#[inline(always)]
fn map_body<T: Elem, F: Fn(&mut T)>(a: &mut [T], f: &F) {
    a.iter_mut().for_each(f)
}

isa_versions! {
    /// One chunk of [`par_map`] compiled for `isa`.
    pub(crate) fn map_chunk<T: Elem, F: Fn(&mut T)>(a: &mut [T], f: &F) -> () = map_body
}

isa_versions! {
    /// One chunk of [`par_zip`] compiled for `isa` (the baseline where the host lacks it).
    pub(crate) fn zip_chunk<T: Elem, F: Fn(&mut T, T)>(a: &mut [T], b: &[T], f: &F) -> () = zip_body
}

isa_versions! {
    /// One chunk of [`par_zip3`] compiled for `isa` (the baseline where the host lacks it).
    pub(crate) fn zip3_chunk<T: Elem, F: Fn(&mut T, T, T)>(a: &mut [T], b: &[T], c: &[T], f: &F) -> () = zip3_body
}

fn offsets(op: &str, l: &Layout) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: contiguous layouts only")))
}

/// An element-wise update of `a` from `b`, over contiguous slices of one dtype.
pub(crate) trait Update2: Sync {
    /// The name Candle's errors give the op.
    const NAME: &'static str;
    fn run<T: Elem>(&self, a: &mut [T], b: &[T]);
}

/// An element-wise update of `a` from `b` and `c`, over contiguous slices of one dtype.
pub(crate) trait Update3: Sync {
    /// The name Candle's errors give the op.
    const NAME: &'static str;
    fn run<T: Elem>(&self, a: &mut [T], b: &[T], c: &[T]);
}

/// An [`Update2`] or [`Update3`] as Candle's in-place op: `a.inplace_op2(&b, &InPlace(update))`.
/// It fails, writing nothing, on non-contiguous layouts, other dtypes or operands of different
/// sizes (and Candle refuses operands sharing the written tensor's storage before it runs).
pub(crate) struct InPlace<U>(pub U);

impl<U: Update2> InplaceOp2 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let ((a0, a1), (b0, b1)) = (offsets(U::NAME, l1)?, offsets(U::NAME, l2)?);
        if a1 - a0 != b1 - b0 {
            candle_core::bail!("{}: operands of different sizes", U::NAME);
        }
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => self.0.run(&mut a[a0..a1], &b[b0..b1]),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => self.0.run(&mut a[a0..a1], &b[b0..b1]),
            _ => candle_core::bail!("{}: f32 or f64 only", U::NAME),
        }
        Ok(())
    }
}

impl<U: Update3> InplaceOp3 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let op = U::NAME;
        let ((a0, a1), (b0, b1), (c0, c1)) = (offsets(op, l1)?, offsets(op, l2)?, offsets(op, l3)?);
        if a1 - a0 != b1 - b0 || a1 - a0 != c1 - c0 {
            candle_core::bail!("{op}: operands of different sizes");
        }
        match (s1, s2, s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                self.0.run(&mut a[a0..a1], &b[b0..b1], &c[c0..c1])
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                self.0.run(&mut a[a0..a1], &b[b0..b1], &c[c0..c1])
            }
            _ => candle_core::bail!("{op}: f32 or f64 only"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of every magnitude and sign, zeros and a few non-finite ones, from a seed.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                match i % 97 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::INFINITY,
                    3 => f64::NAN,
                    _ => u * 10f64.powi((i % 13) as i32 - 6),
                }
            })
            .collect()
    }

    /// Every chunk loop version this host runs gives the baseline's bits, on AdamW's updates
    /// (with their divisions and square roots) and lengths that end inside a vector.
    fn each_version_equals_the_baseline<T: Elem + PartialEq + std::fmt::Debug>(
        cast: fn(f64) -> T,
        bits: fn(T) -> u64,
    ) {
        let (b1, b2, eps, step) = (T::of(0.1), T::of(0.999), T::of(1e-8), T::of(-1e-3));
        let zero = T::of(0.0);
        for n in [1, 15, 16, 17, 1000, 4099] {
            let a0: Vec<T> = values(n, 1).into_iter().map(cast).collect();
            let b: Vec<T> = values(n, 2).into_iter().map(cast).collect();
            let c: Vec<T> = values(n, 3).into_iter().map(|x| cast(x.abs())).collect();
            let moment = |m: &mut T, g: T| *m = ((g - *m) * b1 + zero) + *m;
            let param =
                |p: &mut T, m: T, v: T| *p = *p + ((m / (v.sqrt() * b2 + eps)) * step + zero);
            let scale = |x: &mut T| *x = *x * step;
            let run = |isa: Isa| {
                let (mut a, mut a3, mut a1) = (a0.clone(), a0.clone(), a0.clone());
                zip_chunk(isa, &mut a, &b, &moment);
                zip3_chunk(isa, &mut a3, &b, &c, &param);
                map_chunk(isa, &mut a1, &scale);
                (a, a3, a1)
            };
            let base = run(Isa::Baseline);
            for isa in [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .filter(|i| i.supported())
            {
                let got = run(isa);
                for (x, y) in [(&got.0, &base.0), (&got.1, &base.1), (&got.2, &base.2)] {
                    let differ = x.iter().zip(y).position(|(p, q)| bits(*p) != bits(*q));
                    assert_eq!(differ, None, "{isa:?}, length {n}");
                }
            }
        }
    }

    #[test]
    fn every_version_the_host_runs_equals_the_baseline_bitwise() {
        each_version_equals_the_baseline::<f32>(|x| x as f32, |x| x.to_bits() as u64);
        each_version_equals_the_baseline::<f64>(|x| x, f64::to_bits);
    }

    #[test]
    fn the_host_version_is_the_widest_it_supports() {
        let host = Isa::host();
        assert!(host.supported());
        if Isa::Avx512.supported() {
            assert_eq!(host, Isa::Avx512);
        } else if Isa::Avx2.supported() {
            assert_eq!(host, Isa::Avx2);
        }
    }
}

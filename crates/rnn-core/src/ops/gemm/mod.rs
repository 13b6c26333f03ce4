//! Matrix products on row-major slices, with explicit strides so per-step views and transposes
//! need no copies: faer's matmul for most products (about twice the `gemm` crate's rate, measured
//! on an AVX-512 CPU: 170 vs 80 GFLOP/s at 2048x1024x256, 2 threads); a cache-blocked f32 product
//! on this module's register-blocked kernel for the large weight gradients with a transposed left
//! side, where faer measured up to 2x slower on an AVX2 CPU; and [`PackedRhs`], the same kernel
//! (8x32 with AVX-512, 6x16 with AVX2+FMA, chosen at run time: [`KernelIsa`]) for the many small
//! products of a recurrence with one fixed right-hand matrix.

mod blocked;
mod matref;
mod packed;
mod product;
mod simd;

pub(crate) use matref::MatRef;
pub(crate) use packed::PackedRhs;
pub(crate) use product::{matmul, matmul_shared_lhs};

#[cfg(test)]
use {crate::ops::math::Float, blocked::*, product::SMALL_M, simd::*};

#[cfg(test)]
mod isa_tests;
#[cfg(test)]
mod tests;

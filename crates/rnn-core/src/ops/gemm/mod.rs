//! Matrix products on row-major slices, with explicit strides so per-step views and transposes
//! need no copies: faer's matmul for most products (faster than the `gemm` crate); a
//! cache-blocked f32 product on this module's register-blocked kernel for the large weight
//! gradients with a transposed left side, a layout faer handles poorly ([`blocked`]); and
//! [`PackedRhs`], the same kernel (8x32 with AVX-512, 6x16 with AVX2+FMA, or the portable path:
//! [`simd::KernelIsa`], chosen per shape class by measurement: [`calibrate`]) for the many small products of a recurrence with one fixed right-hand
//! matrix.

mod blocked;
pub(crate) mod calibrate;
mod matref;
mod packed;
mod product;
mod rowdot;
mod simd;

pub(crate) use matref::MatRef;
pub(crate) use packed::PackedRhs;
pub(crate) use product::{matmul, matmul_shared_lhs};
pub(crate) use rowdot::RowsRhs;
pub use simd::KernelIsa;

#[cfg(test)]
use {crate::ops::math::Float, blocked::*, product::SMALL_M};

#[cfg(test)]
mod calibrate_tests;
#[cfg(test)]
mod isa_tests;
#[cfg(test)]
mod tests;

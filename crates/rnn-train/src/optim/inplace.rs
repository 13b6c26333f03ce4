//! The storage plumbing shared by the in-place element-wise updates (the SGD step, the weight
//! average's step): Candle's `InplaceOp2` hands over raw storages and layouts.

use candle_core::{CpuStorage, Layout};

/// Runs `f32` or `f64` on the two storages' elements as contiguous slices (the first written in
/// place); an error naming `op` for non-contiguous layouts or other dtypes.
pub(crate) fn on_contiguous(
    op: &str,
    (s1, l1): (&mut CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f32: impl FnOnce(&mut [f32], &[f32]),
    f64: impl FnOnce(&mut [f64], &[f64]),
) -> candle_core::Result<()> {
    let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
    else {
        candle_core::bail!("{op}: contiguous layouts only");
    };
    match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => f32(&mut a[a0..a1], &b[b0..b1]),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => f64(&mut a[a0..a1], &b[b0..b1]),
        _ => candle_core::bail!("{op}: f32 or f64 only"),
    }
    Ok(())
}

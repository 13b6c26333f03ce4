//! Boundary checks: each error names the argument, what was expected and what was given.

use candle_core::{bail, Result, Tensor};

/// Fails unless `t` has exactly `expected` dims.
pub(crate) fn check_shape(what: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() != expected {
        bail!("{what}: expected shape {expected:?}, got {:?}", t.dims());
    }
    Ok(())
}

/// Fails unless `a` and `b` have the same dtype and live on the same device.
pub(crate) fn check_same_dtype_device(
    what_a: &str,
    a: &Tensor,
    what_b: &str,
    b: &Tensor,
) -> Result<()> {
    if a.dtype() != b.dtype() {
        bail!(
            "{what_a}: dtype {:?} does not match the dtype of {what_b} ({:?})",
            a.dtype(),
            b.dtype()
        );
    }
    if !a.device().same_device(b.device()) {
        bail!(
            "{what_a}: device {:?} does not match the device of {what_b} ({:?})",
            a.device().location(),
            b.device().location()
        );
    }
    Ok(())
}

/// Validates per-sequence lengths for a right-padded batch of `batch` sequences of `seq_len` steps.
pub(crate) fn check_lengths(lengths: &[usize], batch: usize, seq_len: usize) -> Result<()> {
    if lengths.is_empty() {
        bail!("lengths: empty, expected one length per batch row ({batch})");
    }
    if lengths.len() != batch {
        bail!(
            "lengths: expected one length per batch row ({batch}), got {} lengths",
            lengths.len()
        );
    }
    for (b, &len) in lengths.iter().enumerate() {
        if len == 0 {
            bail!("lengths[{b}] is 0: every sequence needs at least one step");
        }
        if len > seq_len {
            bail!("lengths[{b}] = {len} is longer than the padded sequence length {seq_len}");
        }
    }
    Ok(())
}

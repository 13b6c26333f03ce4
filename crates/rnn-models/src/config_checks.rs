//! Field checks shared by the configs' `validate`; each error starts with the config's name and
//! names the field and the value at fault.

use candle_core::Result;

use crate::common::invalid;

/// Fails on the first `(field, value)` of `fields` whose value is 0.
pub(crate) fn check_positive(owner: &str, fields: &[(&str, usize)]) -> Result<()> {
    match fields.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(invalid(owner, format!("{name} must be > 0, got 0"))),
        None => Ok(()),
    }
}

/// Checks a dropout probability field: `p` in `[0, 1)`.
pub(crate) fn check_dropout(owner: &str, field: &str, p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(invalid(
            owner,
            format!("{field} must be in [0, 1), got {p}"),
        ));
    }
    Ok(())
}

//! Serde helper for `f64` fields whose value must survive a JSON round trip bit for bit.
//!
//! serde_json (without its `float_roundtrip` feature, which this workspace does not enable)
//! parses about one in twelve 17-digit numbers one unit in the last place off, and it writes
//! non-finite values as `null`, which it cannot read back into an `f64`. A learning rate after a
//! cosine schedule or a "best so far" metric of `inf` would then not resume exactly. So a value is
//! written as a JSON number when serde_json reads that number back to the same bits (the common
//! case: `0.001`, `0.9`), and otherwise as a string in Rust's shortest round-trip notation
//! (`"7.345678901234567e-4"`, `"inf"`, `"NaN"`), which Rust's correctly rounded `str::parse`
//! reads back exactly. Reading accepts either form, so hand-written configs use plain numbers.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;

/// Writes `v` as a number when that round-trips through serde_json, else as a string.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if number_round_trips(*v) {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(&format!("{v:e}"))
    }
}

/// Reads a number, or a string holding a number, `inf`, `-inf` or `NaN`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(F64Visitor)
}

/// Whether serde_json reads its own rendering of `v` back to the same bits.
fn number_round_trips(v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    match serde_json::to_string(&v) {
        Ok(text) => {
            serde_json::from_str::<f64>(&text).is_ok_and(|back| back.to_bits() == v.to_bits())
        }
        Err(_) => false,
    }
}

struct F64Visitor;

impl Visitor<'_> for F64Visitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or a string holding a number, inf, -inf or NaN")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        v.trim()
            .parse::<f64>()
            .map_err(|_| E::custom(format!("expected a number, inf, -inf or NaN, got {v:?}")))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Holder {
        #[serde(with = "super")]
        x: f64,
    }

    fn round_trip(x: f64) -> f64 {
        let text = serde_json::to_string(&Holder { x }).unwrap();
        serde_json::from_str::<Holder>(&text).unwrap().x
    }

    #[test]
    fn values_survive_json_bit_for_bit() {
        // 0.0020796181086732758 is one that plain serde_json reads back one ulp off.
        let hard = 0.0020796181086732758_f64;
        assert_ne!(
            serde_json::from_str::<f64>(&serde_json::to_string(&hard).unwrap())
                .unwrap()
                .to_bits(),
            hard.to_bits(),
            "the case this helper exists for no longer fails in plain serde_json"
        );
        for x in [
            0.0,
            -0.0,
            0.001,
            0.9,
            1e-8,
            hard,
            f64::MIN_POSITIVE,
            1e300,
            -2.5,
        ] {
            assert_eq!(round_trip(x).to_bits(), x.to_bits(), "{x:e}");
        }
        assert_eq!(round_trip(f64::INFINITY), f64::INFINITY);
        assert_eq!(round_trip(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(round_trip(f64::NAN).is_nan());
    }

    #[test]
    fn short_values_are_plain_numbers_and_both_forms_read() {
        assert_eq!(
            serde_json::to_string(&Holder { x: 0.001 }).unwrap(),
            r#"{"x":0.001}"#
        );
        assert_eq!(
            serde_json::to_string(&Holder { x: f64::INFINITY }).unwrap(),
            r#"{"x":"inf"}"#
        );
        let h: Holder = serde_json::from_str(r#"{"x": 3}"#).unwrap();
        assert_eq!(h.x, 3.0);
        let h: Holder = serde_json::from_str(r#"{"x": "1e-3"}"#).unwrap();
        assert_eq!(h.x, 0.001);
        let err = serde_json::from_str::<Holder>(r#"{"x": "fast"}"#).unwrap_err();
        assert!(err.to_string().contains("\"fast\""), "{err}");
    }
}

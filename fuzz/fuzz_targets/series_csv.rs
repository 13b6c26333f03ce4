//! CSV series (the forecast task's `--data`): target `y`, features chosen by the first byte, and
//! each missing-value policy.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::{MissingPolicy, Series};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let missing = [
        MissingPolicy::Error,
        MissingPolicy::ForwardFill,
        MissingPolicy::Zero,
        MissingPolicy::DropRow,
    ][(pick & 3) as usize];
    let features: &[&str] = [&[][..], &["x"], &["x", "z"], &["y", "x"]][((pick >> 2) & 3) as usize];
    let path = Path::new("fuzz-series.csv");
    match Series::from_csv_bytes(path, data, "y", features, missing) {
        Ok(s) => {
            assert!(!s.is_empty());
            assert_eq!(s.columns[0], "y");
            for row in &s.values {
                assert_eq!(row.len(), s.columns.len());
                assert!(row.iter().all(|v| v.is_finite()));
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz-series.csv"),
    }
});

//! Labelled lines (`label<space or tab>text`, the classify task's `--data`), with and without a
//! list of allowed labels.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::parse_labelled;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-labelled.txt");
    let labels: Option<&[&str]> = if data.first().is_some_and(|b| b & 1 == 1) {
        Some(&["0", "1"])
    } else {
        None
    };
    match parse_labelled(path, data, labels) {
        Ok(rows) => {
            let mut last = 0;
            for r in rows {
                assert!(!r.label.is_empty() && !r.text.is_empty());
                assert!(r.line > last, "lines must increase");
                last = r.line;
                if let Some(allowed) = labels {
                    assert!(allowed.contains(&r.label.as_str()));
                }
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz-labelled.txt"),
    }
});

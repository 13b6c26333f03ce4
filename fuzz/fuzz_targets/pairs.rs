//! Tab-separated sequence pairs (the seq2seq task's `--data`); the columns come from the first
//! byte (0-3 each).
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::parse_pairs;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&cols, data)) = data.split_first() else {
        return;
    };
    let (source, target) = ((cols & 3) as usize, ((cols >> 2) & 3) as usize);
    let path = Path::new("fuzz-pairs.tsv");
    match parse_pairs(path, data, source, target) {
        Ok(pairs) => {
            for p in pairs {
                assert!(!p.source.is_empty() && !p.target.is_empty() && p.line >= 1);
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz-pairs.tsv"),
    }
});

//! Two-column CoNLL files (`token tag` per line, sentences separated by blank lines).
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::parse_conll;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.conll");
    match parse_conll(path, data) {
        Ok(sentences) => {
            assert!(!sentences.is_empty());
            for s in sentences {
                assert!(!s.tokens.is_empty() && s.tokens.len() == s.tags.len() && s.line >= 1);
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz.conll"),
    }
});

//! CoNLL-U files (the tag task's `--data`), with the tag column chosen by the first byte.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::parse_conllu;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let column = [None, Some("xpos"), Some("5"), Some("deprel"), Some("10")][pick as usize % 5];
    let path = Path::new("fuzz.conllu");
    match parse_conllu(path, data, column) {
        Ok(sentences) => {
            assert!(!sentences.is_empty());
            for s in sentences {
                assert!(!s.tokens.is_empty() && s.tokens.len() == s.tags.len() && s.line >= 1);
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz.conllu"),
    }
});

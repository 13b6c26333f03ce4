//! Text corpora (`--data` of the language-model tasks): UTF-8 decoding, char and word
//! tokenisation, and building a vocabulary from the tokens.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::{text_from_bytes, tokenize, Granularity, Vocab, EOS};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-corpus.txt");
    match text_from_bytes(path, data.to_vec()) {
        Ok(text) => {
            let chars = tokenize(&text, Granularity::Char);
            assert_eq!(chars.len(), text.chars().count());
            let words = tokenize(&text, Granularity::Word);
            assert!(words.last().is_none_or(|w| w == EOS));
            let vocab = Vocab::build(words.iter().map(String::as_str), 1, Some(64)).unwrap();
            assert!(vocab.len() <= 64);
            for w in &words {
                let id = vocab.id(w);
                assert!((id as usize) < vocab.len());
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz-corpus.txt"),
    }
});

//! `tokenizer.json` (`SubwordTokenizer::from_bytes`), then encoding and decoding a fixed text
//! with the loaded tokenizer, as `rnn sample`/`eval` would.
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::data::SubwordTokenizer;

fuzz_target!(init: {
    // libfuzzer-sys aborts on any panic, even one caught: restore the default hook so the
    // panics `SubwordTokenizer::from_bytes` catches from the tokenizers crate count as errors.
    let _ = std::panic::take_hook();
}, |data: &[u8]| {
    match SubwordTokenizer::from_bytes("fuzz-tokenizer.json", data) {
        Ok(tok) => {
            assert_eq!(tok.token_to_id("<eos>"), Some(3));
            if let Ok(ids) = tok.encode("the cat <eos> sat, caf\u{e9} 42") {
                let _ = tok.decode(&ids);
            }
            let _ = tok.decode(&[0, 1, 2, 3]);
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz-tokenizer.json"),
    }
});

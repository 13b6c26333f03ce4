//! `--config` files in JSON (`rnn::cli::options::Options::from_file`, then `validate`).
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn::cli::options::Options;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("fuzz-config.json", data);
    match Options::from_file(&path) {
        Ok(options) => {
            let _ = options.validate();
        }
        Err(e) => common::assert_names(&format!("{e:#}"), "fuzz-config.json"),
    }
});

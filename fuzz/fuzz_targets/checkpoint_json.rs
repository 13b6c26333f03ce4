//! A checkpoint's `state.json` (`checkpoint::parse_state`, format version check included) and
//! `config.json` (`checkpoint::parse_config`).
#![no_main]
#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rnn_train::checkpoint::{parse_config, parse_state, FORMAT_VERSION};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    match parse_state(Path::new("fuzz-state.json"), data) {
        Ok(state) => assert_eq!(state.format_version, FORMAT_VERSION),
        Err(e) => common::assert_names(&e.to_string(), "fuzz-state.json"),
    }
    if let Err(e) = parse_config(Path::new("fuzz-config.json"), data) {
        common::assert_names(&e.to_string(), "fuzz-config.json");
    }
});

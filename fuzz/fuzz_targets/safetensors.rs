//! A checkpoint's `model.safetensors` / `optimizer.safetensors`
//! (`checkpoint::parse_safetensors`), then reading every loaded tensor's values.
#![no_main]
#[path = "common.rs"]
mod common;

use candle_core::DType;
use libfuzzer_sys::fuzz_target;
use rnn_train::checkpoint::parse_safetensors;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    match parse_safetensors(
        Path::new("fuzz-model.safetensors"),
        data,
        &candle_core::Device::Cpu,
    ) {
        Ok(tensors) => {
            for t in tensors.values() {
                if let Ok(flat) = t.flatten_all().and_then(|f| f.to_dtype(DType::F64)) {
                    let v = flat.to_vec1::<f64>().unwrap();
                    assert_eq!(v.len(), t.elem_count());
                }
            }
        }
        Err(e) => common::assert_names(&e.to_string(), "fuzz-model.safetensors"),
    }
});

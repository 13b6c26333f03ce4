//! What the hand-timed benches share: the `rnn` binary's process settings, medians, and
//! PyTorch's twin run in the same process tree.
// Each bench uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;

/// As the `rnn` binary: Candle's element-wise ops on the calling thread (unless
/// `CANDLE_NUM_THREADS` says otherwise), freed buffers kept in the heap (benches/README.md).
/// `RNN_BENCH_DEFAULT_MALLOC=1` leaves glibc's defaults.
pub fn as_the_binary() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RNN_BENCH_DEFAULT_MALLOC").is_none() {
        rnn::rnn_core::device::keep_freed_memory();
    }
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// PyTorch's median ms per case, by case name: `TORCH_PY ARGS...` (a script and its arguments),
/// with as many OpenMP threads as Rayon has, printing one JSON line `{"case": .., "ms": ..}`
/// per case. Empty when `TORCH_PY` is not set.
pub fn torch_times(args: &[String]) -> HashMap<String, f64> {
    let Ok(py) = std::env::var("TORCH_PY") else {
        return HashMap::new();
    };
    let out = std::process::Command::new(py)
        .args(args)
        .env("OMP_NUM_THREADS", rayon::current_num_threads().to_string())
        .output()
        .expect("running PyTorch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (
                v["case"].as_str().expect("a case name").to_string(),
                v["ms"].as_f64().expect("a time in ms"),
            )
        })
        .collect()
}

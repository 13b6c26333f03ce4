//! `rnn bench`'s workloads run for every implementation and report sane numbers; candle-nn's
//! missing cells are refused with a clear error.
#![cfg(feature = "cli")]

mod common;

use candle_core::{DType, Device};
use rnn::bench::{BenchImpl, BenchSpec, Workload};
use rnn_core::Mode;

fn spec(cell: Mode, implementation: BenchImpl, train: bool, bidirectional: bool) -> BenchSpec {
    BenchSpec {
        cell,
        batch: 3,
        seq_len: 5,
        input: 4,
        hidden: 6,
        layers: 2,
        bidirectional,
        train,
        implementation,
        iters: 3,
        min_time_s: 0.0,
        dtype: DType::F32,
        masks: Default::default(),
        layer_norm: false,
    }
}

#[test]
fn every_implementation_runs_train_and_infer() {
    for implementation in [BenchImpl::Fused, BenchImpl::Composed, BenchImpl::CandleNn] {
        for cell in [Mode::Lstm, Mode::Gru] {
            for train in [false, true] {
                for bidirectional in [false, true] {
                    let s = spec(cell, implementation, train, bidirectional);
                    let r = Workload::new(&s, &Device::Cpu).unwrap().measure().unwrap();
                    assert_eq!(r.iters, 3);
                    assert!(r.min_ms > 0.0 && r.min_ms <= r.median_ms, "{r:?}");
                    assert_eq!(r.mode, if train { "train" } else { "infer" });
                }
            }
        }
    }
}

/// Half precision runs through the composed twin and candle-nn (the fused op is f32/f64 only).
#[test]
fn half_precision_runs_composed_and_candle_nn() {
    for dtype in [DType::BF16, DType::F16] {
        for implementation in [BenchImpl::Composed, BenchImpl::CandleNn] {
            let mut s = spec(Mode::Gru, implementation, true, false);
            s.dtype = dtype;
            let r = Workload::new(&s, &Device::Cpu).unwrap().measure().unwrap();
            assert!(r.min_ms > 0.0 && r.min_ms <= r.median_ms, "{r:?}");
        }
        let mut s = spec(Mode::Lstm, BenchImpl::Fused, false, false);
        s.dtype = dtype;
        let err = Workload::new(&s, &Device::Cpu)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("--impl fused runs f32 or f64"), "{err}");
    }
}

#[test]
fn candle_nn_has_no_vanilla_rnn() {
    let s = spec(Mode::RnnTanh, BenchImpl::CandleNn, true, false);
    let err = Workload::new(&s, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("candle-nn has no rnn-tanh"), "{err}");
}

#[test]
fn zero_sizes_are_refused() {
    let mut s = spec(Mode::Lstm, BenchImpl::Fused, true, false);
    s.hidden = 0;
    let err = Workload::new(&s, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("must all be > 0"), "{err}");
}

/// The fused run reports the kernels its products used (the composed path, which uses none,
/// is checked in a process of its own below: uses are counted per process).
#[test]
fn fused_runs_report_their_kernels() {
    let r = Workload::new(
        &spec(Mode::Lstm, BenchImpl::Fused, true, false),
        &Device::Cpu,
    )
    .unwrap()
    .measure()
    .unwrap();
    assert!(!r.kernels.is_empty(), "{r:?}");
    let supported: Vec<String> = rnn_core::kernels::supported()
        .iter()
        .map(|k| k.to_string())
        .collect();
    for k in r.kernel.split('+') {
        assert!(supported.iter().any(|s| s == k), "{r:?}");
    }
}

/// `RNN_KERNEL` pins the kernel of every product (each kernel this CPU runs), `rnn bench`
/// reports it with the thread count (JSON and text), and a kernel the CPU lacks or a typo is a
/// warning, then measurement.
#[test]
fn rnn_kernel_is_obeyed_and_reported_by_rnn_bench() {
    let bench = |kernel: &str, json: bool| {
        let mut cmd = std::process::Command::new(common::rnn_bin());
        cmd.args([
            "bench",
            "--batch",
            "8",
            "--seq-len",
            "4",
            "--input-size",
            "16",
        ])
        .args(["--hidden-size", "16", "--iters", "2"])
        .env("RNN_KERNEL", kernel);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    for kernel in rnn_core::kernels::supported() {
        let (stdout, _) = bench(kernel.name(), true);
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["kernel"], kernel.name(), "{stdout}");
        assert!(v["threads"].as_u64().unwrap() >= 1, "{stdout}");
        let classes = v["kernels"].as_array().unwrap();
        assert!(!classes.is_empty(), "{stdout}");
        assert!(
            classes.iter().all(|c| c["kernel"] == kernel.name()),
            "{stdout}"
        );
        let (text, _) = bench(kernel.name(), false);
        assert!(
            text.contains(&format!("threads, kernel {kernel})")),
            "{text}"
        );
    }
    let (stdout, _) = bench("auto", true);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_ne!(v["kernel"], "none", "{stdout}");
    let mut cmd = std::process::Command::new(common::rnn_bin());
    let out = cmd
        .args([
            "bench",
            "--impl",
            "composed",
            "--batch",
            "2",
            "--seq-len",
            "3",
            "--json",
        ])
        .args(["--input-size", "4", "--hidden-size", "4", "--iters", "1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kernel"], "none", "{v}");
    for (value, says) in [("sse9", "is not one of"), ("avx512", "cannot run")] {
        let lacks = value == "sse9" || !rnn_core::kernels::Kernel::Avx512.runs_here();
        if !lacks {
            continue;
        }
        let (stdout, stderr) = bench(value, true);
        assert!(
            stderr.contains(&format!("RNN_KERNEL={value}")) && stderr.contains(says),
            "{stderr}"
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_ne!(v["kernel"], "none", "{stdout}");
    }
}

#[test]
fn layer_norm_runs_fused_and_composed_and_candle_nn_refuses_it() {
    for implementation in [BenchImpl::Fused, BenchImpl::Composed] {
        for cell in [Mode::Lstm, Mode::Gru] {
            for train in [false, true] {
                let mut s = spec(cell, implementation, train, true);
                s.layer_norm = true;
                let r = Workload::new(&s, &Device::Cpu).unwrap().measure().unwrap();
                assert!(r.layer_norm);
                assert!(r.min_ms > 0.0 && r.min_ms <= r.median_ms, "{r:?}");
            }
        }
    }
    let mut s = spec(Mode::Lstm, BenchImpl::CandleNn, true, false);
    s.layer_norm = true;
    let err = Workload::new(&s, &Device::Cpu)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("--layer-norm") && err.contains("candle-nn"),
        "{err}"
    );
}

#[test]
fn min_time_adds_timed_iterations_until_it_has_passed() {
    let mut s = spec(Mode::Lstm, BenchImpl::Fused, false, false);
    s.iters = 2;
    s.min_time_s = 0.3;
    let start = std::time::Instant::now();
    let r = Workload::new(&s, &Device::Cpu).unwrap().measure().unwrap();
    // At least 0.3 s of timed iterations, each far shorter than that. (The warm-up's 0.25 s is
    // not counted on: it stops at `WARMUP_MAX_ITERS` iterations, which a workload this small can
    // run in less, as it did on a CI host.)
    let elapsed = start.elapsed().as_secs_f64();
    assert!(elapsed >= 0.3, "{elapsed} s");
    assert!(r.iters > 2, "{r:?}");
    // Without it, exactly `iters`.
    s.min_time_s = 0.0;
    let r = Workload::new(&s, &Device::Cpu).unwrap().measure().unwrap();
    assert_eq!(r.iters, 2);
}

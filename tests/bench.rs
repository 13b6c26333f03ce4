//! `rnn bench`'s workloads run for every implementation and report sane numbers; candle-nn's
//! missing cells are refused with a clear error.
#![cfg(feature = "cli")]

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
        dtype: DType::F32,
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

//! Criterion benches of one LSTM/GRU/RNN layer, train and infer, fused vs composed vs candle-nn.
//! `cargo bench --bench recurrence` (add `-- lstm` to filter). `rnn bench` times single shapes;
//! `benches/README.md` has the side-by-side table with PyTorch.

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, Criterion};
use rnn::bench::{BenchImpl, BenchSpec, Workload};
use rnn_core::Mode;

fn bench_layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("recurrence");
    group.sample_size(10);
    let shapes = [(32usize, 64usize, 256usize, 256usize), (1, 100, 64, 128)];
    for (batch, seq_len, input, hidden) in shapes {
        for cell in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
            for train in [false, true] {
                for implementation in [BenchImpl::Fused, BenchImpl::Composed, BenchImpl::CandleNn] {
                    if implementation == BenchImpl::CandleNn && cell == Mode::RnnTanh {
                        continue;
                    }
                    let spec = BenchSpec {
                        cell,
                        batch,
                        seq_len,
                        input,
                        hidden,
                        layers: 1,
                        bidirectional: false,
                        train,
                        implementation,
                        iters: 1,
                        min_time_s: 0.0,
                        dtype: DType::F32,
                        masks: Default::default(),
                        layer_norm: false,
                    };
                    let name = format!(
                        "{cell}/{}/B{batch}_T{seq_len}_I{input}_H{hidden}/{implementation:?}",
                        if train { "train" } else { "infer" }
                    );
                    let mut w = Workload::new(&spec, &Device::Cpu).expect("workload");
                    group.bench_function(name, |b| b.iter(|| w.iterate().expect("iteration")));
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_layers);
criterion_main!(benches);

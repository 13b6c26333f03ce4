//! Criterion benches of one optimiser step over the default char-LM's parameter shapes (AdamW,
//! its default) and the default word-LM's (plain SGD), in place against the composed Candle
//! ops. `cargo bench --bench optim_step`; results in `benches/README.md`.

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use rnn::train::optim::{AdamWConfig, SgdConfig, StatefulOptimizer, TorchAdamW, TorchSgd};

/// The parameter shapes of a two-layer LSTM language model: embedding, the layers' weights and
/// biases, the decoder.
fn lm_shapes(vocab: usize, embedding: usize, hidden: usize) -> Vec<Vec<usize>> {
    let mut shapes = vec![vec![vocab, embedding]];
    for input in [embedding, hidden] {
        shapes.extend([
            vec![4 * hidden, input],
            vec![4 * hidden, hidden],
            vec![4 * hidden],
            vec![4 * hidden],
        ]);
    }
    shapes.extend([vec![vocab, hidden], vec![vocab]]);
    shapes
}

fn bench_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("optim_step");
    group.sample_size(20);
    let dev = Device::Cpu;
    // char-LM: 65 characters, 256 embedding and hidden; word-LM (Zaremba small): 10k words, 200.
    for (model, shapes) in [
        ("char-lm", lm_shapes(65, 256, 256)),
        ("word-lm", lm_shapes(10_000, 200, 200)),
    ] {
        let params: Vec<(String, Var)> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = Tensor::randn(0f32, 0.1, s.as_slice(), &dev).expect("randn");
                (format!("p{i}"), Var::from_tensor(&t).expect("var"))
            })
            .collect();
        // Gradients: d(sum(p * c))/dp = c, fixed across steps.
        let mut loss = Tensor::zeros((), DType::F32, &dev).expect("zeros");
        for (_, p) in &params {
            let c = Tensor::randn(0f32, 1.0, p.shape(), &dev).expect("randn");
            loss = (loss + (p.as_tensor() * c).expect("mul").sum_all().expect("sum")).expect("add");
        }
        let grads = loss.backward().expect("backward");
        for in_place in [true, false] {
            let path = if in_place { "in_place" } else { "composed" };
            let mut adamw =
                TorchAdamW::new(params.clone(), AdamWConfig::with_lr(1e-6)).expect("adamw");
            adamw.set_in_place(in_place);
            group.bench_function(format!("{model}/adamw/{path}"), |b| {
                b.iter(|| adamw.step(&grads).expect("step"))
            });
            let mut sgd = TorchSgd::new(
                params.clone(),
                SgdConfig {
                    lr: 1e-6,
                    ..SgdConfig::default()
                },
            )
            .expect("sgd");
            sgd.set_in_place(in_place);
            group.bench_function(format!("{model}/sgd/{path}"), |b| {
                b.iter(|| sgd.step(&grads).expect("step"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_steps);
criterion_main!(benches);

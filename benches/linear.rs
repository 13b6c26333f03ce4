//! `rnn_core::linear::Linear` (the fused CPU op) against candle-nn's `Linear` (its composed
//! twin), forward and backward, on the shapes of the small layers of RESULTS.md's models: the
//! translation model's attention key and combination layers and its bridge, a classifier's
//! attention pooling, the generator's context projection; and the word-LM's output layer as a
//! plain layer under a loss of Candle ops (where a user's own LM would have it). Interleaved, one iteration of each
//! in turn, the median of each; ms per forward + backward (`sum(y * g)`, gradients of the input,
//! the weight and the bias). With `TORCH_PY=/path/to/python`, PyTorch's `nn.Linear` on the same
//! shapes too (`benches/linear_torch.py`, run after ours). `cargo bench --bench linear`; results
//! in `benches/README.md`.

mod common;

use std::time::Instant;

use candle_core::{Device, Module, Tensor, Var};
use rnn::rnn_core::linear::Linear;
use rnn::rnn_core::Implementation;

const ITERS: usize = 60;
const WARMUP: usize = 5;

fn main() {
    common::as_the_binary();
    let dev = Device::Cpu;
    let cases: [(&str, &[usize], usize, usize, bool); 6] = [
        ("seq2seq attention key", &[64, 8], 512, 256, false),
        ("seq2seq combination", &[64, 9], 768, 256, true),
        ("seq2seq bridge", &[64], 512, 256, true),
        ("classifier attention pooling", &[32, 200], 256, 128, true),
        ("word-LM-sized square", &[20, 35], 650, 650, true),
        ("word-LM decoder", &[20, 20], 200, 10000, true),
    ];
    // PyTorch's median ms per case, when TORCH_PY names a Python with torch.
    let torch = common::torch_times(&[
        "benches/linear_torch.py".into(),
        ITERS.to_string(),
        WARMUP.to_string(),
    ]);
    println!("case (rows x in -> out): candle-nn ms, ours ms, ours / candle-nn[, PyTorch ms, ours / PyTorch]");
    // `LINEAR_CASE=word` runs only the cases whose name contains "word" (e.g. under perf).
    let only = std::env::var("LINEAR_CASE").unwrap_or_default();
    for (name, lead, inputs, outputs, bias) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let mut x_dims = lead.to_vec();
        x_dims.push(inputs);
        let mut y_dims = lead.to_vec();
        y_dims.push(outputs);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, x_dims, &dev).unwrap()).unwrap();
        let w =
            Var::from_tensor(&Tensor::randn(0f32, 0.05, (outputs, inputs), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.05, outputs, &dev).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, y_dims, &dev).unwrap();
        let layer = |imp| {
            Linear::new(w.as_tensor().clone(), bias.then(|| b.as_tensor().clone()))
                .with_implementation(imp)
        };
        let layers = [
            layer(Implementation::Composed),
            layer(Implementation::Fused),
        ];
        let mut times = [Vec::new(), Vec::new()];
        for it in 0..WARMUP + ITERS {
            for (layer, times) in layers.iter().zip(times.iter_mut()) {
                let t0 = Instant::now();
                let y = layer.forward(&x).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                grads
                    .get(&w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                if it >= WARMUP {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let [composed, fused] = times.map(common::median);
        let rows: usize = lead.iter().product();
        let vs_torch = torch
            .get(name)
            .map(|t| format!(", {t:.3}, {:.2}x", fused / t))
            .unwrap_or_default();
        println!(
            "{name} ({rows} x {inputs} -> {outputs}): {composed:.3}, {fused:.3}, {:.2}x{vs_torch}",
            fused / composed
        );
    }
}

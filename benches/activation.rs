//! `rnn_core::activation::{tanh, sigmoid}` (the fused CPU ops) against Candle's `Tensor::tanh`
//! and candle-nn's `ops::sigmoid` (their composed twins), forward and backward, on the tensors
//! the models apply `tanh` to: the classifier's attention pooling, the translation model's
//! combination layer and its additive attention. Interleaved, one iteration of each in turn,
//! the median of each; ms per forward + backward (`sum(f(x) * g)`, the input's gradient). With
//! `TORCH_PY=/path/to/python`, `torch.tanh` and `torch.sigmoid` on the same shapes too (run after
//! ours, same threads). `cargo bench --bench activation`; results
//! in `benches/README.md`.

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rnn::rnn_core::activation::{sigmoid_with, tanh_with};
use rnn::rnn_core::Implementation;

const ITERS: usize = 100;
const WARMUP: usize = 10;

const CASES: [(&str, &[usize]); 3] = [
    ("classifier attention pooling", &[32, 200, 128]),
    ("seq2seq combination", &[64, 9, 256]),
    ("seq2seq additive attention", &[64, 9, 8, 256]),
];

/// PyTorch's median ms per case: the same loop in `torch.tanh`.
const TORCH: &str = r#"
import json, statistics, sys, time, torch
iters, warmup = int(sys.argv[1]), int(sys.argv[2])
for fn in ("tanh", "sigmoid"):
  for name, dims in json.loads(sys.argv[3]):
    f = getattr(torch, fn)
    x = torch.randn(*dims, requires_grad=True)
    g = torch.randn(*dims)
    times = []
    for it in range(warmup + iters):
        x.grad = None
        t0 = time.perf_counter()
        (f(x) * g).sum().backward()
        float(x.grad[0].sum())
        if it >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"case": f"{fn} {name}", "ms": statistics.median(times)}))
"#;

fn main() {
    common::as_the_binary();
    let cases: Vec<(&str, &[usize])> = CASES.to_vec();
    let torch = common::torch_times(&[
        "-c".into(),
        TORCH.into(),
        ITERS.to_string(),
        WARMUP.to_string(),
        serde_json::to_string(&cases).unwrap(),
    ]);
    println!(
        "function, case (dims): Candle ms, ours ms, ours / Candle[, PyTorch ms, ours / PyTorch]"
    );
    let dev = Device::Cpu;
    type Function = fn(&Tensor, Implementation) -> candle_core::Result<Tensor>;
    let functions: [(&str, Function); 2] = [("tanh", tanh_with), ("sigmoid", sigmoid_with)];
    for ((function, f), (name, dims)) in functions
        .iter()
        .flat_map(|f| CASES.iter().map(move |c| (f, c)))
    {
        let name = format!("{function} {name}");
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.5, *dims, &dev).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, *dims, &dev).unwrap();
        let imps = [Implementation::Composed, Implementation::Fused];
        let mut times = [Vec::new(), Vec::new()];
        for it in 0..WARMUP + ITERS {
            for (imp, times) in imps.iter().zip(times.iter_mut()) {
                let t0 = Instant::now();
                let y = f(&x, *imp).unwrap();
                let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                grads.get(&x).unwrap().get(0).unwrap().sum_all().unwrap();
                if it >= WARMUP {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let [candle, fused] = times.map(common::median);
        let vs_torch = torch
            .get(&name)
            .map(|t| format!(", {t:.3}, {:.2}x", fused / t))
            .unwrap_or_default();
        println!(
            "{name} ({dims:?}): {candle:.3}, {fused:.3}, {:.2}x{vs_torch}",
            fused / candle
        );
    }
}

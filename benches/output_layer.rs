//! The language models' output layer and loss in one step: `rnn_core::loss::
//! linear_cross_entropy_sum_with` (the fused CPU op: one GEMM for the logits, a pass per row,
//! three GEMMs backward) against its composed twin (Candle's matmul, log-softmax and gather) and
//! PyTorch's `F.cross_entropy(F.linear(x, W, b), t, reduction="sum")`, forward and backward
//! (the gradients of the input, the weight and the bias), on the default word-LM's sizes (400
//! positions x 200 features -> 10,000 words) and the char-LM's. This is where the word-LM's
//! training step spends most of its time: two thirds of its multiply-adds. Interleaved, medians,
//! ms; with `TORCH_PY=/path/to/python`, PyTorch after ours on the same threads. `cargo bench
//! --bench output_layer`; results in `benches/README.md`.

mod common;

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rnn::rnn_core::loss::linear_cross_entropy_sum_with;
use rnn::rnn_core::Implementation;

const ITERS: usize = 30;
const WARMUP: usize = 5;

/// name, positions, features, classes
const CASES: [(&str, usize, usize, usize); 2] = [
    ("word-LM decoder", 400, 200, 10000),
    ("char-LM decoder", 3200, 256, 65),
];

const TORCH: &str = r#"
import json, statistics, sys, time, torch
import torch.nn.functional as F
iters, warmup = int(sys.argv[1]), int(sys.argv[2])
for name, n, h, v in json.loads(sys.argv[3]):
    x = torch.randn(n, h, requires_grad=True)
    w = (torch.randn(v, h) * 0.05).requires_grad_()
    b = (torch.randn(v) * 0.05).requires_grad_()
    t = torch.randint(0, v, (n,))
    times = []
    for it in range(warmup + iters):
        x.grad = w.grad = b.grad = None
        t0 = time.perf_counter()
        F.cross_entropy(F.linear(x, w, b), t, reduction="sum").backward()
        float(w.grad[0, 0])
        if it >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"case": name, "ms": statistics.median(times)}))
"#;

fn main() {
    common::as_the_binary();
    let only = std::env::var("OUTPUT_CASE").unwrap_or_default();
    let cases: Vec<_> = CASES
        .iter()
        .filter(|c| c.0.contains(only.as_str()))
        .collect();
    let torch = common::torch_times(&[
        "-c".into(),
        TORCH.into(),
        ITERS.to_string(),
        WARMUP.to_string(),
        serde_json::to_string(&cases).unwrap(),
    ]);
    println!("case (positions x features -> classes): composed ms, fused ms, fused / composed, GFLOP/s fused[, PyTorch ms, fused / PyTorch]");
    let dev = Device::Cpu;
    for &&(name, n, h, v) in &cases {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, h), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.05, (v, h), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.05, v, &dev).unwrap()).unwrap();
        let t = Tensor::rand(0f32, v as f32, n, &dev)
            .unwrap()
            .to_dtype(DType::U32)
            .unwrap();
        let imps = [Implementation::Composed, Implementation::Fused];
        let mut times = [Vec::new(), Vec::new()];
        for it in 0..WARMUP + ITERS {
            for (imp, times) in imps.iter().zip(times.iter_mut()) {
                let t0 = Instant::now();
                let loss = linear_cross_entropy_sum_with(&x, &w, Some(&b), &t, None, *imp).unwrap();
                let grads = loss.sum.backward().unwrap();
                grads.get(&w).unwrap().get(0).unwrap().sum_all().unwrap();
                if it >= WARMUP {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let [composed, fused] = times.map(common::median);
        let gflops = 3.0 * 2.0 * (n * h * v) as f64 / fused / 1e6;
        let vs_torch = torch
            .get(name)
            .map(|t| format!(", {t:.2}, {:.2}x", fused / t))
            .unwrap_or_default();
        println!(
            "{name} ({n} x {h} -> {v}): {composed:.2}, {fused:.2}, {:.2}x, {gflops:.0}{vs_torch}",
            fused / composed
        );
    }
}

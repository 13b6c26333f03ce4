//! `rnn_core::activation::{tanh, sigmoid}` (the fused CPU ops) against Candle's `Tensor::tanh`
//! and candle-nn's `ops::sigmoid` (their composed twins), forward and backward, on the tensors
//! the models apply `tanh` to: the classifier's attention pooling, the translation model's
//! combination layer and its additive attention. Interleaved, one iteration of each in turn,
//! the median of each; ms per forward + backward (`sum(f(x) * g)`, the input's gradient). With
//! `TORCH_PY=/path/to/python`, `torch.tanh` and `torch.sigmoid` on the same shapes too (run after
//! ours, same threads). `cargo bench --bench activation`; results
//! in `benches/README.md`.

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // As the `rnn` binary: Candle's element-wise ops on the calling thread, freed buffers kept
    // in the heap (benches/README.md).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    rnn::rnn_core::device::keep_freed_memory();
    let torch: std::collections::HashMap<String, f64> = match std::env::var("TORCH_PY") {
        Ok(py) => {
            let cases: Vec<(&str, &[usize])> = CASES.to_vec();
            let out = std::process::Command::new(py)
                .args(["-c", TORCH, &ITERS.to_string(), &WARMUP.to_string()])
                .arg(serde_json::to_string(&cases).unwrap())
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
                        v["case"].as_str().unwrap().into(),
                        v["ms"].as_f64().unwrap(),
                    )
                })
                .collect()
        }
        Err(_) => Default::default(),
    };
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
        let [candle, fused] = times.map(median);
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

#!/usr/bin/env python3
"""PyTorch timing of one recurrent layer, the counterpart of `rnn bench` on the same device.

Embedded in the `rnn` binary (`rnn bench --devices ... --pytorch PYTHON` runs it as
`PYTHON -c <this file> ARGS`); it also runs on its own:

    python benches/torch_bench.py --cell lstm --batch 32 --seq-len 64 --input 256 --hidden 256 \
        --mode train --iters 20 --device cuda:0

A train iteration = zero_grad, forward over the whole batch, (y*y).mean().backward();
an infer iteration = forward under inference_mode and float(y.sum()) (as
torch_rnn_bench.py and `rnn bench`). Warm-up iterations (at least two, and at least
--warmup-s seconds of them, at most --warmup-max), then the median of --iters timed ones, more
while they took less than --min-time-s in all (at most --max-iters); `rnn bench` passes its own
rules, so both sides warm up and time alike.
Prints one JSON line: median_ms, min_ms, torch (version), threads, device, device_name,
backend (which kernels run the layer), tf32 (in effect on CUDA; null elsewhere).
"""
import argparse
import json
import re
import statistics
import sys
import time

p = argparse.ArgumentParser(prog="torch_bench.py", description=__doc__.splitlines()[0])
p.add_argument("--cell", required=True, choices=["lstm", "gru", "rnn-tanh", "rnn-relu"])
p.add_argument("--batch", type=int, required=True)
p.add_argument("--seq-len", type=int, required=True)
p.add_argument("--input", type=int, required=True)
p.add_argument("--hidden", type=int, required=True)
p.add_argument("--layers", type=int, default=1)
p.add_argument("--bidirectional", action="store_true")
p.add_argument("--warmup-s", type=float, default=0.0)
p.add_argument("--warmup-max", type=int, default=10000)
p.add_argument("--mode", required=True, choices=["train", "infer"])
p.add_argument("--iters", type=int, default=20)
p.add_argument("--min-time-s", type=float, default=0.0,
               help="time more than --iters iterations while they took less than this in all")
p.add_argument("--max-iters", type=int, default=100000,
               help="the most timed iterations --min-time-s adds")
p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
p.add_argument("--dtype", default="f32", choices=["f32", "f64", "bf16", "f16"])
p.add_argument("--tf32", default="off", choices=["on", "off"],
               help="TF32 in CUDA f32 matrix products and cuDNN (default off, as Candle)")
args = p.parse_args()

# Imported after parsing so that --help and argument errors need no PyTorch.
try:
    import torch
except ImportError as e:
    sys.exit(f"PyTorch is not installed for {sys.executable}: {e}")

dev = torch.device(args.device)
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"this PyTorch ({torch.__version__}) has no usable CUDA device")
if dev.type == "mps" and not torch.backends.mps.is_available():
    sys.exit(f"this PyTorch ({torch.__version__}) has no usable MPS device")
dtype = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16,
         "f16": torch.float16}[args.dtype]
tf32 = args.tf32 == "on"
torch.backends.cuda.matmul.allow_tf32 = tf32
torch.backends.cudnn.allow_tf32 = tf32
torch.manual_seed(0)

kw = dict(num_layers=args.layers, bidirectional=args.bidirectional, batch_first=True)
if args.cell == "lstm":
    m = torch.nn.LSTM(args.input, args.hidden, **kw)
elif args.cell == "gru":
    m = torch.nn.GRU(args.input, args.hidden, **kw)
else:
    m = torch.nn.RNN(args.input, args.hidden, nonlinearity=args.cell[4:], **kw)
m = m.to(device=dev, dtype=dtype)
x = torch.randn(args.batch, args.seq_len, args.input, device=dev, dtype=dtype)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def step():
    if args.mode == "train":
        m.zero_grad(set_to_none=True)
        y, _ = m(x)
        (y * y).mean().backward()
    else:
        with torch.inference_mode():
            y, _ = m(x)
            float(y.sum())


def cpu_backend():
    """The kernels PyTorch's CPU dispatch picks (aten/src/ATen/native/RNN.cpp, `use_mkldnn`):
    oneDNN for LSTM in f32/bf16 (f16 only without autograd), ATen's own cells otherwise."""
    config = torch.__config__.show()
    onednn = re.search(r"(?:oneDNN|MKL-DNN|MKLDNN)\D*(\d+(?:\.\d+)+)", config)
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkldnn_on = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    dtype_ok = dtype in (torch.float32, torch.bfloat16) or (
        dtype == torch.float16 and args.mode == "infer")
    if args.cell == "lstm" and mkldnn_on and dtype_ok:
        return "oneDNN" + (f" v{onednn.group(1)}" if onednn else "")
    return "ATen CPU cells" + (f" (BLAS {blas.group(1)})" if blas else "")


if dev.type == "cuda":
    v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    backend = f"cuDNN {v}" if v and torch.backends.cudnn.enabled else "CUDA without cuDNN"
    device_name = torch.cuda.get_device_name(dev)
elif dev.type == "mps":
    backend, device_name = "MPS", "Apple GPU"
else:
    backend, device_name = cpu_backend(), "cpu"

warm, n = time.perf_counter(), 0
while n < 2 or (time.perf_counter() - warm < args.warmup_s and n < args.warmup_max):
    step()
    sync()
    n += 1
times = []
timed = time.perf_counter()
while len(times) < max(args.iters, 1) or (
    time.perf_counter() - timed < args.min_time_s and len(times) < args.max_iters
):
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    times.append((time.perf_counter() - t0) * 1e3)

print(json.dumps({
    "median_ms": statistics.median(times),
    "min_ms": min(times),
    "iters": len(times),
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "device": str(dev),
    "device_name": device_name,
    "backend": backend,
    # TF32 only changes CUDA kernels; elsewhere nothing is in effect.
    "tf32": (torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32)
    if dev.type == "cuda" else None,
    "cell": args.cell, "mode": args.mode, "batch": args.batch, "seq_len": args.seq_len,
    "input": args.input, "hidden": args.hidden, "layers": args.layers,
    "bidirectional": args.bidirectional, "dtype": args.dtype,
}))

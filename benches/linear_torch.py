#!/usr/bin/env python3
"""PyTorch twin of `benches/linear.rs`: `nn.Linear` forward and backward (`sum(y * g)`, the
gradients of the input, the weight and the bias) on the same shapes, the median ms of ITERS
iterations after WARMUP. usage: linear_torch.py [ITERS] [WARMUP]; prints one JSON line per
case: {"case": ..., "ms": ...}. `cargo bench --bench linear` runs it with TORCH_PY set."""
import json
import statistics
import sys
import time

import torch

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 60
warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CASES = [  # name, leading dims, in, out, bias: as benches/linear.rs
    ("seq2seq attention key", (64, 8), 512, 256, False),
    ("seq2seq combination", (64, 9), 768, 256, True),
    ("seq2seq bridge", (64,), 512, 256, True),
    ("classifier attention pooling", (32, 200), 256, 128, True),
    ("word-LM-sized square", (20, 35), 650, 650, True),
    ("word-LM decoder", (20, 20), 200, 10000, True),
]
for name, lead, i, o, bias in CASES:
    layer = torch.nn.Linear(i, o, bias=bias)
    x = torch.randn(*lead, i, requires_grad=True)
    g = torch.randn(*lead, o)
    times = []
    for it in range(warmup + iters):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        t0 = time.perf_counter()
        (layer(x) * g).sum().backward()
        float(layer.weight.grad.sum())
        if it >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"case": name, "ms": statistics.median(times),
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))

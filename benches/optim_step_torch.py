"""PyTorch's twin of benches/optim_step.rs: one optimiser step over the default char-LM's and
word-LM's parameter shapes, AdamW and plain SGD, with PyTorch's default (foreach) and
single-tensor implementations. Prints one line per case: the median ms of the timed steps.
Usage: python benches/optim_step_torch.py [--threads 2] [--steps 200]"""
import argparse
import statistics
import time

import torch


def lm_shapes(vocab, embedding, hidden):
    shapes = [(vocab, embedding)]
    for inp in (embedding, hidden):
        shapes += [(4 * hidden, inp), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,)]
    return shapes + [(vocab, hidden), (vocab,)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for model, shapes in (("char-lm", lm_shapes(65, 256, 256)), ("word-lm", lm_shapes(10_000, 200, 200))):
        for name, make in (
            ("adamw", lambda p, fe: torch.optim.AdamW(p, lr=1e-6, foreach=fe)),
            ("sgd", lambda p, fe: torch.optim.SGD(p, lr=1e-6, foreach=fe)),
        ):
            for foreach in (True, False):
                params = [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
                for p in params:
                    p.grad = torch.randn(p.shape)
                opt = make(params, foreach)
                for _ in range(20):
                    opt.step()
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    opt.step()
                    times.append((time.perf_counter() - t0) * 1e3)
                path = "foreach" if foreach else "single-tensor"
                print(f"{model}/{name}/{path}: {statistics.median(times):.3f} ms")


if __name__ == "__main__":
    main()

"""What the PyTorch twins of `rnn train` steps share (benches/lm_step_torch.py,
tag_step_torch.py, seq2seq_step_torch.py): the common arguments, the timed loop and the JSON
line they print."""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn


def arguments():
    """A parser with the twins' `--steps` and `--warmup`; a twin adds its own arguments."""
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    return p


def time_steps(model, opt, clip, loss_of_step, warmup, steps):
    """Milliseconds of each of `steps` training steps after `warmup` untimed ones. A step is
    `loss_of_step(i)` (building the batch and the forward pass), backward, clipping of the
    global gradient norm at `clip`, the optimiser step and reading the loss back, as the
    trainer does every step on the CPU."""
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_of_step(step)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        float(loss.detach())
        if step >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def report(task, times, **extra):
    """The JSON line `benches/lm_step.sh` collects: the mean and median step in ms."""
    line = {"impl": f"torch-{torch.__version__}", "task": task,
            "threads": torch.get_num_threads()}
    line.update(extra)
    line.update(steps=len(times), mean_ms=round(statistics.fmean(times), 2),
                median_ms=round(statistics.median(times), 2))
    print(json.dumps(line))

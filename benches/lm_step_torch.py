#!/usr/bin/env python3
"""PyTorch twin of one training step of `rnn train char-lm` / `rnn train word-lm` (the defaults).

Same data pipeline shape (Zaremba batches: the token stream cut into B parallel streams, windows
of T, state carried across windows and detached), same model (embedding -> dropout -> stacked
LSTM with dropout between layers -> dropout -> linear decoder), same loss (mean cross entropy
per token), same clipping (global gradient norm) and optimiser as this project's defaults:

- word-lm: vocabulary of the training text's words plus <eos> per line, E = H = 200, 2 layers,
  dropout 0, B 20, T 20, SGD lr 20, clip 0.25 (Zaremba's small model, as PyTorch's
  word_language_model example);
- char-lm: vocabulary of the text's characters, E 64, H 256, 2 layers, dropout 0.1, B 32,
  T 100, AdamW lr 2e-3, clip 5.

usage: lm_step_torch.py TASK DATA [--steps N] [--warmup W]
Prints one JSON line: mean and median milliseconds per step over N timed steps after W warm-up
steps (a step = batch slicing, forward, loss, backward, clipping, optimiser step), the thread
count and the torch version. `benches/lm_step.sh` runs it next to `rnn train` on the same host.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from step_twin import arguments, report, time_steps

p = arguments()
p.add_argument("task", choices=["char-lm", "word-lm"])
p.add_argument("data")
a = p.parse_args()

text = open(a.data, encoding="utf-8").read()
if a.task == "word-lm":
    tokens = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append("<eos>")
    E, H, L, drop, B, T, lr, clip = 200, 200, 2, 0.0, 20, 20, 20.0, 0.25
else:
    tokens = list(text)
    E, H, L, drop, B, T, lr, clip = 64, 256, 2, 0.1, 32, 100, 2e-3, 5.0
vocab = {t: i for i, t in enumerate(sorted(set(tokens)))}
ids = torch.tensor([vocab[t] for t in tokens], dtype=torch.long)
V = len(vocab)
n = ids.numel() // B
streams = ids[: n * B].view(B, n)  # row b = the b-th contiguous stream


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, L, dropout=drop, batch_first=True)
        self.decoder = nn.Linear(H, V)
        self.drop = nn.Dropout(drop)

    def forward(self, x, state):
        y, state = self.rnn(self.drop(self.embedding(x)), state)
        return self.decoder(self.drop(y)), state


torch.manual_seed(0)
model = LM()
opt = (
    torch.optim.SGD(model.parameters(), lr=lr)
    if a.task == "word-lm"
    else torch.optim.AdamW(model.parameters(), lr=lr)
)
model.train()
carried = {"state": None, "pos": 0}


def loss_of_step(_):
    pos, state = carried["pos"], carried["state"]
    if pos + T + 1 > n:
        pos, state = 0, None
    x, y = streams[:, pos : pos + T], streams[:, pos + 1 : pos + T + 1]
    if state is not None:
        state = tuple(s.detach() for s in state)
    logits, state = model(x, state)
    carried["pos"], carried["state"] = pos + T, state
    return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))


times = time_steps(model, opt, clip, loss_of_step, a.warmup, a.steps)
report(a.task, times, vocab=V)

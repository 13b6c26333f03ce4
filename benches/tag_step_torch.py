#!/usr/bin/env python3
"""PyTorch twin of one training step of `rnn train tag` (the defaults, with `--layers 2`).

The model of RESULTS.md's POS-tagging row as a PyTorch user writes it: word embedding 128 ->
dropout 0.33 -> bidirectional LSTM, 128 per direction, 2 layers with dropout 0.33 between them
(`pack_padded_sequence`, so padding is skipped) -> dropout 0.33 -> linear layer over the tags;
mean cross-entropy over the real tokens; global gradient norm clipped at 5; AdamW at 2e-3.
Batches as `rnn train tag` cuts them: the sentences sorted by length, cut into batches of 32,
the batches in a seeded random order. The vocabulary is the words seen at least twice plus one
unknown-word id (ours maps the rest to unknown-word signatures: a few dozen more rows of the
embedding, no other change to the step).

usage: tag_step_torch.py CONLLU [--steps N] [--warmup W]
Prints one JSON line: mean and median milliseconds per step over N timed steps after W warm-up
steps (a step = padding the batch's ids into tensors, forward, loss, backward, clipping,
optimiser step, reading the loss back), the thread count and the torch version.
`benches/lm_step.sh` runs it next to `rnn train tag` on the same host (`TASKS=tag`).
"""
import collections
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from step_twin import arguments, report, time_steps

p = arguments()
p.add_argument("data")
a = p.parse_args()

sentences, sentence = [], []
for line in open(a.data, encoding="utf-8"):
    line = line.rstrip("\n")
    if not line:
        if sentence:
            sentences.append(sentence)
        sentence = []
        continue
    if line.startswith("#"):
        continue
    cols = line.split("\t")
    if "-" in cols[0] or "." in cols[0]:  # multi-word tokens and empty nodes carry no tag
        continue
    sentence.append((cols[1], cols[3]))
if sentence:
    sentences.append(sentence)

counts = collections.Counter(w for s in sentences for w, _ in s)
words = {w: i + 1 for i, w in enumerate(sorted(w for w, c in counts.items() if c >= 2))}
tags = {t: i for i, t in enumerate(sorted({t for s in sentences for _, t in s}))}
V, C = len(words) + 1, len(tags)  # id 0: unknown words
E, H, L, drop, B, lr, clip = 128, 128, 2, 0.33, 32, 2e-3, 5.0
data = [
    ([words.get(w, 0) for w, _ in s], [tags[t] for _, t in s])
    for s in sorted(sentences, key=len)
]
batches = [data[i : i + B] for i in range(0, len(data), B)]
random.Random(0).shuffle(batches)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, L, dropout=drop, batch_first=True, bidirectional=True)
        self.output = nn.Linear(2 * H, C)
        self.drop = nn.Dropout(drop)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(
            self.drop(self.embedding(x)), lengths, batch_first=True, enforce_sorted=False
        )
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return self.output(self.drop(y))


torch.manual_seed(0)
model = Tagger()
opt = torch.optim.AdamW(model.parameters(), lr=lr)
model.train()


def loss_of_step(step):
    batch = batches[step % len(batches)]
    lengths = torch.tensor([len(ids) for ids, _ in batch])
    t = int(lengths.max())
    x = torch.zeros(len(batch), t, dtype=torch.long)
    y = torch.full((len(batch), t), -100, dtype=torch.long)
    for b, (ids, tg) in enumerate(batch):
        x[b, : len(ids)] = torch.tensor(ids)
        y[b, : len(tg)] = torch.tensor(tg)
    logits = model(x, lengths)
    return F.cross_entropy(logits.reshape(-1, C), y.reshape(-1), ignore_index=-100)


times = time_steps(model, opt, clip, loss_of_step, a.warmup, a.steps)
report("tag", times, vocab=V, tags=C)

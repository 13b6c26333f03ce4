#!/usr/bin/env python3
"""PyTorch twin of one training step of `rnn train seq2seq --level tutorial --target 0`.

RESULTS.md's translation model (French -> English on the PyTorch tutorial's pairs) as a PyTorch
user writes it, with this project's defaults: source and target embeddings 256, dropout 0.1 on
both embeddings and on the output layer's input; a bidirectional GRU encoder of 256 per
direction (`pack_padded_sequence`), its two final states joined and mapped to the decoder's
initial state by a linear layer and tanh; a GRU decoder of 256, teacher-forced over the whole
target in one call; Luong's "general" attention (scores `y · W_a v` over the valid source
positions, softmax, context = the weighted encoder outputs), then `tanh(W_c [context; y])` and
a linear layer over the target vocabulary; mean cross-entropy over the real target tokens
(end token included); global gradient norm clipped at 5; AdamW at 2e-3. Batches of 64 as
`rnn train seq2seq` cuts them: the pairs sorted by source length, in a seeded random order.

usage: seq2seq_step_torch.py FRA_TXT [--steps N] [--warmup W]
Prints one JSON line: mean and median milliseconds per step over N timed steps after W warm-up
steps (a step = padding the batch into tensors, forward, loss, backward, clipping, optimiser
step, reading the loss back), the thread count and the torch version.
`benches/lm_step.sh` runs it next to `rnn train seq2seq` on the same host (`TASKS=seq2seq`).
"""
import random
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from step_twin import arguments, report, time_steps

p = arguments()
p.add_argument("data")
a = p.parse_args()

PREFIXES = ("i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ",
            "we are", "we re ", "they are", "they re ")


def normalize(s):  # the tutorial's normalizeString
    s = "".join(c for c in unicodedata.normalize("NFD", s.lower().strip())
                if unicodedata.category(c) != "Mn")
    out, pending = [], False
    for c in s:
        keep = ("a" <= c <= "z") or c in "!?"
        if c in "!?":
            pending = True
        if keep:
            if pending and out:
                out.append(" ")
            pending = False
            out.append(c)
        else:
            pending = True
    return "".join(out)


pairs = []
for line in open(a.data, encoding="utf-8"):
    cols = line.rstrip("\n").split("\t")
    if len(cols) < 2:
        continue
    eng, fra = normalize(cols[0]), normalize(cols[1])
    if len(eng.split(" ")) < 10 and len(fra.split(" ")) < 10 and eng.startswith(PREFIXES):
        pairs.append((fra.split(), eng.split()))  # --target 0: English is the target
# `rnn train seq2seq` holds out a seeded tenth for validation and another for the test, and
# builds its vocabularies from the rest: the same share here.
random.Random(1).shuffle(pairs)
pairs = pairs[: len(pairs) - 2 * (len(pairs) // 10)]
PAD, BOS, EOS = 0, 1, 2


def vocab(sents):
    words = sorted({w for s in sents for w in s})
    return {w: i + 3 for i, w in enumerate(words)}


src_vocab, tgt_vocab = vocab(s for s, _ in pairs), vocab(t for _, t in pairs)
SV, TV = len(src_vocab) + 3, len(tgt_vocab) + 3
E, H, drop, B, lr, clip = 256, 256, 0.1, 64, 2e-3, 5.0
data = sorted(
    (([src_vocab[w] for w in s], [tgt_vocab[w] for w in t] + [EOS]) for s, t in pairs),
    key=lambda st: len(st[0]),
)
batches = [data[i : i + B] for i in range(0, len(data), B)]
random.Random(0).shuffle(batches)


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_embedding = nn.Embedding(SV, E)
        self.tgt_embedding = nn.Embedding(TV, E)
        self.encoder = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * H, H)
        self.decoder = nn.GRU(E, H, batch_first=True)
        self.att_key = nn.Linear(2 * H, H)
        self.combine = nn.Linear(3 * H, H)
        self.output = nn.Linear(H, TV)
        self.drop = nn.Dropout(drop)

    def forward(self, src, src_len, tgt_in):
        packed = pack_padded_sequence(
            self.drop(self.src_embedding(src)), src_len, batch_first=True, enforce_sorted=False
        )
        values, h = self.encoder(packed)
        values, _ = pad_packed_sequence(values, batch_first=True, total_length=src.shape[1])
        init = torch.tanh(self.bridge(torch.cat([h[0], h[1]], 1))).unsqueeze(0)
        ys, _ = self.decoder(self.drop(self.tgt_embedding(tgt_in)), init)
        scores = ys @ self.att_key(values).transpose(1, 2)  # (B, T, S)
        valid = torch.arange(src.shape[1])[None, :] < src_len[:, None]
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        context = torch.softmax(scores, -1) @ values
        hidden = torch.tanh(self.combine(torch.cat([context, ys], 2)))
        return self.output(self.drop(hidden))


torch.manual_seed(0)
model = Seq2Seq()
opt = torch.optim.AdamW(model.parameters(), lr=lr)
model.train()


def loss_of_step(step):
    batch = batches[step % len(batches)]
    src_len = torch.tensor([len(s) for s, _ in batch])
    s_max, t_max = int(src_len.max()), max(len(t) for _, t in batch)
    src = torch.full((len(batch), s_max), PAD, dtype=torch.long)
    tgt = torch.full((len(batch), t_max), -100, dtype=torch.long)
    tgt_in = torch.full((len(batch), t_max), PAD, dtype=torch.long)
    for b, (s, t) in enumerate(batch):
        src[b, : len(s)] = torch.tensor(s)
        tgt[b, : len(t)] = torch.tensor(t)
        tgt_in[b, : len(t)] = torch.tensor([BOS] + t[:-1])
    logits = model(src, src_len, tgt_in)
    return F.cross_entropy(logits.reshape(-1, TV), tgt.reshape(-1), ignore_index=-100)


times = time_steps(model, opt, clip, loss_of_step, a.warmup, a.steps)
report("seq2seq", times, training_pairs=len(pairs), vocab=[SV, TV])

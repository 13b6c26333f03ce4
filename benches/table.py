#!/usr/bin/env python3
"""Formats benches/compare.sh's JSON lines as a Markdown table with ratios to PyTorch.

With several rounds (ROUNDS=n bash benches/compare.sh), each time is the median over rounds and
each ratio the median of the per-round ratios (the implementations of one shape run back to back
within a round, so a per-round ratio sees the same machine load on both sides)."""
import json
import statistics
import sys

rows = {}
for line in open(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    cell = r["cell"] if not r["impl"].startswith("torch") or r["cell"] != "rnn" else "rnn-tanh"
    key = (cell, r["batch"], r["seq_len"], r["input"], r["hidden"], r["mode"])
    impl = "torch" if r["impl"].startswith("torch") else r["impl"]
    rows.setdefault(key, {}).setdefault(impl, []).append(r["median_ms"])


def med(xs):
    return statistics.median(xs) if xs else None


def ratio(num, den):
    pairs = [a / b for a, b in zip(num or [], den or [])]
    return med(pairs)


rounds = max((len(x) for v in rows.values() for x in v.values()), default=0)
print(f"<!-- {rounds} round(s) -->")
print("| cell | B, T, I, H | mode | ours (fused) | PyTorch | ours / PyTorch | candle-nn | candle-nn / ours | ours (composed) |")
print("|---|---|---|---|---|---|---|---|---|")
for (cell, b, t, i, h, mode), v in rows.items():
    f, tc, cn, co = (v.get(k) for k in ("rnn-fused", "torch", "candle-nn", "rnn-composed"))
    fmt = lambda x: f"{med(x):.1f}" if x else "-"
    r1 = ratio(f, tc)
    r2 = ratio(cn, f)
    r1 = f"{r1:.2f}x" if r1 is not None else "-"
    r2 = f"{r2:.1f}x" if r2 is not None else "-"
    print(f"| {cell} | {b}, {t}, {i}, {h} | {mode} | {fmt(f)} | {fmt(tc)} | {r1} | {fmt(cn)} | {r2} | {fmt(co)} |")

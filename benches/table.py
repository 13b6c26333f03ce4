#!/usr/bin/env python3
"""Formats benches/compare.sh's JSON lines as a Markdown table with ratios to PyTorch."""
import json
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
    rows.setdefault(key, {})[impl] = r["median_ms"]

print("| cell | B, T, I, H | mode | ours (fused) | PyTorch | ours / PyTorch | candle-nn | candle-nn / ours | ours (composed) |")
print("|---|---|---|---|---|---|---|---|---|")
for (cell, b, t, i, h, mode), v in rows.items():
    f, tc, cn, co = (v.get(k) for k in ("rnn-fused", "torch", "candle-nn", "rnn-composed"))
    fmt = lambda x: f"{x:.1f}" if x is not None else "-"
    ratio = f"{f / tc:.2f}x" if f and tc else "-"
    cratio = f"{cn / f:.1f}x" if f and cn else "-"
    print(f"| {cell} | {b}, {t}, {i}, {h} | {mode} | {fmt(f)} | {fmt(tc)} | {ratio} | {fmt(cn)} | {cratio} | {fmt(co)} |")

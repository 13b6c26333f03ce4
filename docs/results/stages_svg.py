#!/usr/bin/env python3
"""Validation perplexity and learning rate per epoch of runs that follow each other (a run, then
runs started from its weights with `rnn train --init-from`), as one SVG; no plotting library
needed. Each later stage's epochs continue the previous stage's.

usage: stages_svg.py OUT.svg STAGE1/metrics.jsonl [STAGE2/metrics.jsonl ...]
"""
import json
import math
import sys

out_path, stages = sys.argv[1], sys.argv[2:]
ppl, lr, bounds = [], [], []
offset = 0.0
for path in stages:
    recs = [json.loads(line) for line in open(path) if line.strip()]
    for r in recs:
        ppl.append((offset + r["epoch"], r["metrics"]["perplexity"]))
        lr.append((offset + r["epoch"], r["lr"]))
    offset += recs[-1]["epoch"]
    bounds.append(offset)

W, H, L, R, T, B = 720, 420, 64, 64, 24, 44
xmax = offset
lo, hi = math.log(min(v for _, v in ppl) * 0.95), math.log(max(v for _, v in ppl) * 1.05)
lrmax = max(v for _, v in lr) * 1.05
sx = lambda e: L + e / xmax * (W - L - R)
sy = lambda p: H - B - (math.log(p) - lo) / (hi - lo) * (H - B - T)
sl = lambda v: H - B - v / lrmax * (H - B - T)
svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
    f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
    f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="#999"/>',
    f'<text x="{(W-R+L)/2}" y="{H-8}" text-anchor="middle">epoch</text>',
    f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">validation perplexity (log scale)</text>',
    f'<text x="{W-16}" y="{H/2}" transform="rotate(90 {W-16} {H/2})" text-anchor="middle" fill="#999">learning rate</text>',
]
for e in range(0, int(xmax) + 1, 2):
    svg.append(f'<text x="{sx(e):.0f}" y="{H-B+16}" text-anchor="middle">{e}</text>')
for i in range(7):
    p = math.exp(lo + (hi - lo) * i / 6)
    svg.append(f'<text x="{L-6}" y="{sy(p)+4:.0f}" text-anchor="end">{p:.0f}</text>')
    v = lrmax * i / 6
    svg.append(f'<text x="{W-R+6}" y="{sl(v)+4:.0f}" fill="#999">{v:.1f}</text>')
for b in bounds[:-1]:
    svg.append(f'<line x1="{sx(b):.1f}" y1="{T}" x2="{sx(b):.1f}" y2="{H-B}" stroke="#bbb" stroke-dasharray="4 4"/>')
svg.append('<polyline fill="none" stroke="#999" stroke-width="1.5" points="'
           + " ".join(f"{sx(e):.1f},{sl(v):.1f}" for e, v in lr) + '"/>')
svg.append('<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="'
           + " ".join(f"{sx(e):.1f},{sy(p):.1f}" for e, p in ppl) + '"/>')
for e, p in ppl:
    svg.append(f'<circle cx="{sx(e):.1f}" cy="{sy(p):.1f}" r="2.5" fill="#1f77b4"/>')
best = min(p for _, p in ppl)
svg.append(f'<text x="{W-R-10}" y="{T+16}" text-anchor="end" fill="#1f77b4">validation perplexity (best {best:.2f})</text>')
svg.append("</svg>")
open(out_path, "w").write("\n".join(svg) + "\n")

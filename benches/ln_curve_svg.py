#!/usr/bin/env python3
"""Validation loss against wall time from `benches/ln_curve.sh`'s CSV, as an SVG (no plotting
library needed). usage: ln_curve_svg.py CURVE.csv OUT.svg"""
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
series = {}
for r in rows:
    series.setdefault(r["variant"], []).append((float(r["seconds"]), float(r["valid_loss"])))
W, H, L, B = 640, 400, 60, 40
xmax = max(s for pts in series.values() for s, _ in pts) * 1.05
ymin = min(v for pts in series.values() for _, v in pts) * 0.95
ymax = max(v for pts in series.values() for _, v in pts) * 1.02
sx = lambda s: L + s / xmax * (W - L - 20)
sy = lambda v: H - B - (v - ymin) / (ymax - ymin) * (H - B - 20)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-8}" text-anchor="middle">seconds of training</text>',
       f'<text x="14" y="{H/2}" transform="rotate(-90 14 {H/2})" text-anchor="middle">validation loss (nats/char)</text>']
for i in range(6):
    s = xmax * i / 5
    out.append(f'<text x="{sx(s):.0f}" y="{H-B+16}" text-anchor="middle">{s:.0f}</text>')
    v = ymin + (ymax - ymin) * i / 5
    out.append(f'<text x="{L-6}" y="{sy(v)+4:.0f}" text-anchor="end">{v:.2f}</text>')
colors = ["#1f77b4", "#d62728", "#2ca02c"]
for k, (name, pts) in enumerate(series.items()):
    path = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in pts)
    out.append(f'<polyline fill="none" stroke="{colors[k % 3]}" stroke-width="2" points="{path}"/>')
    out.append(f'<text x="{W-150}" y="{40+18*k}" fill="{colors[k % 3]}">{name} (last {pts[-1][1]:.3f})</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")

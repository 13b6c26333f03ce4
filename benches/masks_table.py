#!/usr/bin/env python3
"""Tabulates benches/masks.sh's JSON lines: per cell, mode and option the median time and the
median over rounds of the per-round ratio to the plain cell."""
import json
import statistics
import sys
from collections import defaultdict

runs = [json.loads(line) for line in open(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")]
plain = {(r["round"], r["cell"], r["mode"]): r["median_ms"] for r in runs if not r["options"]}
rows = defaultdict(lambda: ([], []))
for r in runs:
    key = (r["cell"], r["mode"], r["options"] or "(plain)")
    rows[key][0].append(r["median_ms"])
    rows[key][1].append(r["median_ms"] / plain[(r["round"], r["cell"], r["mode"])])
print(f"<!-- {len({r['round'] for r in runs})} round(s) -->")
print("| cell | mode | options | median ms | x plain |")
print("|---|---|---|---|---|")
for (cell, mode, opt), (ms, ratio) in rows.items():
    print(f"| {cell} | {mode} | `{opt}` | {statistics.median(ms):.1f} | "
          f"{statistics.median(ratio):.2f}x |")

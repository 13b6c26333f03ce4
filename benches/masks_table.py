#!/usr/bin/env python3
"""Tabulates benches/masks.sh's JSON lines: per cell, mode and option the median time, the
median over rounds of the per-round ratio to the plain cell, and the same ratio of the fastest
iterations (less sensitive to other jobs on a shared machine)."""
import json
import statistics
import sys
from collections import defaultdict

runs = [json.loads(line) for line in open(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")]
plain = {(r["round"], r["cell"], r["mode"]): r for r in runs if not r["options"]}
rows = defaultdict(lambda: ([], [], []))
for r in runs:
    key = (r["cell"], r["mode"], r["options"] or "(plain)")
    base = plain[(r["round"], r["cell"], r["mode"])]
    rows[key][0].append(r["median_ms"])
    rows[key][1].append(r["median_ms"] / base["median_ms"])
    rows[key][2].append(r["min_ms"] / base["min_ms"])
print(f"<!-- {len({r['round'] for r in runs})} round(s) -->")
print("| cell | mode | options | median ms | x plain (medians) | x plain (minima) |")
print("|---|---|---|---|---|---|")
for (cell, mode, opt), (ms, ratio, ratio_min) in rows.items():
    print(f"| {cell} | {mode} | `{opt}` | {statistics.median(ms):.1f} | "
          f"{statistics.median(ratio):.2f}x | {statistics.median(ratio_min):.2f}x |")

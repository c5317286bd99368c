#!/usr/bin/env python3
"""Paired A/B of two builds of the engine's burst bench (benches/benches/burst.rs).

    python3 ab_burst.py BENCH_A BENCH_B ALGORITHM RUNS

BENCH_A and BENCH_B are copies of target/release/deps/burst-* built at the two commits.
Each run times both (order flipped every other run) with 200 rounds; the ratio B/A of the
burst-32 column is taken per run, and its median, min and max are printed for each
direction and size, with the median cycles of each build.
"""
import statistics
import subprocess
import sys

a, b, alg, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def run(x):
    out = subprocess.run([x, "200", alg], capture_output=True, text=True, check=True).stdout
    rows = [l for l in out.splitlines() if l.startswith(f"| {alg} |")]
    res = {}
    for i, l in enumerate(rows):
        c = [t.strip() for t in l.split("|")]
        d = "enc" if i < len(rows) // 2 else "dec"
        res[(d, c[2])] = float(c[6])  # burst 32
    return res


ratios, vals = {}, {}
for i in range(n):
    order = [(a, "A"), (b, "B")] if i % 2 == 0 else [(b, "B"), (a, "A")]
    r = {tag: run(x) for x, tag in order}
    for k in r["A"]:
        ratios.setdefault(k, []).append(r["B"][k] / r["A"][k])
        vals.setdefault(k, ([], []))
        vals[k][0].append(r["A"][k])
        vals[k][1].append(r["B"][k])
for k in sorted(ratios):
    rs = ratios[k]
    print(
        f"{k[0]} {k[1]:>5}: A {statistics.median(vals[k][0]):.0f}  B {statistics.median(vals[k][1]):.0f}"
        f"  B/A median {statistics.median(rs):.3f} (min {min(rs):.3f} max {max(rs):.3f})"
    )

#!/usr/bin/env python3
"""Paired A/B of builds of the AES-GCM kernel bench (benches/benches/gcm.rs), one call per
packet (burst 1), AES-128.

    python3 ab_gcm.py BASE,OTHER[,OTHER…] RUNS

Each name X is a copy of target/release/deps/gcm-* at /tmp/gcm-X. Each run times every
build (order reversed every other run), 800 rounds; per run, each build's cycles are divided
by BASE's, and the medians are printed.
"""
import statistics
import subprocess
import sys

bins, n = sys.argv[1].split(","), int(sys.argv[2])


def run(x):
    out = subprocess.run([x, "800", "128"], capture_output=True, text=True, check=True).stdout
    res = {}
    for l in out.splitlines():
        if l.startswith("| AES-128"):
            c = [t.strip() for t in l.split("|")]
            res[("seal1", c[2])] = float(c[4])
            res[("open1", c[2])] = float(c[10])
    return res


rat = {b: {} for b in bins[1:]}
val = {b: {} for b in bins}
for i in range(n):
    order = bins if i % 2 == 0 else bins[::-1]
    r = {b: run("/tmp/gcm-" + b) for b in order}
    for b in bins:
        for k, v in r[b].items():
            val[b].setdefault(k, []).append(v)
            if b != bins[0]:
                rat[b].setdefault(k, []).append(v / r[bins[0]][k])
for k in sorted(val[bins[0]]):
    line = f"{k[0]} {k[1]:>5}: {bins[0]} {statistics.median(val[bins[0]][k]):.0f}"
    for b in bins[1:]:
        line += f" | {b} {statistics.median(val[b][k]):.0f} ({statistics.median(rat[b][k]):.3f})"
    print(line)

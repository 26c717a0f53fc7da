#!/usr/bin/env python3
"""Runs the echo workload for drover and raw, alternating, and prints the
README's Performance table: medians of several runs, drover as a ratio of
raw measured in the same run.

    cargo build --release -p drover-bench && python3 bench/table.py [runs]
"""
import json
import statistics
import subprocess
import sys

BIN = "target/release/drover-bench"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
CONFIGS = [
    # (payload, concurrency, requests, pin to one core)
    (64, 1, 20000, False),
    (64, 1, 20000, True),
    (64, 256, 100000, False),
    (4096, 16, 100000, False),
    (1048576, 16, 2000, False),
]


def run(impl, payload, concurrency, requests, pinned):
    cmd = [BIN, "--impl", impl, "--payload", str(payload),
           "--concurrency", str(concurrency), "--requests", str(requests)]
    if pinned:
        cmd = ["taskset", "-c", "0"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def size(n):
    return f"{n // 1048576} MiB" if n >= 1048576 else (f"{n // 1024} KiB" if n >= 1024 else f"{n} B")


print("| payload | C | cores | drover rps | raw rps | rps ratio | drover p50 µs | raw p50 µs | p50 ratio | MB/s ratio |")
print("|---|---|---|---|---|---|---|---|---|---|")
for payload, c, n, pinned in CONFIGS:
    d, r = [], []
    for _ in range(RUNS):
        d.append(run("drover", payload, c, n, pinned))
        r.append(run("raw", payload, c, n, pinned))
    drps = statistics.median(x["rps"] for x in d)
    rrps = statistics.median(x["rps"] for x in r)
    dp50 = statistics.median(x["p50_us"] for x in d)
    rp50 = statistics.median(x["p50_us"] for x in r)
    print(f"| {size(payload)} | {c} | {'1 (pinned)' if pinned else '2'} | {drps:,.0f} | {rrps:,.0f} | "
          f"{drps / rrps:.2f} | {dp50:.0f} | {rp50:.0f} | {dp50 / rp50:.2f} | {drps / rrps:.2f} |")

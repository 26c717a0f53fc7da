#!/usr/bin/env python3
"""Runs the echo workload for raw, for the hand-written tokio pool (on two
runtime threads) and for drover (its supervisor on a current-thread
runtime, then on two threads), alternating, and prints the README's
Performance table: medians of several runs, drover as a ratio of raw and
of the hand-written pool measured in the same runs, and the spread of
raw's runs.

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
    (4096, 256, 100000, False),
    (1048576, 16, 2000, False),
]
# The supervisor's runtime threads (1: a current-thread runtime).
THREADS = [1, 2]


def run(impl, payload, concurrency, requests, pinned, threads=1):
    cmd = [BIN, "--impl", impl, "--payload", str(payload),
           "--concurrency", str(concurrency), "--requests", str(requests),
           "--threads", str(threads)]
    if pinned:
        cmd = ["taskset", "-c", "0"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def size(n):
    return f"{n // 1048576} MiB" if n >= 1048576 else (f"{n // 1024} KiB" if n >= 1024 else f"{n} B")


print("| payload | C | cores | supervisor runtime | drover rps | raw rps (min to max) | rps ratio "
      "| tokio pool rps | drover / tokio | drover p50 µs | raw p50 µs | p50 ratio | tokio pool p50 µs |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for payload, c, n, pinned in CONFIGS:
    raw, tokio, drover = [], [], {t: [] for t in THREADS}
    for _ in range(RUNS):
        raw.append(run("raw", payload, c, n, pinned))
        tokio.append(run("tokio", payload, c, n, pinned, 2))
        for t in THREADS:
            drover[t].append(run("drover", payload, c, n, pinned, t))
    rrps = statistics.median(x["rps"] for x in raw)
    rp50 = statistics.median(x["p50_us"] for x in raw)
    spread = f"{min(x['rps'] for x in raw):,.0f} to {max(x['rps'] for x in raw):,.0f}"
    trps = statistics.median(x["rps"] for x in tokio)
    tp50 = statistics.median(x["p50_us"] for x in tokio)
    for t in THREADS:
        drps = statistics.median(x["rps"] for x in drover[t])
        dp50 = statistics.median(x["p50_us"] for x in drover[t])
        runtime = "current-thread" if t == 1 else f"{t} threads"
        print(f"| {size(payload)} | {c} | {'1 (pinned)' if pinned else '2'} | {runtime} | {drps:,.0f} "
              f"| {rrps:,.0f} ({spread}) | {drps / rrps:.2f} | {trps:,.0f} | {drps / trps:.2f} "
              f"| {dp50:.0f} | {rp50:.0f} | {dp50 / rp50:.2f} | {tp50:.0f} |")

#!/usr/bin/env python3
"""Runs the echo workload with large payloads for raw, for the hand-written
tokio pool, for drover with its shared-memory arenas (the default: the
echo's answer is the request's own bytes, which go back where they lie),
for drover whose worker writes a fresh answer of the same size into its
answer buffer (`--answer write-in-place`: the answer is copied out of the
arena once), and for drover with every payload through the socket
(`--shared-memory 0`), alternating, and prints the README's large-payload
table: medians of several runs, drover as a ratio of raw measured in the
same runs. Every drover run has its supervisor on two runtime threads, the
better setting for large payloads.

    cargo build --release -p drover-bench && python3 bench/large_table.py [runs]
"""
import json
import statistics
import subprocess
import sys

BIN = "target/release/drover-bench"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
MiB = 1 << 20
# (payload, concurrency); requests are sized to move about 4 GiB each way.
CONFIGS = [
    (32 * 1024, 16),
    (64 * 1024, 16),
    (128 * 1024, 16),
    (256 * 1024, 16),
    (MiB, 16),
    (MiB, 2),
    (4 * MiB, 16),
    (16 * MiB, 2),
    (64 * MiB - 64, 2),
]
IMPLS = [
    ("raw", []),
    ("tokio", ["--threads", "2"]),
    ("drover", ["--threads", "2"]),
    ("drover", ["--threads", "2", "--answer", "write-in-place"]),
    ("drover", ["--threads", "2", "--shared-memory", "0"]),
]


def run(impl, extra, payload, concurrency):
    requests = max(40, min(20000, (4 << 30) // payload))
    cmd = [BIN, "--impl", impl, "--payload", str(payload),
           "--concurrency", str(concurrency), "--requests", str(requests)] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def size(n):
    if n >= MiB:
        return f"{round(n / MiB)} MiB"
    return f"{n // 1024} KiB"


print("| payload | C | raw rps | tokio pool rps | drover rps (shared memory) | / raw "
      "| drover rps (fresh answer written in place) | / raw "
      "| drover rps (socket only) | / raw | drover GB/s each way |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for payload, c in CONFIGS:
    results = [[] for _ in IMPLS]
    for _ in range(RUNS):
        for i, (impl, extra) in enumerate(IMPLS):
            results[i].append(run(impl, extra, payload, c)["rps"])
    raw, tokio, shm, fresh, sock = (statistics.median(r) for r in results)
    print(f"| {size(payload)} | {c} | {raw:,.0f} | {tokio:,.0f} | {shm:,.0f} | {shm / raw:.2f} "
          f"| {fresh:,.0f} | {fresh / raw:.2f} "
          f"| {sock:,.0f} | {sock / raw:.2f} | {shm * payload / 1e9:.1f} |", flush=True)

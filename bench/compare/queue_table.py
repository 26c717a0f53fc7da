#!/usr/bin/env python3
"""drover's job queue beside graphile-worker and pg-boss, in one run.

Runs `drover-bench --queue pg` and `--queue sqlite` (release build) and
the peers of bench/compare/queue/queue_peers.js on the same PostgreSQL,
ROUNDS times each, interleaved, and prints a markdown table of medians.

    cargo build --release -p drover-bench
    (cd bench/compare/queue && npm install)
    DROVER_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        python3 bench/compare/queue_table.py [ROUNDS] [JOBS]
"""

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "target", "release", "drover-bench")
PEERS = os.path.join(ROOT, "bench", "compare", "queue")


def line(cmd, cwd=None):
    out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    jobs = sys.argv[2] if len(sys.argv) > 2 else "20000"
    runs = {}
    for r in range(rounds):
        for store in ("pg", "sqlite"):
            got = line([BENCH, "--queue", store, "--requests", jobs])
            runs.setdefault(f"drover, {store}", []).append(got)
            print(f"round {r + 1}: drover {store}: {got}", file=sys.stderr)
        for peer in ("graphile", "graphile-local64", "pgboss64", "pgboss256"):
            got = line(["node", "queue_peers.js", peer, jobs], cwd=PEERS)
            runs.setdefault(peer, []).append(got)
            print(f"round {r + 1}: {peer}: {got}", file=sys.stderr)

    def med(name, field):
        values = [run[field] for run in runs[name] if field in run]
        return statistics.median(values) if values else None

    def fmt(v, digits=0):
        return "" if v is None else f"{v:,.{digits}f}"

    print(f"{jobs} no-op jobs, 2-way concurrency, {rounds} rounds, medians")
    print()
    print("| impl | insert jobs/s | push_many jobs/s | drain jobs/s | push-to-start p50 / p99 ms |")
    print("|---|---|---|---|---|")
    for name in runs:
        lat = ""
        if med(name, "latency_p50_ms") is not None:
            lat = f"{fmt(med(name, 'latency_p50_ms'), 2)} / {fmt(med(name, 'latency_p99_ms'), 2)}"
        drain = med(name, "drain_jobs_per_s")
        print(
            f"| {name} | {fmt(med(name, 'insert_jobs_per_s'))} | "
            f"{fmt(med(name, 'push_many_jobs_per_s'))} | {fmt(drain)} | {lat} |"
        )


if __name__ == "__main__":
    main()

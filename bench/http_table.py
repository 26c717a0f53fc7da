#!/usr/bin/env python3
"""Loads drover's prefork HTTP server and its ceiling (hyper in W processes
accepting on one shared listener) with wrk, in alternating rounds, and
prints the README's prefork HTTP table: medians of the rounds, drover as a
ratio of the ceiling measured in the same rounds. Beside them,
drover-listener: a drover pool whose workers each get the listening
socket once and accept on it themselves.

    cargo build --release -p drover-bench
    python3 bench/http_table.py [rounds] [seconds per wrk run]

The servers start once and stay up for the whole run (an idle server
costs nothing); every round runs each setting against each server, the
order rotated from one round to the next. wrk runs on
the same machine (Debian's package: apt-get install wrk).
"""
import json
import re
import statistics
import subprocess
import sys

BIN = "target/release/drover-bench"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
WORKERS = 2
SETTINGS = [
    # (name, connections, Connection: close)
    ("keep-alive, 64 connections", 64, False),
    ("keep-alive, 1 connection", 1, False),
    ("`Connection: close`, 64 connections", 64, True),
    ("`Connection: close`, 1 connection", 1, True),
]
# drover-listener: drover's workers each get the listening socket once and
# accept on it themselves (no hand-over per connection).
IMPLS = ["hyper", "drover", "drover-listener"]
UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def start(impl):
    server = subprocess.Popen([BIN, "--http", impl, "--workers", str(WORKERS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = json.loads(server.stdout.readline())
    return server, line["addr"]


def micros(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * UNITS[unit]


def wrk(addr, connections, close):
    cmd = ["wrk", "-t", str(min(2, connections)), "-c", str(connections),
           "-d", f"{SECONDS}s", "--latency", f"http://{addr}/"]
    if close:
        cmd[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = micros(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = micros(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Socket errors:.*|Non-2xx.*", out)
    if errors:
        print(f"wrk {impl_of(addr)} {connections} close={close}: {errors.group(0)}", file=sys.stderr)
    return {"rps": rps, "p50": p50, "p99": p99}


ADDRS = {}


def impl_of(addr):
    return next(name for name, a in ADDRS.items() if a == addr)


def main():
    servers = []
    try:
        for impl in IMPLS:
            server, addr = start(impl)
            servers.append(server)
            ADDRS[impl] = addr
        runs = {(s[0], impl): [] for s in SETTINGS for impl in IMPLS}
        for round_ in range(ROUNDS):
            # Each server in turn, the order rotated every round.
            order = IMPLS[round_ % len(IMPLS):] + IMPLS[:round_ % len(IMPLS)]
            for name, connections, close in SETTINGS:
                for impl in order:
                    result = wrk(ADDRS[impl], connections, close)
                    runs[(name, impl)].append(result)
                    print(f"round {round_ + 1} {name} {impl}: {result}", file=sys.stderr)
    finally:
        for server in servers:
            server.stdin.close()
        for server in servers:
            server.wait(timeout=30)

    def med(name, impl, field):
        return statistics.median(r[field] for r in runs[(name, impl)])

    def ratio(name, impl, field):
        per_round = [d[field] / h[field] for h, d in zip(runs[(name, "hyper")], runs[(name, impl)])]
        return (med(name, impl, field) / med(name, "hyper", field), min(per_round), max(per_round))

    print("| setting | hyper, 2 processes, req/s | drover prefork, req/s | ratio (rounds' min to max) "
          "| hyper p50 / p99 µs | drover p50 / p99 µs | p50 ratio | p99 ratio "
          "| drover-listener req/s | ratio | drover-listener p50 / p99 µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in SETTINGS:
        h, d, l = (med(name, impl, "rps") for impl in IMPLS)
        r, lo, hi = ratio(name, "drover", "rps")
        hp50, hp99 = med(name, "hyper", "p50"), med(name, "hyper", "p99")
        dp50, dp99 = med(name, "drover", "p50"), med(name, "drover", "p99")
        lp50, lp99 = med(name, "drover-listener", "p50"), med(name, "drover-listener", "p99")
        print(f"| {name} | {h:,.0f} | {d:,.0f} | {r:.2f} ({lo:.2f} to {hi:.2f}) "
              f"| {hp50:,.0f} / {hp99:,.0f} | {dp50:,.0f} / {dp99:,.0f} | {dp50 / hp50:.2f} | {dp99 / hp99:.2f} "
              f"| {l:,.0f} | {l / h:.2f} | {lp50:,.0f} / {lp99:,.0f} |")


if __name__ == "__main__":
    main()

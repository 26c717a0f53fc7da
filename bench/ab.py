#!/usr/bin/env python3
"""Compares builds (or settings) of drover-bench in alternating runs: each
round runs every command once, the order reversed from one round to the
next, and the medians of requests per second and of p50 are printed with
every run's figure, so that a change is read against the others measured
in the same minutes (on a shared machine one build's runs can spread by a
factor of two or more from one minute to the next).

    cp target/release/drover-bench /tmp/before   # then build the change
    python3 bench/ab.py 6 \\
        "before|/tmp/before --impl drover --requests 1000000 --payload 64 --concurrency 256" \\
        "after|target/release/drover-bench --impl drover --requests 1000000 --payload 64 --concurrency 256"

Each argument after the number of rounds is `label|command`; a command
may start with `NAME=value` words, set in its environment.
"""
import json
import os
import statistics
import subprocess
import sys


def parse(spec):
    label, _, command = spec.partition("|")
    if not command:
        sys.exit(f"ab.py: expected label|command, got {spec!r}")
    words = command.split()
    env = dict(os.environ)
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return label, words, env


def run(words, env):
    done = subprocess.run(words, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"ab.py: {' '.join(words)} failed:\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["rps"], report["p50_us"]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    commands = [parse(spec) for spec in sys.argv[2:]]
    results = {label: [] for label, _, _ in commands}
    for r in range(rounds):
        for label, words, env in commands if r % 2 == 0 else commands[::-1]:
            results[label].append(run(words, env))
    for label, runs in results.items():
        rps = sorted(x[0] for x in runs)
        p50 = statistics.median(x[1] for x in runs)
        every = ", ".join(f"{x:,.0f}" for x in rps)
        print(f"{label}: median {statistics.median(rps):,.0f} rps, p50 {p50} us ({every})")


if __name__ == "__main__":
    main()

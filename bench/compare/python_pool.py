#!/usr/bin/env python3
"""The echo workload on Python's own process pool, for comparison with
drover-bench: W worker processes, N requests of S random bytes answered with
the same bytes, at most C in flight. Prints one JSON line in drover-bench's
format ("impl": "python-process-pool").

    python3 bench/compare/python_pool.py --workers 2 --requests 100000 --payload 64 --concurrency 256
"""
import argparse
import concurrent.futures
import json
import os
import resource
import statistics
import time


def echo(data):
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--map-chunksize", type=int, default=0,
                        help="use pool.map with this chunksize instead (Python's batched best case)")
    args = parser.parse_args()
    payload = os.urandom(args.payload)

    started = time.perf_counter()
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=args.workers)
    # Start every worker before timing, as drover's spawn() does.
    list(pool.map(echo, [b""] * args.workers * 4))
    startup = time.perf_counter() - started

    latencies = []
    in_flight = {}
    sent = 0
    done = 0
    begin = time.perf_counter()
    if args.map_chunksize:
        # Batched: requests travel in chunks, so there is no per-request
        # latency to report (p50/p99 are of whole run / requests).
        for answer in pool.map(echo, [payload] * args.requests, chunksize=args.map_chunksize):
            assert len(answer) == args.payload
        done = args.requests
        latencies = [(time.perf_counter() - begin) * 1e6 / args.requests]
    while done < args.requests:
        while sent < args.requests and len(in_flight) < args.concurrency:
            in_flight[pool.submit(echo, payload)] = time.perf_counter()
            sent += 1
        finished, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        now = time.perf_counter()
        for future in finished:
            assert len(future.result()) == args.payload
            latencies.append((now - in_flight.pop(future)) * 1e6)
            done += 1
    seconds = time.perf_counter() - begin
    pool.shutdown()
    latencies.sort()
    print(json.dumps({
        "impl": "python-process-pool" + (f"-map{args.map_chunksize}" if args.map_chunksize else ""),
        "workers": args.workers,
        "payload": args.payload,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "seconds": seconds,
        "rps": args.requests / seconds,
        "p50_us": statistics.median(latencies),
        "p99_us": latencies[int(len(latencies) * 0.99) - 1],
        "startup_ms": startup * 1e3,
        "parent_peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


if __name__ == "__main__":
    main()

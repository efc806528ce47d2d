#!/usr/bin/env python3
"""Peer baseline for the workers benchmark (framework/benches/workers.rs).

Measures Python's multiprocessing.Pool(2) with a trivial function and a 64-byte
argument, the way the Rust benchmark measures a daemonic worker pool:

  * ``Pool.apply`` latency (one blocking call at a time), p50 and p99;
  * ``Pool.map(f, range(N), chunksize=1)`` throughput (calls per second).

Prints one JSON object on stdout. Usage: python_baseline.py [APPLY_CALLS] [MAP_CALLS]
"""

import json
import multiprocessing
import sys
import time

PAYLOAD = b"x" * 64


def echo(data):
    return data


def ident(i):
    return i


def percentile(sorted_values, p):
    idx = round((len(sorted_values) - 1) * p)
    return sorted_values[min(idx, len(sorted_values) - 1)]


def main():
    apply_calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    map_calls = int(sys.argv[2]) if len(sys.argv) > 2 else 50000
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        # Warm up: both workers started and hot.
        for _ in range(500):
            pool.apply(echo, (PAYLOAD,))
        pool.map(ident, range(2000), chunksize=1)

        lat = []
        for _ in range(apply_calls):
            t = time.perf_counter()
            out = pool.apply(echo, (PAYLOAD,))
            lat.append(time.perf_counter() - t)
            assert len(out) == 64
        lat.sort()

        t = time.perf_counter()
        out = pool.map(ident, range(map_calls), chunksize=1)
        map_secs = time.perf_counter() - t
        assert len(out) == map_calls

    print(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "apply_calls": apply_calls,
                "apply_p50_us": percentile(lat, 0.5) * 1e6,
                "apply_p99_us": percentile(lat, 0.99) * 1e6,
                "map_calls": map_calls,
                "map_per_s": map_calls / map_secs,
            }
        )
    )


if __name__ == "__main__":
    main()

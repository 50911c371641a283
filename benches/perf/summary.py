#!/usr/bin/env python3
"""Summarises a `perf record -g` profile of the todo service by where the CPU goes.

    perf report -i perf.data --no-children --sort dso,sym -q -g none | summary.py US_PER_REQ

Reads perf's flat report (self time per symbol) on stdin and prints one row per part of
the request path: its share of the service's samples and, given the service's CPU µs per
request (from the bench), the µs per request that share stands for. Used by
`scripts/bench` with `BENCH_PERF=1`; see docs/benchmark.md.
"""
import re
import sys
from collections import Counter

# First match wins: (part, prefixes of the demangled symbol, with or without a leading '<').
PARTS = [
    ("logs + spans (tracing, OpenTelemetry)", ("tracing", "opentelemetry", "sharded_slab",
                                               "todo_service::telemetry")),
    ("HTTP (hyper, warp, http, headers)", ("hyper", "warp", "http::", "headers", "httparse",
                                           "todo_service::http", "tower")),
    ("JSON (serde)", ("serde", "ryu", "itoa")),
    ("async runtime (tokio, futures)", ("tokio", "futures", "mio", "core::future",
                                        "core::pin::Pin")),
    ("actors + application (ractor, todo)", ("ractor", "todo_actors", "todo_service",
                                             "lru", "hashbrown", "uuid")),
    ("metrics (prometheus)", ("prometheus",)),
    ("formatting + strings", ("core::fmt", "alloc::fmt", "chrono", "core::str", "alloc::string")),
]
LINE = re.compile(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)")


def part_of(dso, kind, symbol):
    if kind == "k" or dso.startswith("[kernel"):
        return "kernel (TCP loopback, scheduler, syscalls)"
    if dso.startswith("libc") or dso.startswith("ld-linux") or dso == "[vdso]":
        if any(m in symbol for m in ("malloc", "free", "realloc", "_int_", "unlink_chunk",
                                     "tcache", "consolidate")):
            return "allocator (glibc malloc/free)"
        if "mem" in symbol:
            return "memcpy/memmove"
        return "libc other (clock, locks, syscall wrappers)"
    name = symbol.lstrip("<&")
    for part, prefixes in PARTS:
        if name.startswith(prefixes) or any(f" as {p}" in symbol for p in prefixes):
            return part
    if "drop_in_place" in name:
        return "drops (freeing request state)"
    return "other"


def main():
    us = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None
    shares = Counter()
    for line in sys.stdin:
        m = LINE.match(line)
        if m:
            pct, dso, kind, symbol = float(m[1]), m[2], m[3], m[4]
            shares[part_of(dso, kind, symbol)] += pct
    total = sum(shares.values()) or 1.0
    print(f"  {'part':<46} {'share':>7} {'us/req':>8}")
    for part, pct in shares.most_common():
        share = pct / total
        cost = f"{share * us:8.1f}" if us else f"{'-':>8}"
        print(f"  {part:<46} {share * 100:6.1f}% {cost}")


if __name__ == "__main__":
    main()

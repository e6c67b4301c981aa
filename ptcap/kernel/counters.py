"""The capture's per-CPU counters (enum ptcap_counter), summed, and the wall clock the
kernel side stamps packets with."""
from __future__ import annotations

import os
import struct
import time

from ptcap.kernel import bpf, records


def possible_cpus() -> int:
    """Per-CPU maps have one slot per possible CPU."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


def read(counters_fd: int) -> tuple[int, int, int]:
    """(received by filter, dropped by kernel, over the --hook-rate limit), summed over CPUs."""
    ncpu = possible_cpus()
    totals = []
    for which in (records.Counter.RECEIVED, records.Counter.DROPPED, records.Counter.RATE_LIMITED):
        raw = bpf.map_lookup(counters_fd, struct.pack("<I", which), 8 * ncpu)
        totals.append(sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0)
    return totals[0], totals[1], totals[2]


def wall_clock_offset() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns (best of a few reads)."""
    best = None
    for _ in range(3):
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        r = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    return best[1]

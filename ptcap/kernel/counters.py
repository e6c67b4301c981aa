"""The capture's per-CPU counters (enum ptcap_counter), summed, and the wall clock the
kernel side stamps packets with."""
from __future__ import annotations

import functools
import os
import struct
import time

from ptcap.kernel import bpf, records


@functools.cache
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


def read(counters_fd: int) -> tuple[int, ...]:
    """Every counter, in records.Counter's order (received by filter, dropped by kernel, over
    the --hook-rate limit, process events lost), summed over CPUs."""
    return tuple(read_one(counters_fd, which) for which in range(records.Counter.MAX))


def read_one(counters_fd: int, which: int) -> int:
    """One counter (records.Counter), summed over CPUs."""
    ncpu = possible_cpus()
    raw = bpf.map_lookup(counters_fd, struct.pack("<I", which), 8 * ncpu)
    return sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0


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

"""The capture's per-CPU counters (enum ptcap_counter), summed, and the wall clock the
kernel side stamps packets with."""
from __future__ import annotations

import ctypes
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
    return Reader(counters_fd, which)()


class Reader:
    """One counter, read again and again (the reader checks for lost process events before
    every batch) with its key and value buffers made once."""

    def __init__(self, counters_fd: int, which: int) -> None:
        self._fd = counters_fd
        self._key = ctypes.create_string_buffer(struct.pack("<I", which), 4)
        self._value = (ctypes.c_uint64 * possible_cpus())()

    def __call__(self) -> int:
        return sum(self._value) if bpf.map_lookup_into(self._fd, self._key, self._value) else 0


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

"""The packet blocks of a pcapng file scanned in C (bpf/drain.c: ptcap_scan_epbs), for 'ptcap -r'
of a file whose packets tcpdump reads as they are: runs of blocks in a row with the same
interface and options, so that Python looks at a run's options once and at no single packet."""
from __future__ import annotations

import ctypes
import struct
import sys

from ptcap.pipeline import drain

RUN = struct.Struct("=IIQI4x")          # struct scan_run: interface id, packets, options at, length
MAX_RUNS = 512


class _Result(ctypes.Structure):
    _fields_ = [("pos", ctypes.c_uint64), ("last", ctypes.c_uint64), ("packets", ctypes.c_uint32),
                ("runs", ctypes.c_uint32)]


class Scanner:
    """scan(buf, pos, ...) over the bytes of one buffer."""

    def __init__(self, lib) -> None:
        self._scan = lib.ptcap_scan_epbs
        self._runs = ctypes.create_string_buffer(RUN.size * MAX_RUNS)
        self._view = memoryview(self._runs).cast("B")
        self._result = _Result()
        self._ref = ctypes.byref(self._result)

    def scan(self, buf: bytes, pos: int, order: str, nifaces: int, max_block: int, snaplen: int,
             max_packets: int):
        """(position after the blocks taken, offset of the last one, their runs as (interface
        id, packets, options offset, options length)); no runs when the block at pos is not
        one to take. `order` is the section's byte order ("<" or ">")."""
        swapped = order != ("<" if sys.byteorder == "little" else ">")
        self._scan(buf, pos, len(buf), swapped, nifaces, max_block, min(snaplen, 0xFFFFFFFF),
                   min(max_packets, MAX_RUNS * 512),
                   self._runs, MAX_RUNS, self._ref)
        r = self._result
        return r.pos, r.last, RUN.iter_unpack(self._view[:r.runs * RUN.size]) if r.runs else ()


def scanner() -> Scanner | None:
    """A Scanner, or None without the library (not built, or PTCAP_NATIVE=0)."""
    lib = drain.library()
    return Scanner(lib) if lib is not None else None

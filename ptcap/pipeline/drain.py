"""The native drain (bpf/drain.c): ring records → file blocks with no Python per packet.

A file sink that frames the kernel's records as they are (ptcap.sinks.file.FileSink) is fed
through it: the C loop walks the ring, writes each packet's block (pcapng Enhanced Packet
Block with the options the table holds for its key, or a classic pcap record) into an output
buffer, hands the ring space back, and returns only for what needs Python: a process record,
a key it does not know yet (the engine joins it and puts its options), a full buffer, the
-c or -C limit. Without the library (not built) the engine takes the Python path, which
writes the same bytes.

For tcpdump's lines (ptcap.sinks.lines.PrintSink) it frames classic pcap records for the
tcpdump child and describes them in runs (RUN: packets in a row of one key, direction and
interface), so that Python makes a packet's fields once per run.
"""
from __future__ import annotations

import ctypes
import enum
import os
import struct

from ptcap.kernel import libbpf
from ptcap.kernel.records import KEY_AT, KEY_END

# bpf/drain.c's struct run: interface id, packets, bytes of their records, direction, first
# and last time stamp (ns), key; padded to 8 bytes (checked against the library's size)
_KEY_LEN = KEY_END - KEY_AT
RUN = struct.Struct(f"<IIIB3xQQ{_KEY_LEN}s{-(32 + _KEY_LEN) % 8}x")
RUNS_AT_ONCE = 4096
RUN_PACKETS = 512             # packets in a run, at most (a group of the tcpdump child's)

OUTPUT_BYTES = 4 << 20        # bigger than any block: a 256 KiB packet with 64 KiB of options
TABLE_SLOTS = 1 << 17         # holds up to half as many (key, direction) options
EVENTS_AT_ONCE = 256          # process records handed to Python in one go


class Stop(enum.IntEnum):
    """Why a run returned (bpf/drain.c's enum stop)."""
    EMPTY = 0
    EVENT = 1
    UNKNOWN = 2
    FULL = 3
    BYTES = 4
    COUNT = 5
    ERROR = 6


class Framing(enum.IntEnum):
    PCAPNG = 0
    PCAP_US = 1
    PCAP_NS = 2
    PCAP_RUNS = 3     # nanoseconds, described in runs


class _Result(ctypes.Structure):
    _fields_ = [("cons", ctypes.c_uint64), ("packets", ctypes.c_uint64), ("out_len", ctypes.c_uint64),
                ("stop", ctypes.c_uint32), ("record", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("err", ctypes.c_int32), ("runs", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]



_lib = None


def library():
    """The loaded drain library, or None when it is not built (or PTCAP_NATIVE=0)."""
    global _lib
    if _lib is None:
        path = libbpf.objects_dir() / "libptcapdrain.so"
        if os.environ.get("PTCAP_NATIVE", "1") == "0" or not path.exists():
            _lib = False
        else:
            try:
                lib = ctypes.CDLL(str(path), use_errno=True)
                if lib.ptcap_drain_run_size() != RUN.size:     # a library built before a change
                    raise OSError("stale build")
            except (OSError, AttributeError):
                _lib = False
            else:
                vp, u64, u32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
                lib.ptcap_drain_open.restype = vp
                lib.ptcap_drain_open.argtypes = [ctypes.c_int, u64, u32, ctypes.c_int]
                lib.ptcap_drain_close.argtypes = [vp]
                lib.ptcap_drain_clear.argtypes = [vp]
                lib.ptcap_drain_skip.argtypes = [vp, u32]
                lib.ptcap_drain_events.argtypes = [vp, vp, u32]
                lib.ptcap_drain_events.restype = u32
                lib.ptcap_drain_put.argtypes = [vp, ctypes.c_char_p, u32, ctypes.c_char_p, u32]
                lib.ptcap_drain_put.restype = ctypes.c_int
                lib.ptcap_drain_entries.argtypes = [vp]
                lib.ptcap_drain_entries.restype = u32
                lib.ptcap_drain_run.argtypes = [vp, vp, u64, ctypes.c_int, u64, u64, ctypes.POINTER(_Result)]
                lib.ptcap_drain_runs.argtypes = [vp, vp, u32, u32]
                lib.ptcap_scan_epbs.argtypes = [ctypes.c_char_p, u64, u64, ctypes.c_int, u32, u32, u32, u32, vp, u32,
                                                 vp]
                _lib = lib
    return _lib or None


class Drain:
    """The C loop over one ring (map `map_fd` of `size` data bytes), writing `framing`."""

    def __init__(self, lib, map_fd: int, size: int, framing: Framing) -> None:
        self._lib = lib
        self._d = lib.ptcap_drain_open(map_fd, size, TABLE_SLOTS, int(framing))
        if not self._d:
            err = ctypes.get_errno()
            raise OSError(err, f"mapping the ring for the native drain: {os.strerror(err)}")
        self.framing = framing
        self._out = ctypes.create_string_buffer(OUTPUT_BYTES)
        self._out_addr = ctypes.addressof(self._out)
        self._view = memoryview(self._out).cast("B")
        self.result = _Result()
        self._ref = ctypes.byref(self.result)
        self._events = (ctypes.c_uint32 * EVENTS_AT_ONCE)()
        self._run = lib.ptcap_drain_run
        self._runs = None
        if framing == Framing.PCAP_RUNS:
            self._runs = ctypes.create_string_buffer(RUN.size * RUNS_AT_ONCE)
            self._runs_view = memoryview(self._runs).cast("B")
            lib.ptcap_drain_runs(self._d, self._runs, RUNS_AT_ONCE, RUN_PACKETS)

    def run(self, max_packets: int, max_bytes: int, fd: int = -1) -> _Result:
        """Frame what is ready (at most max_packets; stop after the block that takes the run
        past max_bytes): into the output (fd -1: out_len bytes of output()), or written to fd
        here (out_len: bytes written; stop ERROR with err: a failed write). The ring space of
        what was framed is handed back already. The result (stop: a Stop value, packets,
        out_len, record, cons, err) is overwritten by the next run."""
        self._run(self._d, self._out_addr, OUTPUT_BYTES, fd, max_packets, max_bytes, self._ref)
        return self.result

    def events(self) -> list[int]:
        """The process records at the consumer position: their offsets in the data pages."""
        n = self._lib.ptcap_drain_events(self._d, self._events, EVENTS_AT_ONCE)
        return self._events[:n]

    def output(self, n: int) -> memoryview:
        """The first n bytes of the output (valid until the next run)."""
        return self._view[:n]

    def runs(self, n: int) -> memoryview:
        """The first n runs of the last run() (PCAP_RUNS), RUN structs back to back."""
        return self._runs_view[:n * RUN.size]

    def put(self, key: bytes, direction: int, options: bytes) -> None:
        assert len(key) == KEY_END - KEY_AT
        if self._lib.ptcap_drain_put(self._d, key, direction, options, len(options)) != 0:
            raise MemoryError("native drain: no memory for a packet's options")

    def entries(self) -> int:
        return self._lib.ptcap_drain_entries(self._d)

    def clear(self) -> None:
        """Forget every key's options (their contexts changed)."""
        self._lib.ptcap_drain_clear(self._d)

    def skip(self, n: int) -> None:
        """Step over the n records events() listed (handled in Python)."""
        self._lib.ptcap_drain_skip(self._d, n)

    def close(self) -> None:
        if self._d:
            self._lib.ptcap_drain_close(self._d)
            self._d = None
        self._view.release()
        if self._runs is not None:
            self._runs_view.release()

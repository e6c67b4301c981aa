"""What the pipeline hands to its sinks: packets with their context, and the Sink protocol."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from ptcap.kernel.records import DIR_AT, HEADER_LEN, KEY_AT, KEY_END, Direction, LinkType

if TYPE_CHECKING:       # the join stage (ptcap.meta) fills it; the pipeline only carries it
    from ptcap.meta.context import ProcessContext

__all__ = ["Batch", "Direction", "LinkType", "Packet", "Sink"]


@dataclass(slots=True)
class Packet:
    ts_ns: int                      # wall-clock time, nanoseconds since the epoch
    data: bytes                     # the captured bytes (caplen = len(data))
    orig_len: int                   # length on the wire
    linktype: int                   # LINKTYPE_* of data
    ifname: str = ""
    direction: Direction = Direction.UNKNOWN
    context: ProcessContext | None = None   # who sent or received it, where it was dropped
    ifindex: int = 0
    # a classic pcap record's own (seconds, fraction, nanoseconds?) when its fraction is a
    # second or more: libpcap keeps it unnormalized, and so does `-r x.pcap -w y.pcap`
    pcap_ts: tuple[int, int, bool] | None = None


_RECORD = struct.Struct(f"<{DIR_AT}xB{KEY_AT - DIR_AT - 1}x{KEY_END - KEY_AT}sIIIII")   # dir, key, EPB fields
_DIRECTIONS = tuple(Direction(d) if d in Direction._value2member_map_ else Direction.UNKNOWN
                    for d in range(256))
MISSING = object()


class Batch:
    """The packets of one ring batch, what every sink's write() gets. Iterating gives Packet
    objects (made on demand). A packet's context is the join's, one per record key for all
    sinks: `contexts` (key → context) holds those made so far, `join(key)` makes a missing
    one. A writer that frames the kernel's records as they are reads `buf` at `offsets` and
    makes no object per packet."""

    __slots__ = ("buf", "offsets", "contexts", "join", "_ifaces")

    def __init__(self, buf, offsets: list[int], contexts: dict, join: Callable[[bytes], object],
                 ifaces: list[tuple[int, str, int]]) -> None:
        self.buf, self.offsets, self.contexts, self.join = buf, offsets, contexts, join
        self._ifaces = ifaces       # by interface id: (linktype, display name, ifindex)

    def __len__(self) -> int:
        return len(self.offsets)

    def context(self, key: bytes):
        ctx = self.contexts.get(key, MISSING)
        return self.join(key) if ctx is MISSING else ctx

    def __iter__(self) -> Iterator[Packet]:
        buf, unpack, ifaces, directions = self.buf, _RECORD.unpack_from, self._ifaces, _DIRECTIONS
        context = self.context
        for off in self.offsets:
            direction, key, iface_id, hi, lo, caplen, length = unpack(buf, off)
            linktype, name, ifindex = ifaces[iface_id]
            data_at = off + HEADER_LEN
            yield Packet((hi << 32) | lo, buf[data_at:data_at + caplen], length, linktype, name,
                         directions[direction], context(key), ifindex)

    def tail(self, n: int) -> "Batch":
        """The packets after the first n."""
        return Batch(self.buf, self.offsets[n:], self.contexts, self.join, self._ifaces)


class Sink(Protocol):
    """Where joined packets go (a file, tcpdump's lines). The engine calls write with the
    joined packets of every ring batch, tick after every batch (and when idle: a sink flushes
    or rotates then), close once at the end; `finished` set by a sink ends the capture (-W
    files all written). `wait_seconds`: how long the engine may sleep while no packet comes
    (a file's buffer timeout; None: the engine's own patience, for lines and FIFOs)."""

    finished: bool
    wait_seconds: float | None

    def add_interface(self, iface_id: int, iface) -> None: ...

    def write(self, packets: Batch) -> None: ...

    def tick(self, now: float) -> None: ...

    def close(self) -> None: ...

"""What the pipeline hands to its sinks: one packet with its context, and the Sink protocol."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ptcap.kernel.records import Direction, LinkType

if TYPE_CHECKING:       # the join stage (ptcap.meta) fills it; the pipeline only carries it
    from ptcap.meta.context import ProcessContext

__all__ = ["Direction", "LinkType", "Packet", "Sink"]


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
    iface_id: int = 0               # pcapng interface id (the session's numbering)
    epb: bytes = b""                # from the kernel: the EPB body's fixed fields, as laid out
    key: bytes = b""                # from the kernel: what `context` was joined from


class Sink(Protocol):
    """Where joined packets go (a file, tcpdump's lines). The engine calls write for every
    packet, tick after every batch (and when idle: a sink flushes or rotates then), close
    once at the end; `finished` set by a sink ends the capture (-W files all written)."""

    finished: bool

    def add_interface(self, iface_id: int, iface) -> None: ...

    def write(self, packet: Packet) -> None: ...

    def tick(self, now: float) -> None: ...

    def close(self) -> None: ...

"""The packet record every sink sees: bytes, lengths, time, interface, direction, context."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ptcap.meta.context import ProcessContext


class Direction(enum.IntEnum):
    """Packet direction, numbered as pcapng's epb_flags inbound/outbound bits."""

    UNKNOWN = 0
    IN = 1
    OUT = 2


class LinkType(enum.IntEnum):
    """The link-layer header types (LINKTYPE_*) ptcap writes and reads most."""

    NULL = 0
    ETHERNET = 1
    RAW = 101
    LOOP = 108
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


@dataclass(slots=True)
class Packet:
    ts_ns: int                      # wall-clock time, nanoseconds since the epoch
    data: bytes                     # the captured bytes (caplen = len(data))
    orig_len: int                   # length on the wire
    linktype: int                   # LINKTYPE_* of data
    ifname: str = ""
    direction: Direction = Direction.UNKNOWN
    context: ProcessContext | None = None
    ifindex: int = 0

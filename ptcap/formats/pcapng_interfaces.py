"""A pcapng Interface Description Block's options, checked as libpcap 1.10 checks them."""
from __future__ import annotations

import struct
from typing import Iterator

from ptcap.errors import PtcapError

TOO_SHORT = "block of type %u in pcapng dump file is too short"     # libpcap's words


def interface_options(body: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    """An Interface Description Block's options, checked as libpcap 1.10 checks them (its
    order, its words): each must fit in the block, the end option must be empty, and the
    time stamp options must have their size, be given once and be representable."""
    n, off, seen = len(body), 8, set()
    while off < n:
        if off + 4 > n:
            raise PtcapError(TOO_SHORT % 1)
        code, length = struct.unpack_from(order + "HH", body, off)
        end = off + 4 + ((length + 3) & ~3)
        if end > n:
            raise PtcapError(TOO_SHORT % 1)
        value = body[off + 4:off + 4 + length]
        if code == 0:
            if length:
                raise PtcapError("Interface Description Block has opt_endofopt option with length "
                                 f"{length} != 0")
            return
        if code in (9, 14):
            name, size = ("if_tsresol", 1) if code == 9 else ("if_tsoffset", 8)
            if length != size:
                raise PtcapError(f"Interface Description Block has {name} option with length {length} != {size}")
            if code in seen:
                raise PtcapError(f"Interface Description Block has more than one {name} option")
            seen.add(code)
            res = value[0]
            if code == 9 and (res & 0x7F > 63 if res & 0x80 else res > 19):   # no 64-bit divisor
                power = f"2^-{res & 0x7F}" if res & 0x80 else f"10^-{res}"
                raise PtcapError(f"Interface Description Block if_tsresol option resolution {power} is too high")
        yield code, value
        off = end

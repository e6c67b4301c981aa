"""Internet checksums, for -v's '(correct)' / 'bad cksum' remarks."""
from __future__ import annotations

import sys

_LITTLE = sys.byteorder == "little"


def ones_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of big-endian words, folded."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    words = memoryview(data).cast("H")
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if _LITTLE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s


def cksum(*parts: bytes) -> int:
    """The checksum value of the concatenated parts (0 when they verify)."""
    return ~ones_sum(b"".join(parts)) & 0xFFFF


def shouldbe(field: int, computed: int) -> int:
    """What the checksum field should have held (tcpdump's in_cksum_shouldbe)."""
    s = field + computed
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s & 0xFFFF

"""Room in the ring that packets cannot take: process events (exec, fork, exit) share the
ring with packets, and a flood of packets must not crowd them out (a process would keep an
old command or lose its parent). The capture and hook objects refuse a packet, counted as
dropped by kernel, when the ring would be fuller than its size minus the headroom with it;
a process event that still finds no room is counted as lost (Counter.PROC_LOST).

An exec record is 1312 bytes in the ring, a fork or exit 32.
"""
from __future__ import annotations

from ptcap.kernel.records import RING_CONFIG

MIN_HEADROOM = 256 << 10        # 200 execs at least
HEADROOM_SHARE = 32             # of a big ring: 2 MiB of the default 64 MiB
WAKE_MIN_SHIFT, WAKE_MAX_SHIFT = 14, 20


def headroom(ring_size: int) -> int:
    """Bytes of a ring of `ring_size` bytes that only process events may fill."""
    return min(ring_size // 4, max(ring_size // HEADROOM_SHARE, MIN_HEADROOM))


def wake_shift(ring_size: int) -> int:
    """The reader is woken once per 2^shift bytes queued: a 32nd of the ring, between 16 KiB
    and 1 MiB (the default 64 MiB ring: 1 MiB, a wake-up every 7,500 small packets). Each
    wake-up costs the reader a pass through Python; a 32nd leaves it the rest of the ring to
    catch up in."""
    share = max(ring_size // 32, 1)
    return max(WAKE_MIN_SHIFT, min(WAKE_MAX_SHIFT, share.bit_length() - 1))


def ring_config(ring_size: int) -> bytes:
    """The objects' .rodata (struct ptcap_ring_config) for a ring of `ring_size` bytes."""
    return RING_CONFIG.struct.pack(ring_size - headroom(ring_size), wake_shift(ring_size))

"""Reading a BPF ring buffer through mmap, a batch at a time (the hot path).

The kernel maps the ring's data pages twice in a row, so a record that wraps around the
end is still contiguous in our mapping. Records are 8-byte aligned, each behind an 8-byte
header: u32 length (bit 31 busy, bit 30 discarded) and u32 page offset.

The consumer and producer positions are shared with the kernel while it runs: they are read
and written as whole aligned u64s (memoryview items), never with struct.pack_into, which
zero-fills before it writes: for that instant the kernel saw a consumer position of 0, an
apparently full ring, and refused records with room to spare.
"""
from __future__ import annotations

import mmap
import os
import select
import struct

_BUSY = 1 << 31
_DISCARD = 1 << 30
_U32 = struct.Struct("<I")


class RingBuffer:
    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.map_fd = map_fd
        self.size = size
        self.mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data = memoryview(self._producer)[page:]
        self._data_off = page
        self.mapping, self.data_offset = self._producer, page     # a record at data offset X is at mapping[page + X]
        self._epoll = select.epoll()
        # edge-triggered: a wait returns on the kernel's next wake-up (bpf/ring.h: once per a
        # 32nd of the ring queued) or the timeout, not at once whenever anything is queued
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self._drained: set[int] = set()
        self._cons_pos = memoryview(self._consumer)[:8].cast("Q")
        self._prod_pos = memoryview(self._producer)[:8].cast("Q")
        self.cons = self._cons_pos[0]
        self._next = self.cons

    def wake_on(self, fd: int, drain: bool = True) -> None:
        """A wait also ends when `fd` (non-blocking) becomes readable. `drain`: the wait reads
        it empty (the signal wake-up pipe, so that Ctrl-C does not wait out a long idle poll);
        otherwise only its new data ends a wait and its owner reads it (a namespace's link
        notifications, so that a new interface is tapped at once)."""
        if drain:
            self._epoll.register(fd, select.EPOLLIN)
            self._drained.add(fd)
        else:
            self._epoll.register(fd, select.EPOLLIN | select.EPOLLET)

    def wait(self, timeout: float) -> None:
        """Sleep until the kernel wakes us (a wake-up while we were reading counts), one of
        wake_on's descriptors is readable, or the timeout passes."""
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            return
        for fd, _ in events:
            if fd in self._drained:
                try:
                    while os.read(fd, 512):
                        pass
                except OSError:     # BlockingIOError: emptied
                    pass

    def pending(self) -> bool:
        """Does the ring hold anything not yet handed back (ready, reserved or discarded)?
        One read of the kernel's positions: an idle wake-up need not look further."""
        return self._prod_pos[0] != self._cons_pos[0]

    def batch(self) -> tuple[mmap.mmap, list[int]]:
        """Every ready record: (buffer, [offset of each record's data]).

        The records stay valid until release() hands them back to the kernel.
        """
        prod = self._prod_pos[0]
        cons = self.cons
        buf = self._producer
        base = self._data_off
        mask = self.mask
        unpack = _U32.unpack_from
        offsets: list[int] = []
        append = offsets.append
        while cons < prod:
            off = base + (cons & mask)
            length = unpack(buf, off)[0]
            if length & _BUSY:
                break
            if not length & _DISCARD:
                append(off + 8)
            cons += ((length & 0x3FFFFFFF) + 15) & ~7
        self._next = cons
        return buf, offsets

    def release(self) -> None:
        """Hand the records of the last batch() back to the kernel."""
        if self._next != self.cons:
            self.cons = self._next
            self._cons_pos[0] = self.cons

    def follow(self, cons: int) -> None:
        """Another reader of this ring (the native drain) moved the consumer position to cons."""
        self.cons = self._next = cons

    def close(self) -> None:
        for view in ("data", "_cons_pos", "_prod_pos"):
            try:
                getattr(self, view).release()
            except (AttributeError, ValueError):
                pass
        self._epoll.close()
        for m in (self._producer, self._consumer):
            try:
                m.close()
            except (BufferError, ValueError):
                pass


def round_size(kib: int | None, default: int = 64 << 20) -> int:
    """A ring size: a power of two of pages, at least 1 MiB (-B is in KiB like tcpdump)."""
    want = default if not kib else kib * 1024
    size = 1 << 20
    while size < want:
        size <<= 1
    return size


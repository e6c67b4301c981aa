"""The byte source of the capture readers, and libpcap's limits on snapshot lengths."""
from __future__ import annotations

from typing import BinaryIO

CHUNK = 1 << 20
MAX_SNAPLEN = 262144
_DLT_MAX_SNAPLEN = {231: 128 * 1024 * 1024, 279: 8 * 1024 * 1024, 249: 1024 * 1024}  # DBUS, EBHSCR, USBPCAP


def max_snaplen_for(linktype: int) -> int:
    """libpcap's max_snaplen_for_dlt()."""
    return _DLT_MAX_SNAPLEN.get(linktype, MAX_SNAPLEN)


class Stream:
    """A forward-only byte source with its own buffer: fewer read() calls than one per field."""

    __slots__ = ("f", "buf", "pos", "_read")

    def __init__(self, f: BinaryIO, head: bytes = b"") -> None:
        self.f = f
        # what a pipe has now (read1), not a whole chunk: a pipe's packets are printed as
        # they come, as tcpdump -r - prints them
        self._read = getattr(f, "read1", f.read)
        self.buf = head
        self.pos = 0

    def before_waiting(self, wait) -> None:
        """A pipe: call `wait()` before a read that would block; it returns once the pipe
        has more (the packets read so far are printed meanwhile, as tcpdump -r - does)."""
        import select
        read, fd = self._read, self.f.fileno()

        def waiting_read(n: int) -> bytes:
            if not select.select([fd], [], [], 0)[0]:
                wait(fd)
            return read(n)
        self._read = waiting_read

    def take(self, n: int) -> bytes:
        """Exactly n bytes, or fewer at end of file."""
        buf, pos = self.buf, self.pos
        end = pos + n
        if end <= len(buf):
            self.pos = end
            return buf[pos:end]
        parts = [buf[pos:]]
        have = len(buf) - pos
        while have < n:
            chunk = self._read(CHUNK)      # never one read of a size a file claims
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        buf = b"".join(parts)
        self.buf = buf
        self.pos = min(n, len(buf))
        return buf[:n]

    def fill(self, need: int) -> None:
        """At least `need` bytes from the position in the buffer (which starts there after),
        or what is left of the file."""
        if self.pos + need <= len(self.buf):
            return
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        while have < need:
            chunk = self._read(CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf, self.pos = b"".join(parts), 0

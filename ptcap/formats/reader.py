"""Read capture files: classic pcap (every magic) and pcapng, streamed, as Packet records.

Errors are PtcapError with libpcap's wording, so 'ptcap -r' fails like 'tcpdump -r'.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterator

from ptcap.errors import PtcapError
from ptcap.formats.pcapng_reader import PCAPNG_SHB, MixedLinkTypes, PcapngReading
from ptcap.formats.stream import MAX_SNAPLEN, Stream, max_snaplen_for
from ptcap.pipeline.packet import Packet

__all__ = ["CaptureReader", "MixedLinkTypes", "is_stdin", "open_capture", "read_packets", "stdin"]

# classic pcap magics -> (byte order, nanosecond timestamps, modified-pcap record header)
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False, False),
    b"\xa1\xb2\xc3\xd4": (">", False, False),
    b"\x4d\x3c\xb2\xa1": ("<", True, False),
    b"\xa1\xb2\x3c\x4d": (">", True, False),
    b"\x34\xcd\xb2\xa1": ("<", False, True),   # Alexey Kuznetzov's modified pcap
    b"\xa1\xb2\xcd\x34": (">", False, True),
}


class CaptureReader(PcapngReading):
    """Iterate the packets of a pcap or pcapng stream.

    After construction, `linktype` and `snaplen` describe the first interface, as
    tcpdump's 'reading from file' line reports them.
    """

    def __init__(self, f: BinaryIO, name: str = "-", head: bytes = b"") -> None:
        self.name = name
        self._s = Stream(f, head)
        self.format = ""
        self.application = ""       # pcapng: the section's shb_userappl ("ptcap 0.1", ...)
        self.linktype = 1
        self.snaplen = MAX_SNAPLEN
        self.linktype_ext = 0
        self._pending: list[Packet] = []
        magic = self._s.take(4)
        if len(magic) < 4:
            raise PtcapError(f"truncated dump file; tried to read 4 file header bytes, only got {len(magic)}")
        if magic in _PCAP_MAGICS:
            self._open_pcap(magic)
        elif magic == PCAPNG_SHB:
            self._open_pcapng()
        else:
            raise PtcapError("unknown file format")

    # ---- classic pcap -------------------------------------------------------------------
    def _open_pcap(self, magic: bytes) -> None:
        order, nano, modified = _PCAP_MAGICS[magic]
        head = self._s.take(20)
        if len(head) < 20:       # (libpcap counts the bytes after the magic)
            raise PtcapError(f"truncated dump file; tried to read 24 file header bytes, only got {len(head)}")
        major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(order + "HHiIII", head)
        # libpcap 1.10's checks, in its words
        if major < 2:
            raise PtcapError("archaic pcap savefile format")
        if not (major == 2 and minor <= 4) and not (major == 543 and minor == 0):
            raise PtcapError(f"unsupported pcap savefile version {major}.{minor}")
        self.format = "pcap"
        self.linktype = linktype & 0x03FFFFFF
        self.linktype_ext = linktype & 0xFC000000     # the FCS length bits, kept by -w x.pcap
        # as libpcap: a snapshot length that is 0 or negative (as a C int) means the maximum
        if not 0 < snaplen < 1 << 31:
            self.snaplen = max_snaplen_for(self.linktype)
        elif modified and self.linktype == 1:
            # as libpcap: that format's Ethernet files left the link header out of their snaplen
            self.snaplen = snaplen + 14
        else:
            self.snaplen = snaplen
        self._order = order
        self._nano = nano
        self._rec = 24 if modified else 16

    def _iter_pcap(self) -> Iterator[Packet]:
        # the hot loop: parse records straight out of a large buffer
        s = self._s
        rec = self._rec
        hdr = struct.Struct(self._order + "IIII").unpack_from
        scale = 1 if self._nano else 1000
        limit = 1_000_000_000 if self._nano else 1_000_000
        linktype = self.linktype
        snaplen = self.snaplen
        max_caplen = max_snaplen_for(linktype)
        buf, pos = s.buf, s.pos
        n = len(buf)
        while True:
            if pos + rec > n:
                s.buf, s.pos = buf, pos
                h = s.take(rec)
                if len(h) < rec:
                    if h:
                        raise PtcapError(f"truncated dump file; tried to read {rec} header bytes, only got {len(h)}")
                    return
                buf, pos = s.buf, s.pos - rec
                n = len(buf)
            sec, frac, caplen, orig = hdr(buf, pos)
            if caplen > max_caplen:
                if caplen > snaplen:
                    raise PtcapError(f"invalid packet capture length {caplen}, bigger than snaplen of {snaplen}")
                raise PtcapError(f"invalid packet capture length {caplen}, bigger than maximum of {max_caplen}")
            start = pos + rec
            end = start + caplen
            if end > n:
                s.buf, s.pos = buf, start
                data = s.take(caplen)
                if len(data) < caplen:
                    raise PtcapError(f"truncated dump file; tried to read {caplen} captured bytes, only got {len(data)}")
                buf, pos = s.buf, s.pos
                n = len(buf)
            else:
                data = buf[start:end]
                pos = end
            if caplen > snaplen:
                data = data[:snaplen]
            if frac < limit:
                yield Packet(sec * 1_000_000_000 + frac * scale, data, orig, linktype)
            else:
                yield Packet(sec * 1_000_000_000 + frac * scale, data, orig, linktype, pcap_ts=(sec, frac, self._nano))

    def before_waiting(self, wait) -> None:
        """See Stream.before_waiting (reading a pipe)."""
        self._s.before_waiting(wait)

    def __iter__(self) -> Iterator[Packet]:
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()


_STDIN: list[BinaryIO] = []


def stdin() -> BinaryIO:
    """Standard input for '-r -', unbuffered, never closing descriptor 0. sys.stdin.buffer has
    a lock: a thread blocked in its read (a feeder whose tcpdump left, `| head -1`) held it
    when the interpreter exited, which aborted ('could not acquire lock ... at interpreter
    shutdown')."""
    if not _STDIN:
        _STDIN.append(open(0, "rb", buffering=0, closefd=False))
    return _STDIN[0]


def is_stdin(f) -> bool:
    return bool(_STDIN) and f is _STDIN[0]


def open_capture(path: str, head: bytes = b"") -> tuple[CaptureReader, BinaryIO]:
    """Open a path ('-' = stdin, whose first bytes may have been read already: `head`) and
    read its header; the caller closes the returned file."""
    if path == "-":
        f = stdin()
    else:
        try:
            f = open(path, "rb", buffering=0)
        except IsADirectoryError as e:      # libpcap opens it and fails on the read
            raise PtcapError(f"error reading dump file: {e.strerror}") from None
        except OSError as e:
            raise PtcapError(f"{path}: {e.strerror}") from None
    try:
        return CaptureReader(f, path, head if path == "-" else b""), f
    except BaseException:
        if not is_stdin(f):
            f.close()
        raise


def read_packets(path: str) -> Iterator[Packet]:
    """All packets of a capture file, streamed."""
    reader, f = open_capture(path)
    try:
        yield from reader
    finally:
        if not is_stdin(f):
            f.close()

"""Read capture files: classic pcap (every magic) and pcapng, streamed, as Packet records.

Errors are PtcapError with libpcap's wording, so 'ptcap -r' fails like 'tcpdump -r'.
"""
from __future__ import annotations

import struct
import sys
from typing import BinaryIO, Iterator

from ptcap.meta.context import ProcessContext
from ptcap.errors import PtcapError
from ptcap.pipeline.packet import Direction, Packet

_CHUNK = 1 << 20
MAX_SNAPLEN = 262144
SHB_INSANE_MAX = 1024 * 1024        # libpcap's BT_SHB_INSANE_MAX
MAX_BLOCKSIZE = 16 * 1024 * 1024    # libpcap's INITIAL_MAX_BLOCKSIZE
_DLT_MAX_SNAPLEN = {231: 128 * 1024 * 1024, 279: 8 * 1024 * 1024, 249: 1024 * 1024}  # DBUS, EBHSCR, USBPCAP


def max_snaplen_for(linktype: int) -> int:
    """libpcap's max_snaplen_for_dlt()."""
    return _DLT_MAX_SNAPLEN.get(linktype, MAX_SNAPLEN)

# classic pcap magics -> (byte order, nanosecond timestamps, modified-pcap record header)
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False, False),
    b"\xa1\xb2\xc3\xd4": (">", False, False),
    b"\x4d\x3c\xb2\xa1": ("<", True, False),
    b"\xa1\xb2\x3c\x4d": (">", True, False),
    b"\x34\xcd\xb2\xa1": ("<", False, True),   # Alexey Kuznetzov's modified pcap
    b"\xa1\xb2\xcd\x34": (">", False, True),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_DIRECTIONS = (Direction.UNKNOWN, Direction.IN, Direction.OUT, Direction.UNKNOWN)


class _Stream:
    """A forward-only byte source with its own buffer: fewer read() calls than one per field."""

    __slots__ = ("f", "buf", "pos")

    def __init__(self, f: BinaryIO, head: bytes = b"") -> None:
        self.f = f
        self.buf = head
        self.pos = 0

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
            chunk = self.f.read(_CHUNK)     # never one read of a size a file claims
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        buf = b"".join(parts)
        self.buf = buf
        self.pos = min(n, len(buf))
        return buf[:n]


class CaptureReader:
    """Iterate the packets of a pcap or pcapng stream.

    After construction, `linktype` and `snaplen` describe the first interface, as
    tcpdump's 'reading from file' line reports them.
    """

    def __init__(self, f: BinaryIO, name: str = "-", head: bytes = b"") -> None:
        self.name = name
        self._s = _Stream(f, head)
        self.format = ""
        self.linktype = 1
        self.snaplen = MAX_SNAPLEN
        self._pending: list[Packet] = []
        magic = self._s.take(4)
        if len(magic) < 4:
            raise PtcapError(f"truncated dump file; tried to read 4 file header bytes, only got {len(magic)}")
        if magic in _PCAP_MAGICS:
            self._open_pcap(magic)
        elif magic == _PCAPNG_SHB:
            self._open_pcapng()
        else:
            raise PtcapError("unknown file format")

    # ---- classic pcap -------------------------------------------------------------------
    def _open_pcap(self, magic: bytes) -> None:
        order, nano, modified = _PCAP_MAGICS[magic]
        head = self._s.take(20)
        if len(head) < 20:
            raise PtcapError(f"truncated dump file; tried to read 24 file header bytes, only got {len(head) + 4}")
        major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(order + "HHiIII", head)
        if major != 2 and not (major == 543 and minor == 0):
            raise PtcapError(f"unsupported pcap savefile version {major}.{minor}")
        self.format = "pcap"
        self.linktype = linktype & 0x03FFFFFF
        # as libpcap: a snapshot length that is 0 or negative (as a C int) means the maximum
        self.snaplen = snaplen if 0 < snaplen < 1 << 31 else max_snaplen_for(self.linktype)
        self._order = order
        self._nano = nano
        self._rec = 24 if modified else 16

    def _iter_pcap(self) -> Iterator[Packet]:
        # the hot loop: parse records straight out of a large buffer
        s = self._s
        rec = self._rec
        hdr = struct.Struct(self._order + "IIII").unpack_from
        scale = 1 if self._nano else 1000
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
            yield Packet(sec * 1_000_000_000 + frac * scale, data, orig, linktype)

    # ---- pcapng -------------------------------------------------------------------------
    def _open_pcapng(self) -> None:
        self.format = "pcapng"
        self._ifaces: list[tuple[int, int, str, int, int, int]] = []  # linktype, snaplen, name, num, den, offset_ns
        self._ctx_cache: dict[tuple[bytes, ...], ProcessContext | None] = {}
        self._opt_cache: dict[bytes, tuple[Direction, ProcessContext | None]] = {}
        self._read_shb(first=True)
        # read ahead to the first interface, so linktype/snaplen are known before printing
        while not self._ifaces:
            pkt = self._next_block()
            if pkt is _EOF:
                raise PtcapError("the capture file has no Interface Description Blocks")
            if pkt is not None:
                self._pending.append(pkt)

    def _read_shb(self, first: bool) -> None:
        head = self._s.take(8)
        if len(head) < 8:
            raise PtcapError(f"truncated dump file; tried to read {8 + 4} file header bytes, only got {len(head) + 4}")
        bom = head[4:8]
        if bom == b"\x4d\x3c\x2b\x1a":
            self._order = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            self._order = ">"
        else:
            raise PtcapError("unknown file format" if first else "pcapng section header has a bad byte-order magic")
        (total,) = struct.unpack(self._order + "I", head[:4])
        if total < 28 or total > SHB_INSANE_MAX:
            # libpcap's words; the length is never used as a read size
            raise PtcapError(f"Section Header Block in pcapng dump file has invalid length 28 < _{total}_ < "
                             f"{SHB_INSANE_MAX} (BT_SHB_INSANE_MAX)")
        if total % 4:
            raise PtcapError(f"block in pcapng dump file has a length of {total} that is not a multiple of 4")
        rest = self._s.take(total - 12)
        if len(rest) < total - 12:
            raise PtcapError(f"truncated dump file; tried to read {total} bytes, only got {len(rest) + 12}")
        major = struct.unpack_from(self._order + "H", rest, 0)[0]
        if major != 1:
            raise PtcapError(f"unsupported pcapng savefile version {major}")
        self._ifaces = []
        self._u32 = struct.Struct(self._order + "I").unpack_from
        self._epb = struct.Struct(self._order + "IIIII").unpack_from

    def _options(self, body: bytes, off: int) -> Iterator[tuple[int, bytes]]:
        order = self._order
        n = len(body)
        while off + 4 <= n:
            code, length = struct.unpack_from(order + "HH", body, off)
            if code == 0:
                return
            value = body[off + 4:off + 4 + length]
            yield code, value
            off += 4 + ((length + 3) & ~3)

    def _add_interface(self, body: bytes) -> None:
        linktype, _res, snaplen = struct.unpack_from(self._order + "HHI", body, 0)
        name, num, den, offset = "", 1000, 1, 0  # nanoseconds = ts * num // den
        for code, value in self._options(body, 8):
            if code == 2:
                name = value.decode(errors="replace").rstrip("\0")
            elif code == 9 and value:
                res = value[0]
                if res & 0x80:
                    num, den = 1_000_000_000, 1 << (res & 0x7F)
                elif res <= 9:
                    num, den = 10 ** (9 - res), 1
                else:
                    num, den = 1, 10 ** (res - 9)
            elif code == 14 and len(value) >= 8:
                offset = struct.unpack(self._order + "q", value[:8])[0] * 1_000_000_000
        if not self._ifaces:
            self.linktype = linktype
            self.snaplen = snaplen if 0 < snaplen < 1 << 31 else max_snaplen_for(linktype)
        self._ifaces.append((linktype, snaplen or MAX_SNAPLEN, name, num, den, offset))

    def _context(self, comments: tuple[bytes, ...]) -> ProcessContext | None:
        cache = self._ctx_cache
        ctx = cache.get(comments, _EOF)
        if ctx is _EOF:
            ctx = ProcessContext.from_comments([c.decode(errors="replace") for c in comments])
            if len(cache) > 4096:
                cache.clear()
            cache[comments] = ctx
        return ctx

    def _packet_options(self, options: bytes) -> tuple[Direction, ProcessContext | None]:
        """(direction, process) from a packet block's options; the same options bytes (every
        packet of a process in one direction, in ptcap's files) are parsed once."""
        direction = Direction.UNKNOWN
        comments = []
        for code, value in self._options(options, 0):
            if code == 1:
                comments.append(value)
            elif code == 2 and len(value) >= 4:
                direction = _DIRECTIONS[self._u32(value, 0)[0] & 3]
        known = (direction, self._context(tuple(comments)) if comments else None)
        cache = self._opt_cache
        if len(cache) > 4096:
            cache.clear()
        cache[options] = known
        return known

    def _interface(self, ifid: int) -> tuple[int, int, str, int, int, int]:
        try:
            return self._ifaces[ifid]
        except IndexError:
            raise PtcapError(f"a packet arrived on interface {ifid}, but there's no Interface Description Block for that interface") from None

    def _next_block(self):
        """Read one block: a Packet, None for a non-packet block, or _EOF."""
        s = self._s
        head = s.take(8)
        if len(head) < 8:
            if head:
                raise PtcapError(f"truncated dump file; tried to read 8 header bytes, only got {len(head)}")
            return _EOF
        if head[:4] == _PCAPNG_SHB:
            s.pos -= 4  # give back the length and BOM; _read_shb reads them
            self._read_shb(first=False)
            return None
        btype, total = struct.unpack(self._order + "II", head)
        if total < 12 or total % 4:
            raise PtcapError(f"block in pcapng dump file has a length of {total} < 12" if total < 12
                             else f"block in pcapng dump file has a length of {total} that is not a multiple of 4")
        if total > MAX_BLOCKSIZE:
            raise PtcapError(f"pcapng block size {total} > maximum {MAX_BLOCKSIZE}")
        body = s.take(total - 8)
        if len(body) < total - 8:
            raise PtcapError(f"truncated dump file; tried to read {total} bytes, only got {len(body) + 8}")
        body = body[:-4]  # trailing total length
        if btype == 6:  # Enhanced Packet Block
            if len(body) < 20:
                raise PtcapError("block in pcapng dump file is too short to hold an Enhanced Packet Block")
            ifid, hi, lo, caplen, orig = self._epb(body, 0)
            if caplen > len(body) - 20:
                raise PtcapError(f"invalid packet capture length {caplen}, bigger than the block")
            linktype, snaplen, name, num, den, offset = self._interface(ifid)
            data = body[20:20 + caplen]
            ts = ((hi << 32) | lo) * num // den + offset
            opt = 20 + ((caplen + 3) & ~3)
            if opt + 4 <= len(body):
                options = body[opt:]
                known = self._opt_cache.get(options)
                if known is None:
                    known = self._packet_options(options)
                direction, ctx = known
            else:
                direction, ctx = Direction.UNKNOWN, None
            return Packet(ts, data, orig, linktype, name, direction, ctx, ifid)
        if btype == 3:  # Simple Packet Block: always interface 0
            linktype, snaplen, name, num, den, offset = self._interface(0)
            (orig,) = self._u32(body, 0)
            data = body[4:4 + min(orig, snaplen, len(body) - 4)]
            return Packet(0, data, orig, linktype, name, Direction.UNKNOWN, None, 0)
        if btype == 2:  # obsolete Packet Block
            if len(body) < 20:
                raise PtcapError("block in pcapng dump file is too short to hold a Packet Block")
            ifid, _drops = struct.unpack_from(self._order + "HH", body, 0)
            _, hi, lo, caplen, orig = self._epb(body, 0)
            linktype, snaplen, name, num, den, offset = self._interface(ifid)
            data = body[20:20 + min(caplen, len(body) - 20)]
            ts = ((hi << 32) | lo) * num // den + offset
            return Packet(ts, data, orig, linktype, name, Direction.UNKNOWN, None, ifid)
        if btype == 1:
            if len(body) < 8:
                raise PtcapError("block in pcapng dump file is too short to hold an Interface Description Block")
            self._add_interface(body)
        return None  # name resolution, statistics, custom, decryption secrets…: skipped

    def _iter_pcapng(self) -> Iterator[Packet]:
        pending, self._pending = self._pending, []
        yield from pending
        # the hot loop: Enhanced Packet Blocks parsed straight out of the buffer; any other
        # block, one that crosses the buffer's end, or anything odd goes to _next_block
        s = self._s
        nxt = self._next_block
        cache = self._opt_cache
        parse_options = self._packet_options
        ifaces = self._ifaces
        head = struct.Struct(self._order + "II").unpack_from
        epb = self._epb
        unknown = (Direction.UNKNOWN, None)
        buf, pos = s.buf, s.pos
        n = len(buf)
        while True:
            if pos + 28 <= n:
                btype, total = head(buf, pos)
                end = pos + total
                if btype == 6 and end <= n and 32 <= total <= MAX_BLOCKSIZE and not total & 3:
                    ifid, hi, lo, caplen, orig = epb(buf, pos + 8)
                    start = pos + 28
                    opt = start + ((caplen + 3) & ~3)
                    if opt <= end - 4 and ifid < len(ifaces):
                        linktype, _snaplen, name, num, den, offset = ifaces[ifid]
                        if opt + 4 <= end - 4:
                            options = buf[opt:end - 4]
                            known = cache.get(options)
                            if known is None:
                                known = parse_options(options)
                        else:
                            known = unknown
                        pos = end
                        yield Packet(((hi << 32) | lo) * num // den + offset, buf[start:start + caplen], orig,
                                     linktype, name, known[0], known[1], ifid)
                        continue
            s.buf, s.pos = buf, pos
            pkt = nxt()
            if pkt is _EOF:
                return
            head = struct.Struct(self._order + "II").unpack_from    # a new section may change them
            epb = self._epb
            ifaces = self._ifaces
            buf, pos = s.buf, s.pos
            n = len(buf)
            if pkt is not None:
                yield pkt

    def __iter__(self) -> Iterator[Packet]:
        if self.format == "pcap":
            return self._iter_pcap()
        return self._iter_pcapng()


class _Eof:
    pass


_EOF = _Eof()


def open_capture(path: str, head: bytes = b"") -> tuple[CaptureReader, BinaryIO]:
    """Open a path ('-' = stdin, whose first bytes may have been read already: `head`) and
    read its header; the caller closes the returned file."""
    if path == "-":
        f = sys.stdin.buffer
    else:
        try:
            f = open(path, "rb", buffering=0)
        except OSError as e:
            raise PtcapError(f"{path}: {e.strerror}") from None
    try:
        return CaptureReader(f, path, head if path == "-" else b""), f
    except BaseException:
        if f is not sys.stdin.buffer:
            f.close()
        raise


def read_packets(path: str) -> Iterator[Packet]:
    """All packets of a capture file, streamed."""
    reader, f = open_capture(path)
    try:
        yield from reader
    finally:
        if f is not sys.stdin.buffer:
            f.close()

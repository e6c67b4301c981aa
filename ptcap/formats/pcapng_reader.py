"""Reading pcapng: sections, interfaces, packet blocks and their options (process comments,
direction) as Packet records, or as the file's own blocks for a tcpdump that reads them.

Errors are PtcapError with libpcap's wording, so 'ptcap -r' fails like 'tcpdump -r'.
"""
from __future__ import annotations

import struct
from typing import Iterator

from ptcap.errors import PtcapError
from ptcap.formats.pcapng_interfaces import TOO_SHORT as _TOO_SHORT, interface_options
from ptcap.formats.stream import MAX_SNAPLEN, max_snaplen_for
from ptcap.meta.context import ProcessContext
from ptcap.pipeline.packet import Direction, Packet

SHB_INSANE_MAX = 1024 * 1024        # libpcap's BT_SHB_INSANE_MAX
MAX_BLOCKSIZE = 16 * 1024 * 1024    # libpcap's INITIAL_MAX_BLOCKSIZE
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_DIRECTIONS = (Direction.UNKNOWN, Direction.IN, Direction.OUT, Direction.UNKNOWN)




class MixedLinkTypes(Exception):
    """raw_blocks() met an interface of another link type than the first (one tcpdump reading
    pcapng takes one link type): the caller goes on with the reader's packets."""


_EOF = object()     # the end of the file, from _next_block
_BEFORE_IDB = "the capture file has a packet block before any Interface Description Blocks"


class PcapngReading:
    """CaptureReader's pcapng half: `_s` is its Stream, after the section header's magic."""

    def _open_pcapng(self) -> None:
        self.format = "pcapng"
        self._ifaces: list[tuple[int, int, str, int, int, int]] = []  # linktype, snaplen, name, num, den, offset_ns
        self._ctx_cache: dict[tuple[bytes, ...], ProcessContext | None] = {}
        self._opt_cache: dict[bytes, tuple[Direction, ProcessContext | None]] = {}
        self._read_shb()
        self._first: tuple[int, int] | None = None     # the file's first interface's type, snapshot
        # read ahead to the first interface, so linktype/snaplen are known before printing
        while not self._ifaces:
            pkt = self._next_block()
            if pkt is _EOF:
                raise PtcapError("the capture file has no Interface Description Blocks")
            if pkt is not None:
                self._pending.append(pkt)

    def _read_shb(self) -> None:
        head = self._s.take(8)
        if len(head) < 8:
            raise PtcapError("unknown file format")     # libpcap: too short to be pcapng
        bom = head[4:8]
        if bom == b"\x4d\x3c\x2b\x1a":
            self._order = "<"
        elif bom == b"\x1a\x2b\x3c\x4d":
            self._order = ">"
        else:
            raise PtcapError("unknown file format")
        (total,) = struct.unpack(self._order + "I", head[:4])
        if total < 28 or total > SHB_INSANE_MAX:
            # libpcap's words; the length is never used as a read size
            raise PtcapError(f"Section Header Block in pcapng dump file has invalid length 28 < _{total}_ < "
                             f"{SHB_INSANE_MAX} (BT_SHB_INSANE_MAX)")
        rest = self._s.take(total - 12)     # as libpcap: neither a multiple of 4 nor its trailer checked
        if len(rest) < total - 12:
            raise PtcapError(f"truncated pcapng dump file; tried to read {total - 12} bytes, only got {len(rest)}")
        major, minor = struct.unpack_from(self._order + "HH", rest, 0)
        if major != 1 or minor not in (0, 2):
            raise PtcapError(f"unsupported pcapng savefile version {major}.{minor}")
        self._ifaces = []
        self.application = next((v.decode(errors="replace").rstrip("\0") for code, v in
                                 self._options(rest[:-4], 12) if code == 4), "")    # shb_userappl
        self._u32 = struct.Struct(self._order + "I").unpack_from
        self._epb = struct.Struct(self._order + "IIIII").unpack_from

    def _next_section(self, body: bytes) -> None:
        """A later Section Header Block, read as libpcap 1.10 reads it: a block in the byte
        order of the section before, which it must keep; its interfaces start anew."""
        if len(body) < 16:
            raise PtcapError(_TOO_SHORT % 0x0A0D0D0A)
        bom, major = struct.unpack_from(self._order + "IH", body, 0)
        if bom == 0x4D3C2B1A:
            raise PtcapError("the file has sections with different byte orders")
        if bom != 0x1A2B3C4D:
            raise PtcapError("the file has a section with a bad byte order magic field")
        if major != 1:
            raise PtcapError(f"unknown pcapng savefile major version number {major}")
        self._ifaces = []

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
        for code, value in interface_options(body, self._order):
            if code == 2:
                name = value.decode(errors="replace").rstrip("\0")
            elif code == 9:
                res = value[0]
                if res & 0x80:
                    num, den = 1_000_000_000, 1 << (res & 0x7F)
                elif res <= 9:
                    num, den = 10 ** (9 - res), 1
                else:
                    num, den = 1, 10 ** (res - 9)
            elif code == 14:
                offset = struct.unpack(self._order + "q", value[:8])[0] * 1_000_000_000
        adjusted = snaplen if 0 < snaplen < 1 << 31 else max_snaplen_for(linktype)
        if self._first is None:
            self._first = (linktype, adjusted)
        elif linktype == self._first[0] and adjusted != self._first[1]:     # as libpcap; another type: ours
            raise PtcapError(f"an interface has a snapshot length {snaplen} different from the snapshot "
                             "length of the first interface")
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
        if self._first is None:
            raise PtcapError(_BEFORE_IDB)
        try:
            return self._ifaces[ifid]
        except IndexError:
            raise PtcapError(f"a packet arrived on interface {ifid}, but there's no Interface Description Block for that interface") from None

    def _check_caplen(self, caplen: int, room: int, btype: int) -> None:
        """A packet's captured length against the file's snapshot length, then its block."""
        if caplen > self.snaplen:
            raise PtcapError(f"invalid packet capture length {caplen}, bigger than snaplen of {self.snaplen}")
        if caplen > room:
            raise PtcapError(_TOO_SHORT % btype)

    def _next_block(self):
        """Read one block: a Packet, None for a non-packet block, or _EOF."""
        s = self._s
        head = s.take(8)
        if len(head) < 8:
            if head:
                raise PtcapError(f"truncated pcapng dump file; tried to read 8 bytes, only got {len(head)}")
            return _EOF
        btype, total = struct.unpack(self._order + "II", head)
        if total < 12 or total % 4:
            raise PtcapError(f"block in pcapng dump file has a length of {total} < 12" if total < 12
                             else f"block in pcapng dump file has a length of {total} that is not a multiple of 4")
        if total > MAX_BLOCKSIZE:
            raise PtcapError(f"pcapng block size {total} > maximum {MAX_BLOCKSIZE}")
        body = s.take(total - 8)
        if len(body) < total - 8:
            raise PtcapError(f"truncated pcapng dump file; tried to read {total - 8} bytes, only got {len(body)}")
        if struct.unpack_from(self._order + "I", body, len(body) - 4)[0] != total:
            raise PtcapError("block total length in header and trailer don't match")
        body = body[:-4]  # trailing total length
        if btype == 0x0A0D0D0A:
            self._next_section(body)
            return None
        if btype in (2, 3, 6) and self._first is None:     # before its length is judged: libpcap
            raise PtcapError(_BEFORE_IDB)                   # looks for an interface first
        if btype == 6:  # Enhanced Packet Block
            if len(body) < 20:
                raise PtcapError(_TOO_SHORT % btype)
            ifid, hi, lo, caplen, orig = self._epb(body, 0)
            linktype, snaplen, name, num, den, offset = self._interface(ifid)
            self._check_caplen(caplen, len(body) - 20, btype)       # in libpcap's order
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
                raise PtcapError(_TOO_SHORT % btype)
            ifid, _drops = struct.unpack_from(self._order + "HH", body, 0)
            _, hi, lo, caplen, orig = self._epb(body, 0)
            linktype, snaplen, name, num, den, offset = self._interface(ifid)
            self._check_caplen(caplen, len(body) - 20, btype)
            data = body[20:20 + min(caplen, len(body) - 20)]
            ts = ((hi << 32) | lo) * num // den + offset
            return Packet(ts, data, orig, linktype, name, Direction.UNKNOWN, None, ifid)
        if btype == 1:
            if len(body) < 8:
                raise PtcapError(_TOO_SHORT % btype)
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
        ifaces, snap = self._ifaces, self.snaplen
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
                    if opt <= end - 4 and ifid < len(ifaces) and caplen <= snap and \
                            buf[end - 4:end] == buf[pos + 4:pos + 8]:
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
            ifaces, snap = self._ifaces, self.snaplen
            buf, pos = s.buf, s.pos
            n = len(buf)
            if pkt is not None:
                yield pkt

    @property
    def byte_order(self) -> str:
        """The current section's byte order, as a struct prefix ("<" or ">")."""
        return self._order

    @property
    def interfaces(self) -> list[tuple[int, int, str, int, int, int]]:
        """The current section's interfaces so far: (link type, snapshot length, name,
        time stamp numerator and denominator to nanoseconds, offset in nanoseconds)."""
        return self._ifaces

    def raw_blocks(self, run: int = 512):
        """A pcapng file as its own blocks, for a tcpdump that reads them as they are. Yields
        (buffer, start, end, -2, [(interface id, (direction, process), n), ...], the last
        block's interface id and time stamp fields) for up to `run` Enhanced Packet Blocks in
        a row (n of them in a row with the same interface and options; scanned in C when the
        library is there: ptcap.formats.pcapng_scan);
        (buffer, start, end, interface id, (direction, process), None) for another packet
        block; (buffer, start, end, -1, None, None) for a block that is no packet. The first
        yield is what was read at the start (section header, first interfaces). Raises
        MixedLinkTypes before anything when the start was not kept, and before an interface
        block of another link type than the first (one tcpdump reading pcapng takes one link
        type; the block is consumed, and iterating the reader goes on after it)."""
        s = self._s
        if self.format != "pcapng" or self._pending or s.f.tell() != len(s.buf):
            raise MixedLinkTypes()  # the start is no longer in the buffer
        nxt = self._next_block
        cache = self._opt_cache
        parse_options = self._packet_options
        unknown = (Direction.UNKNOWN, None)
        first_linktype = self.linktype
        from ptcap.formats.pcapng_scan import scanner
        native = scanner()
        yield s.buf, 0, s.pos, -1, None, None
        fill = s.fill
        ifaces = self._ifaces
        head = struct.Struct(self._order + "II").unpack_from
        epb = struct.Struct(self._order + "I8xI").unpack_from   # interface id, captured length
        buf, pos = s.buf, s.pos
        n = len(buf)
        while True:
            if pos + 12 > n:
                s.pos = pos
                fill(12)
                buf, pos = s.buf, s.pos
                n = len(buf)
            if pos + 12 <= n:
                btype, total = head(buf, pos)
                end = pos + total
                if end > n:
                    s.pos = pos
                    fill(min(total, MAX_BLOCKSIZE))
                    buf, pos = s.buf, s.pos
                    n = len(buf)
                    end = pos + total
                metas: list = []            # Enhanced Packet Blocks in a row in the buffer
                start = last = pos
                if native is not None:
                    pos, last, runs = native.scan(buf, pos, self._order, len(ifaces), MAX_BLOCKSIZE,
                                                  self.snaplen, run)
                    for ifid, count, opt, length in runs:
                        if length:
                            options = buf[opt:opt + length]
                            known = cache.get(options)
                            if known is None:
                                known = parse_options(options)
                        else:
                            known = unknown
                        metas.append((ifid, known, count))
                else:
                    taken = count = 0
                    was = ifid_was = None
                    while pos + 12 <= n and taken < run:
                        btype, total = head(buf, pos)
                        end = pos + total
                        if btype != 6 or end > n or total < 32 or total > MAX_BLOCKSIZE or total & 3:
                            break
                        ifid, caplen = epb(buf, pos + 8)
                        opt = pos + 28 + ((caplen + 3) & ~3)
                        if opt > end - 4 or ifid >= len(ifaces) or caplen > self.snaplen or \
                                buf[end - 4:end] != buf[pos + 4:pos + 8]:
                            break   # the careful path says what is wrong (a trailer, say)
                        options = buf[opt:end - 4] if opt + 4 <= end - 4 else b""
                        if options != was or ifid != ifid_was:
                            if count:
                                metas.append((ifid_was, known, count))
                            known = cache.get(options) if options else unknown
                            if known is None:
                                known = parse_options(options)
                            was, ifid_was, count = options, ifid, 0
                        count += 1
                        taken += 1
                        last, pos = pos, end
                    if count:
                        metas.append((ifid_was, known, count))
                if metas:
                    yield buf, start, pos, -2, metas, buf[last + 8:last + 20]
                    continue
            s.pos = pos
            before = len(self._ifaces)
            pkt = nxt()             # the whole block is in the buffer: the buffer stays
            if pkt is _EOF:
                return
            if len(self._ifaces) > before and self._ifaces[-1][0] != first_linktype:
                raise MixedLinkTypes()
            if pkt is None:
                yield buf, pos, s.pos, -1, None, None
            else:
                yield buf, pos, s.pos, pkt.ifindex, (pkt.direction, pkt.context), None
            ifaces = self._ifaces   # a new section may change these
            head = struct.Struct(self._order + "II").unpack_from
            epb = struct.Struct(self._order + "I8xI").unpack_from
            buf, pos = s.buf, s.pos
            n = len(buf)

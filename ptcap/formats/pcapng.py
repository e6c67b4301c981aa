"""Writing capture files: pcapng with per-packet process comments, and classic pcap.

The pcapng writer is on the hot path: the kernel lays out each packet's Enhanced Packet
Block fields; every packet's options (comments + direction flag) are encoded once per
record key and direction and reused; blocks are joined and written once per batch.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable

from ptcap import __version__
from ptcap.errors import PtcapError
from ptcap.kernel.records import CAPLEN_AT, DIR_AT, EPB_AT, HEADER_LEN, KEY_AT, KEY_END, Direction

_U32 = struct.Struct("<I")
_OPT_HEAD = struct.Struct("<HH")

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
EPB_FLAGS = 2
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
IF_FILTER = 11
SHB_OS = 3
SHB_USERAPPL = 4

# epb_flags bits 0-1: 01 inbound, 10 outbound
_FLAGS = {Direction.IN: 1, Direction.OUT: 2}


@dataclass(slots=True)
class Interface:
    """One captured interface as the file describes it."""

    name: str
    linktype: int
    snaplen: int = 262144
    description: str = ""
    filter: str = ""


def option(code: int, value: bytes) -> bytes:
    pad = -len(value) & 3
    return _OPT_HEAD.pack(code, len(value)) + value + b"\0" * pad


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return _U32.pack(block_type) + _U32.pack(total) + body + _U32.pack(total)


def section_header() -> bytes:
    opts = option(SHB_USERAPPL, f"ptcap {__version__}".encode()) + option(SHB_OS, _os_name().encode())
    body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts + option(OPT_ENDOFOPT, b"")
    return _block(0x0A0D0D0A, body)


# Raw IP goes in interface blocks as 12 (DLT_RAW), which libpcap, Wireshark and ptcap all
# read as raw IP: libpcap 1.10's pcapng reader compares each later block's LINKTYPE_RAW (101)
# with the first one's value after mapping it to DLT_RAW (12), and refuses a file with two
# raw-IP interfaces (every cgroup-skb capture of more than one interface).
_IDB_LINKTYPE = {101: 12}


def interface_block(iface: Interface) -> bytes:
    opts = option(IF_NAME, iface.name.encode()) + option(IF_TSRESOL, b"\x09")
    if iface.description:
        opts += option(IF_DESCRIPTION, iface.description.encode())
    if iface.filter:
        opts += option(IF_FILTER, b"\0" + iface.filter.encode())
    linktype = _IDB_LINKTYPE.get(iface.linktype, iface.linktype)
    body = struct.pack("<HHI", linktype, 0, iface.snaplen) + opts + option(OPT_ENDOFOPT, b"")
    return _block(1, body)


DSB_TYPE = 0x0000000A
SECRETS_TLS_KEY_LOG = 0x544C534B


def secrets_block(lines: list[str]) -> bytes:
    """A Decryption Secrets Block holding TLS key log lines (SSLKEYLOGFILE format)."""
    data = "".join(line + "\n" for line in lines).encode()
    body = struct.pack("<II", SECRETS_TLS_KEY_LOG, len(data)) + data + b"\0" * (-len(data) & 3)
    return _block(DSB_TYPE, body)


def _os_name() -> str:
    import platform
    return f"{platform.system()} {platform.release()}"


def packet_options(comments: list[str], direction: int) -> bytes:
    """An Enhanced Packet Block's options: the comments, the direction flag, the end."""
    opts = b"".join(option(OPT_COMMENT, text.encode(errors="replace")) for text in comments)
    flags = _FLAGS.get(direction)
    if flags:
        opts += option(EPB_FLAGS, _U32.pack(flags))
    return opts + option(OPT_ENDOFOPT, b"") if opts else opts


class PcapngWriter:
    """Streams pcapng: a section header, interface blocks, then packets.

    Packets from the kernel are framed as the kernel laid them out (an EPB body); their
    options (comments, direction flag) are encoded once per record key and reused while the
    join hands out the same context for that key.
    """

    def __init__(self, out: BinaryIO, comments_of: Callable[[object], list[str]] | None = None) -> None:
        self.out = out
        self._comments_of = comments_of or (lambda ctx: ctx.comments())
        self._interfaces = 0
        self._opts: dict[bytes, tuple] = {}             # key → (context, options by direction, bytes)
        self._opts_bytes = 0                            # what the cached options hold
        self._pending: list[bytes] = [section_header()]
        self.written = len(self._pending[0])       # bytes of this file so far
        self._hold = 0.0
        self._held: list[tuple[float, list[bytes]]] = []

    def hold_packets(self, seconds: float) -> None:
        """Keep packets back for `seconds` before writing them, so that a TLS key that comes
        after the packets needing it (a client learns its handshake keys from the server's
        reply) can still go before them: Wireshark reads a file in one pass."""
        self._hold = seconds

    def add_secrets(self, lines: list[str]) -> None:
        """TLS key log lines, as one Decryption Secrets Block before every held packet."""
        if lines:
            block = secrets_block(lines)
            self._pending.append(block)
            self.written += len(block)
            self.release(time.monotonic())

    def add_interface(self, iface: Interface) -> int:
        """Describe the next interface; returns its interface id (0, 1, ...)."""
        block = interface_block(iface)
        self._pending.append(block)
        self.written += len(block)
        self._interfaces += 1
        return self._interfaces - 1

    def _options(self, ctx) -> tuple:
        """Per direction (0 unknown, 1 in, 2 out): (fixed block length, tails by padding), a
        tail being the padding and the options (comments, epb_flags, end) ready to append."""
        comments = self._comments_of(ctx) if ctx is not None else []
        entry = []
        for direction in (0, 1, 2):
            opts = packet_options(comments, direction)
            entry.append((32 + len(opts), tuple(pad + opts for pad in _PADS)))
        return (ctx, entry, sum(len(tail) for _, tails in entry for tail in tails))

    def _make_room(self, live: dict) -> None:
        """The cached options reached _CACHE_BYTES: keep those of keys the join still holds
        with the same context (`live`: key → context); if they alone fill half, start over."""
        cache = self._opts
        for key in [k for k, (ctx, _, _) in cache.items() if live.get(k, _MISSING) is not ctx]:
            del cache[key]
        self._opts_bytes = sum(entry[2] for entry in cache.values())
        if self._opts_bytes > _CACHE_BYTES // 2 or len(cache) >= _MAX_CACHED // 2:
            cache.clear()
            self._opts_bytes = 0

    def write_batch(self, batch, limit: int = 1 << 62) -> int:
        """Write the packets of a joined ring batch (ptcap.pipeline.packet.Batch: the kernel's
        records, framed as they are; the hot path); stop after the packet that takes the file
        past `limit` bytes. Returns how many were written."""
        parts = self._pending
        start = len(parts)
        append = parts.append
        cache = self._opts
        options = self._options
        u32 = _U32.pack
        fields = _RECORD.unpack_from
        buf = batch.buf
        known = batch.contexts.get
        join = batch.join
        written = self.written
        n = 0
        for off in batch.offsets:
            direction, key, caplen = fields(buf, off)
            ctx = known(key, _MISSING)
            if ctx is _MISSING:
                ctx = join(key)
            cached = cache.get(key)
            if cached is None or cached[0] is not ctx:
                if cached is not None:
                    self._opts_bytes -= cached[2]
                if self._opts_bytes >= _CACHE_BYTES or len(cache) >= _MAX_CACHED:
                    self._make_room(batch.contexts)     # keys of processes long gone
                cached = cache[key] = options(ctx)
                self._opts_bytes += cached[2]
            fixed, tails = cached[1][direction]
            pad = -caplen & 3
            size = fixed + caplen + pad
            total = u32(size)
            append(_EPB_TYPE + total)
            append(buf[off + EPB_AT:off + HEADER_LEN + caplen])
            append(tails[pad])
            append(total)
            n += 1
            written += size
            if written > limit:
                break
        self.written = written
        if self._hold:
            self._held.append((time.monotonic(), parts[start:]))
            del parts[start:]
        return n

    def options(self, ctx, direction: int) -> bytes:
        """A packet's options (comments of its context, direction flag, end), as the native
        drain appends them to its blocks."""
        return packet_options(self._comments_of(ctx) if ctx is not None else [], direction)

    def write_framed(self, blocks) -> None:
        """Enhanced Packet Blocks framed elsewhere (the native drain), valid only during
        this call: written at once, or copied while packets are held."""
        self.written += len(blocks)
        if self._hold:
            self._held.append((time.monotonic(), [bytes(blocks)]))
            return
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.write(blocks)

    def write_packet(self, pkt, iface_id: int) -> None:
        """One Packet (not from the kernel: -r with -w), with the options of its context."""
        fixed, tails = self._options(pkt.context)[1][pkt.direction]
        data = pkt.data
        pad = -len(data) & 3
        total = _U32.pack(fixed + len(data) + pad)
        self._pending += (_EPB_TYPE, total, _EPB_FIELDS.pack(iface_id, pkt.ts_ns >> 32 & 0xFFFFFFFF, pkt.ts_ns & 0xFFFFFFFF,
                                                            len(data), pkt.orig_len),
                          data, tails[pad], total)
        self.written += fixed + len(data) + pad

    def release(self, now: float) -> None:
        """Write the held packets that have waited long enough, and what is pending."""
        held = self._held
        while held and now - held[0][0] >= self._hold:
            self._pending.extend(held.pop(0)[1])
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
            self.out.flush()

    def flush(self) -> None:
        """Write everything, held packets too."""
        for _at, blocks in self._held:
            self._pending.extend(blocks)
        self._held = []
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.flush()


_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")   # by number of padding bytes
# a kernel record's direction, key and caplen
_RECORD = struct.Struct(f"<{DIR_AT}xB{KEY_AT - DIR_AT - 1}x{KEY_END - KEY_AT}s{CAPLEN_AT - KEY_END}xI")
_MISSING = object()
_EPB_TYPE = _U32.pack(6)
_MAX_CACHED = 1 << 16
_CACHE_BYTES = 16 << 20     # cached options (12 copies per key: 3 directions x 4 paddings)


class PcapWriter:
    """Classic pcap: one link type, no metadata; microsecond timestamps as tcpdump writes
    them, or nanosecond ones (--nano)."""

    def __init__(self, out: BinaryIO, linktype: int, snaplen: int = 262144, nano: bool = False,
                 linktype_ext: int = 0) -> None:
        self.out = out
        self.linktype = linktype
        self._div = 1 if nano else 1000
        magic = 0xA1B23C4D if nano else 0xA1B2C3D4
        self._pending: list[bytes] = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen,
                                                       linktype | linktype_ext)]
        self._interfaces = 0
        self.written = 24

    def add_interface(self, iface: Interface) -> int:
        if iface.linktype != self.linktype:
            raise PtcapError(f"{iface.name}: its link type differs from the other interfaces'; "
                             "a classic pcap file holds one link type: write pcapng instead")
        self._interfaces += 1
        return self._interfaces - 1

    def write_batch(self, batch, limit: int = 1 << 62) -> int:
        head = _PCAP_RECORD.pack
        fields = _EPB_FIELDS.unpack_from
        buf = batch.buf
        parts = self._pending
        written = self.written
        n = 0
        for off in batch.offsets:
            _iface, hi, lo, caplen, length = fields(buf, off + EPB_AT)
            sec, nsec = pcap_time((hi << 32) | lo)
            parts.append(head(sec, nsec // self._div, caplen, length))
            parts.append(buf[off + HEADER_LEN:off + HEADER_LEN + caplen])
            n += 1
            written += 16 + caplen
            if written > limit:
                break
        self.written = written
        return n

    def write_framed(self, records) -> None:
        """pcap records framed elsewhere (the native drain), valid only during this call."""
        self.written += len(records)
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.write(records)

    def write_packet(self, pkt, iface_id: int = 0) -> None:
        data = pkt.data
        if pkt.pcap_ts is None:
            sec, nsec = pcap_time(pkt.ts_ns)
            frac = nsec // self._div
        else:                       # as read, scaled as libpcap scales it (not normalized)
            sec, frac, nano = pkt.pcap_ts
            if nano != (self._div == 1):
                signed = frac - (frac >> 31 << 32)              # a bpf_int32 in the record
                down = abs(signed) // 1000 * (1 if signed >= 0 else -1)     # C's division
                frac = (down if nano else signed * 1000) & 0xFFFFFFFF
        self._pending += (_PCAP_RECORD.pack(sec, frac, len(data), pkt.orig_len), data)
        self.written += 16 + len(data)

    def flush(self) -> None:
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.flush()


_PCAP_RECORD = struct.Struct("<IIII")


def pcap_time(ts_ns: int) -> tuple[int, int]:
    """A time stamp as a classic pcap record's (seconds, nanoseconds). Its seconds are 32 bits:
    a pcapng stamp past 2106 keeps the low 32, as libpcap's pcap_dump keeps them."""
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    return sec & 0xFFFFFFFF, nsec
_EPB_FIELDS = struct.Struct("<IIIII")


class PacketWriter:
    """`-r FILE -w OUT`: packets read from a file, written again with the same writers as a
    live capture. pcapng keeps each packet's interface, direction and process comments; a
    name ending in .pcap writes classic pcap (one link type, no metadata)."""

    def __init__(self, out: BinaryIO, classic: bool, linktype: int, snaplen: int = 262144,
                 nano: bool = False, linktype_ext: int = 0) -> None:
        self.out = out
        self._classic = classic
        self._snaplen = snaplen
        self._linktype = linktype
        self._writer = PcapWriter(out, linktype, snaplen, nano, linktype_ext) if classic else PcapngWriter(out)
        self._ids: dict[tuple[str, int], int] = {}
        self._unflushed = 0

    def write(self, pkt) -> None:
        """Write one ptcap.pipeline.packet.Packet."""
        key = (pkt.ifname, pkt.linktype)
        iface_id = self._ids.get(key)
        if iface_id is None:
            iface_id = self._ids[key] = len(self._ids)
            if self._classic and pkt.linktype != self._writer.linktype:
                raise PtcapError(f"{pkt.ifname or 'a packet'}: its link type differs from the first "
                                 "packet's; a classic pcap file holds one link type: write pcapng instead")
            if not self._classic:
                self._writer.add_interface(Interface(pkt.ifname or f"if{iface_id}", pkt.linktype, self._snaplen))
        self._writer.write_packet(pkt, iface_id)
        self._unflushed += 1
        if self._unflushed >= 256:
            self.flush()

    def flush(self) -> None:
        self._writer.flush()
        self._unflushed = 0

    @property
    def written(self) -> int:
        return self._writer.written

    def finish(self) -> None:
        """The last flush. A pcapng that got no packet still gets an interface: an SHB alone is
        a file tcpdump and tshark refuse ('no Interface Description Blocks')."""
        if not self._ids and not self._classic:
            self._ids[("", self._linktype)] = 0
            self._writer.add_interface(Interface("if0", self._linktype, self._snaplen))
        self.flush()

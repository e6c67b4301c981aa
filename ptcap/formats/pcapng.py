"""Writing capture files: pcapng with per-packet process comments, and classic pcap.

The pcapng writer is on the hot path: the kernel lays out each packet as an Enhanced Packet
Block body; every packet's options (comments + direction flag) are encoded once per
(direction, owner, hook info) and reused; blocks are joined and written once per batch.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable

from ptcap import __version__
from ptcap.pipeline.decoder import CAPLEN_AT, DIR_AT, EPB_AT, HEADER_LEN, KEY_AT, KEY_END, OWNER_LEN, PEER_AT
from ptcap.errors import PtcapError
from ptcap.pipeline.packet import Direction

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

    Packets come as kernel records (ptcap.decoder's layout), whose EPB body is framed as
    is, with the options of the record's key (owner + hook info: drop location and reason)
    in its direction, encoded once per key.
    """

    def __init__(self, out: BinaryIO, comments_for: Callable[[bytes], list[str]] | None = None) -> None:
        self.out = out
        self._comments_for = comments_for
        self._interfaces = 0
        self._opts: dict[bytes, list] = {}
        self._keys: dict[bytes, list[bytes]] = {}      # owner record → its cached keys
        self._pending: list[bytes] = [section_header()]
        self.written = len(self._pending[0])       # bytes of this file so far

    def add_interface(self, iface: Interface) -> int:
        """Describe the next interface; returns its interface id (0, 1, ...)."""
        block = interface_block(iface)
        self._pending.append(block)
        self.written += len(block)
        self._interfaces += 1
        return self._interfaces - 1

    def _options(self, key: bytes) -> tuple:
        """Per direction (0 unknown, 1 in, 2 out): (options length, tails by padding), where
        a tail is the padding, the options (comments, epb_flags, end) ready to append."""
        comments = self._comments_for(key) if self._comments_for is not None else []
        entry = []
        for direction in (0, 1, 2):
            opts = packet_options(comments, direction)
            entry.append((32 + len(opts), tuple(pad + opts for pad in _PADS)))
        self._opts[key] = entry
        self._keys.setdefault(key[:OWNER_LEN], []).append(key)
        peer = key[PEER_AT:PEER_AT + OWNER_LEN]
        if peer != _NO_PEER:
            self._keys.setdefault(peer, []).append(key)
        return entry

    def write_records(self, buf, offsets: list[int], limit: int = 1 << 62) -> int:
        """Write the packet records at `offsets` of `buf` (the hot path); stop after the
        packet that takes the file past `limit` bytes. Returns how many were written."""
        parts = self._pending
        append = parts.append
        cache = self._opts
        u32 = _U32.pack
        fields = _RECORD_KEY.unpack_from
        written = self.written
        n = 0
        for off in offsets:
            direction, key, caplen = fields(buf, off)
            entry = cache.get(key)
            if entry is None:
                entry = self._options(key)
            fixed, tails = entry[direction]
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
        self.flush()
        return n

    def flush(self) -> None:
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.flush()

    def forget_context(self) -> None:
        """Drop cached options (process details changed)."""
        self._opts.clear()
        self._keys.clear()

    def forget_owner(self, owner: bytes) -> None:
        """Drop the cached options of one owner record, the packet's or its peer's (its
        process exec'd or is gone)."""
        for key in self._keys.pop(owner, ()):
            self._opts.pop(key, None)


_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")   # by number of padding bytes
_NO_PEER = bytes(OWNER_LEN)
_EPB_TYPE = _U32.pack(6)
# direction, options key and caplen of a kernel packet record (ptcap.decoder's layout)
assert DIR_AT + 1 == KEY_AT
_RECORD_KEY = struct.Struct(f"<{DIR_AT}xB{KEY_END - KEY_AT}s{CAPLEN_AT - KEY_END}xI")


class PcapWriter:
    """Classic pcap: one link type, no metadata; microsecond timestamps as tcpdump writes
    them, or nanosecond ones (--nano)."""

    def __init__(self, out: BinaryIO, linktype: int, snaplen: int = 262144, nano: bool = False) -> None:
        self.out = out
        self.linktype = linktype
        self._div = 1 if nano else 1000
        magic = 0xA1B23C4D if nano else 0xA1B2C3D4
        out.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        self._interfaces = 0
        self.written = 24

    def add_interface(self, iface: Interface) -> int:
        if iface.linktype != self.linktype:
            raise PtcapError(f"{iface.name}: its link type differs from the other interfaces'; "
                             "a classic pcap file holds one link type: write pcapng instead")
        self._interfaces += 1
        return self._interfaces - 1

    def write_records(self, buf, offsets: list[int], limit: int = 1 << 62) -> int:
        head = _PCAP_RECORD.pack
        fields = _EPB_FIELDS.unpack_from
        parts = []
        written = self.written
        n = 0
        for off in offsets:
            _iface, hi, lo, caplen, length = fields(buf, off + EPB_AT)
            sec, nsec = divmod((hi << 32) | lo, 1_000_000_000)
            parts.append(head(sec, nsec // self._div, caplen, length))
            parts.append(buf[off + HEADER_LEN:off + HEADER_LEN + caplen])
            n += 1
            written += 16 + caplen
            if written > limit:
                break
        self.written = written
        self.out.write(b"".join(parts))
        self.out.flush()
        return n

    def flush(self) -> None:
        self.out.flush()

    def forget_context(self) -> None:
        pass


_PCAP_RECORD = struct.Struct("<IIII")
_EPB_FIELDS = struct.Struct("<IIIII")


class PacketWriter:
    """`-r FILE -w OUT`: packets read from a file, written again. pcapng keeps each packet's
    interface, direction and process comments; a name ending in .pcap writes classic pcap
    (one link type, no metadata). Not the capture hot path: one packet at a time."""

    def __init__(self, out: BinaryIO, classic: bool, linktype: int, snaplen: int = 262144,
                 nano: bool = False) -> None:
        self.out = out
        self._classic = classic
        self._snaplen = snaplen
        self._nano = nano
        self._pcap = PcapWriter(out, linktype, snaplen, nano=nano) if classic else None
        self._ids: dict[tuple[str, int], int] = {}
        self._pending: list[bytes] = [] if classic else [section_header()]

    def write(self, pkt) -> None:
        """Write one ptcap.packet.Packet."""
        key = (pkt.ifname, pkt.linktype)
        iface_id = self._ids.get(key)
        if iface_id is None:
            iface_id = self._ids[key] = len(self._ids)
            if not self._classic:
                self._pending.append(interface_block(Interface(pkt.ifname or f"if{iface_id}", pkt.linktype,
                                                               self._snaplen)))
            elif pkt.linktype != self._pcap.linktype:
                raise PtcapError(f"{pkt.ifname or 'a packet'}: its link type differs from the first "
                                 "packet's; a classic pcap file holds one link type: write pcapng instead")
        data = pkt.data
        if self._classic:
            sec, nsec = divmod(pkt.ts_ns, 1_000_000_000)
            self._pending.append(_PCAP_RECORD.pack(sec, nsec if self._nano else nsec // 1000,
                                                   len(data), pkt.orig_len) + data)
        else:
            opts = packet_options(pkt.context.comments() if pkt.context is not None else [], pkt.direction)
            body = struct.pack("<IIIII", iface_id, pkt.ts_ns >> 32, pkt.ts_ns & 0xFFFFFFFF, len(data),
                               pkt.orig_len) + data + b"\0" * (-len(data) & 3) + opts
            self._pending.append(_block(6, body))
        if len(self._pending) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.flush()

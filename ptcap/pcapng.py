"""Writing capture files: pcapng with per-packet process comments, and classic pcap.

The pcapng writer is on the hot path: every packet's options (comments + direction flag)
are encoded once per (owner, direction) and reused; blocks are joined and written per batch.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable

from . import __version__
from .packet import Direction

_EPB_HEAD = struct.Struct("<IIIIIII")
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


def interface_block(iface: Interface) -> bytes:
    opts = option(IF_NAME, iface.name.encode()) + option(IF_TSRESOL, b"\x09")
    if iface.description:
        opts += option(IF_DESCRIPTION, iface.description.encode())
    if iface.filter:
        opts += option(IF_FILTER, b"\0" + iface.filter.encode())
    body = struct.pack("<HHI", iface.linktype, 0, iface.snaplen) + opts + option(OPT_ENDOFOPT, b"")
    return _block(1, body)


def _os_name() -> str:
    import platform
    return f"{platform.system()} {platform.release()}"


class PcapngWriter:
    """Streams pcapng: a section header, interface blocks as interfaces appear, packets."""

    def __init__(self, out: BinaryIO, comments_for: Callable[[bytes], list[str]] | None = None) -> None:
        self.out = out
        self._comments_for = comments_for
        self._iface_ids: dict[object, int] = {}
        self._opts: dict[tuple[bytes, int], bytes] = {}
        self._pending: list[bytes] = [section_header()]

    def add_interface(self, key: object, iface: Interface) -> int:
        """Register an interface under a key (e.g. ifindex); returns its interface id."""
        if key in self._iface_ids:
            return self._iface_ids[key]
        ident = len(self._iface_ids)
        self._iface_ids[key] = ident
        self._pending.append(interface_block(iface))
        return ident

    def _options(self, owner: bytes, direction: int) -> bytes:
        opts = b""
        if self._comments_for is not None and owner:
            for text in self._comments_for(owner):
                opts += option(OPT_COMMENT, text.encode(errors="replace"))
        flags = _FLAGS.get(direction)
        if flags:
            opts += option(EPB_FLAGS, _U32.pack(flags))
        if opts:
            opts += option(OPT_ENDOFOPT, b"")
        self._opts[owner, direction] = opts
        return opts

    def write(self, records: Iterable[tuple]) -> None:
        """Write (ts_ns, iface_key, direction, orig_len, data, owner) records."""
        parts = self._pending
        ids = self._iface_ids
        opts_cache = self._opts
        head = _EPB_HEAD.pack
        u32 = _U32.pack
        for ts, key, direction, length, data, owner in records:
            opts = opts_cache.get((owner, direction))
            if opts is None:
                opts = self._options(owner, direction)
            caplen = len(data)
            pad = -caplen & 3
            total = 32 + caplen + pad + len(opts)
            parts.append(head(6, total, ids[key], ts >> 32, ts & 0xFFFFFFFF, caplen, length))
            parts.append(data)
            if pad:
                parts.append(b"\0" * pad)
            parts.append(opts)
            parts.append(u32(total))
        self.flush()

    def flush(self) -> None:
        if self._pending:
            self.out.write(b"".join(self._pending))
            self._pending = []
        self.out.flush()

    def forget_context(self) -> None:
        """Drop cached options (process details changed)."""
        self._opts.clear()


class PcapWriter:
    """Classic pcap (nanosecond timestamps): one link type, no metadata."""

    def __init__(self, out: BinaryIO, linktype: int, snaplen: int = 262144) -> None:
        self.out = out
        self.linktype = linktype
        out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype))
        self._iface_ids: dict[object, int] = {}

    def add_interface(self, key: object, iface: Interface) -> int:
        from .errors import PtcapError
        if iface.linktype != self.linktype:
            raise PtcapError(f"{iface.name}: link type {iface.linktype} differs from {self.linktype}; "
                             "classic pcap holds one link type, write pcapng instead")
        self._iface_ids[key] = 0
        return 0

    def write(self, records: Iterable[tuple]) -> None:
        head = struct.Struct("<IIII").pack
        parts = []
        for ts, _key, _direction, length, data, _owner in records:
            sec, nsec = divmod(ts, 1_000_000_000)
            parts.append(head(sec, nsec, len(data), length))
            parts.append(data)
        self.out.write(b"".join(parts))
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def forget_context(self) -> None:
        pass

"""Marker packets: after the packets it sends, ptcap sends a tiny packet of the same link type
whose printed line carries secrets drawn for this run (random locally administered MAC
addresses, or ICMP ids and addresses), so a child's output can be cut where no payload can
forge a cut."""
from __future__ import annotations

import os
import struct

from ptcap.errors import PtcapError


def _mac_text(mac: bytes) -> bytes:
    return ":".join(f"{b:02x}" for b in mac).encode()


def _random16() -> int:
    return int.from_bytes(os.urandom(2), "big")     # the kernel's random bytes, as secrets' are


def _random_mac() -> bytes:
    first = (os.urandom(1)[0] & 0xFC) | 0x02        # locally administered, unicast
    return bytes([first]) + os.urandom(5)


def _ipv4_marker(numeric: bool) -> tuple[bytes, bytes]:
    """An ICMP echo request: id and sequence are secrets; with -n the addresses too (without
    it tcpdump would look names up: 127.0.0.1 is /etc/hosts' localhost)."""
    ident, seq = _random16(), _random16()
    if numeric:
        src = bytes([127]) + os.urandom(3)
        dst = bytes([127]) + os.urandom(3)
        text = ".".join(str(b) for b in src).encode() + b" > "
    else:
        src = dst = bytes([127, 0, 0, 1])
        text = f"id {ident}, seq {seq}".encode()
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    csum = _checksum(icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0x4000, 64, 1, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    if numeric:
        text = text + ".".join(str(b) for b in dst).encode()
    return ip + icmp, text


def _ipv6_marker(numeric: bool) -> tuple[bytes, bytes]:
    ident, seq = _random16(), _random16()
    loop = b"\0" * 15 + b"\1"
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq)
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, loop, loop)
    return ip + icmp, f"id {ident}, seq {seq}".encode()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


MARKABLE = frozenset({0, 1, 9, 12, 14, 101, 108, 113, 228, 229, 276})   # the link types below


def make_marker(linktype: int, numeric: bool) -> tuple[bytes, bytes]:
    """(frame, secret text its printed line contains) for a link type; PtcapError if ptcap
    cannot mark packets of that type."""
    if linktype == 1:
        dst, src = _random_mac(), _random_mac()
        return dst + src + b"\x88\xb5", _mac_text(src)      # 0x88b5: local experimental
    if linktype in (12, 14, 101, 228):
        return _ipv4_marker(numeric)
    if linktype == 229:
        return _ipv6_marker(numeric)
    ip, text = _ipv4_marker(numeric)
    if linktype == 0:
        return struct.pack("=I", 2) + ip, text
    if linktype == 108:
        return struct.pack("!I", 2) + ip, text
    if linktype == 9:                                   # PPP: address, control, protocol IP
        return b"\xff\x03\x00\x21" + ip, text
    if linktype == 113:
        return struct.pack("!HHH8sH", 4, 772, 0, b"", 0x0800) + ip, text
    if linktype == 276:
        return struct.pack("!HHIHBB8s", 0x0800, 0, 1, 772, 4, 0, b"") + ip, text
    raise PtcapError(f"link-type {linktype}: ptcap cannot add its fields to tcpdump's lines for "
                     "this link type (--context= prints tcpdump's lines alone)")


"""UDP (print-udp.c): ports, checksums with -v, DNS and a few well-known port printers."""
from __future__ import annotations

import struct

from .checksum import cksum, shouldbe
from .truncation import Truncated


def _addrs(nd, b: bytes, ver: int, ip_off: int, sport: int, dport: int) -> None:
    names = nd.names
    if ver == 6:
        direct = b[ip_off + 6] == 17
        if direct:
            src, dst = names.ip6addr(bytes(b[ip_off + 8:ip_off + 24])), names.ip6addr(bytes(b[ip_off + 24:ip_off + 40]))
    else:
        direct = b[ip_off + 9] == 17
        if direct:
            src, dst = names.ipaddr(bytes(b[ip_off + 12:ip_off + 16])), names.ipaddr(bytes(b[ip_off + 16:ip_off + 20]))
    if direct:
        if sport < 0:
            nd.out.append(f"{src} > {dst}: ")
        else:
            nd.out.append(f"{src}.{names.udpport(sport)} > {dst}.{names.udpport(dport)}: ")
    elif sport >= 0:
        nd.out.append(f"{names.udpport(sport)} > {names.udpport(dport)}: ")


def udp_print(nd, b: bytes, off: int, length: int, ver: int, ip_off: int, fragmented: bool) -> None:
    nd.proto = "udp"
    out = nd.out
    if len(b) - off < 4:
        _addrs(nd, b, ver, ip_off, -1, -1)
        raise Truncated
    sport = (b[off] << 8) | b[off + 1]
    dport = (b[off + 2] << 8) | b[off + 3]
    if length < 8:
        _addrs(nd, b, ver, ip_off, sport, dport)
        out.append(f"truncated-udp {length}")
        return
    if len(b) - off < 6:
        _addrs(nd, b, ver, ip_off, sport, dport)
        raise Truncated
    ulen = (b[off + 4] << 8) | b[off + 5]
    if ulen == 0 and length > 65535:
        ulen = length
    if ulen < 8:
        _addrs(nd, b, ver, ip_off, sport, dport)
        out.append(f"truncated-udplength {ulen}")
        return
    ulen -= 8
    length -= 8
    if ulen < length:
        length = ulen
    cp = off + 8
    if cp > len(b):
        _addrs(nd, b, ver, ip_off, sport, dport)
        raise Truncated
    _addrs(nd, b, ver, ip_off, sport, dport)
    if nd.v and not fragmented:
        if ver == 4 and nd.v > 1:
            field = (b[off + 6] << 8) | b[off + 7]
            if field == 0:
                out.append("[no cksum] ")
            elif cp + length <= len(b):
                pseudo = bytes(b[ip_off + 12:ip_off + 20]) + struct.pack("!BBH", 0, 17, length + 8)
                s = cksum(pseudo, bytes(b[off:cp + length]))
                out.append(f"[bad udp cksum 0x{field:04x} -> 0x{shouldbe(field, s):04x}!] " if s else "[udp sum ok] ")
        elif ver == 6 and cp + length <= len(b):
            field = (b[off + 6] << 8) | b[off + 7]
            from .ip6 import pseudo_header
            pseudo = pseudo_header(b, ip_off, length + 8, 17)
            s = cksum(pseudo, bytes(b[off:cp + length]))
            out.append(f"[bad udp cksum 0x{field:04x} -> 0x{shouldbe(field, s):04x}!] " if s else "[udp sum ok] ")
    if not nd.q:
        if sport == 53 or dport == 53:
            from .dns import domain_print
            domain_print(nd, b, cp, length, over_tcp=False, mdns=False)
            return
        if sport == 5353 or dport == 5353:
            from .dns import domain_print
            domain_print(nd, b, cp, length, over_tcp=False, mdns=True)
            return
        if sport == 69 or dport == 69:
            from .tftp import tftp_print
            tftp_print(nd, b, cp, length)
            return
    if ulen > length and not fragmented:
        out.append(f"UDP, bad length {ulen} > {length}")
    else:
        out.append(f"UDP, length {ulen}")

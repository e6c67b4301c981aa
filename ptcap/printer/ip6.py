"""IPv6 (print-ip6.c) with its extension headers: hop-by-hop, destination options, routing, fragment."""
from __future__ import annotations

from .ip import ip_demux
from .tables import IPPROTO_NAMES
from .truncation import Truncated


def ip6addr(nd, b: bytes, off: int) -> str:
    raw = b[off:off + 16]
    if len(raw) < 16:
        raise IndexError  # a GET_ macro: tcpdump longjmps
    return nd.names.ip6addr(bytes(raw))


def ip6_print(nd, b: bytes, off: int, length: int) -> None:
    nd.proto = "ip6"
    out = nd.out
    if len(b) - off < 40:
        out.append(" [|ip6]")
        return
    if length < 40:
        out.append(f"IP6 truncated-ip6 {length}")
        return
    if not nd.e:
        out.append("IP6 ")
    version = b[off] >> 4
    if version != 6:
        out.append(f"version error: {version} != 6")
        return
    plen = (b[off + 4] << 8) | b[off + 5]
    nh = b[off + 6]
    if plen != 0:
        total = plen + 40
        if length < total:
            out.append(f"truncated-ip6 - {total - length} bytes missing!")
    else:
        total = length
    if nd.v:
        flow = int.from_bytes(b[off:off + 4], "big")
        out.append("(")
        if flow & 0x0FF00000:
            out.append(f"class 0x{(flow & 0x0FF00000) >> 20:02x}, ")
        if flow & 0x000FFFFF:
            out.append(f"flowlabel 0x{flow & 0x000FFFFF:05x}, ")
        out.append(f"hlim {b[off + 7]}, next-header {IPPROTO_NAMES.get(nh, 'unknown')} ({nh}) "
                   f"payload length: {plen}) ")
    end = off + total
    if end < len(b):
        b = b[:end]
    cp = off
    advance = 40
    remaining = total
    fragmented = False
    while cp < len(b) and advance > 0:
        if remaining < advance:
            raise Truncated
        cp += advance
        remaining -= advance
        if cp == off + 40 and nh not in (6, 17, 33, 132):
            out.append(f"{ip6addr(nd, b, off + 8)} > {ip6addr(nd, b, off + 24)}: ")
        if nh == 0 or nh == 60:
            nd.proto = "hbhopt" if nh == 0 else "dstopt"
            advance = _options_header(nd, b, cp, "HBH " if nh == 0 else "DSTOPT ")
            nh = b[cp]
        elif nh == 44:
            advance = _frag6(nd, b, cp, off)
            if advance < 0 or len(b) <= cp + advance:
                return
            nh = b[cp]
            fragmented = True
        elif nh == 43:
            advance = _rt6(nd, b, cp)
            if advance < 0:
                return
            nh = b[cp]
        else:
            ip_demux(nd, b, cp, remaining, 6, fragmented, nh, off)
            return
        nd.proto = "ip6"


def _options_header(nd, b: bytes, cp: int, name: str) -> int:
    hlen = (b[cp + 1] + 1) << 3
    if cp + hlen > len(b):
        raise Truncated
    nd.out.append(name)
    if nd.v:
        _opt_print(nd, b, cp + 2, hlen - 2)
    return hlen


def _opt_print(nd, b: bytes, cp: int, length: int) -> None:
    out = nd.out
    end = cp + length
    while cp < end:
        typ = b[cp]
        if typ == 0:
            out.append("(pad1)")
            cp += 1
            continue
        olen = b[cp + 1] + 2
        if cp + olen > end:
            raise Truncated
        if typ == 1:
            out.append("(padn)")
        elif typ == 5:
            out.append(f"(rtalert: 0x{(b[cp + 2] << 8) | b[cp + 3]:04x}) ")
        elif typ == 0xC2:
            out.append(f"(jumbo: {int.from_bytes(b[cp + 2:cp + 6], 'big')}) ")
        else:
            out.append(f"(opt_type 0x{typ:02x}: len={olen - 2})")
        cp += olen
    out.append(" ")


def _frag6(nd, b: bytes, cp: int, ip_off: int) -> int:
    offlg = (b[cp + 2] << 8) | b[cp + 3]
    plen = (b[ip_off + 4] << 8) | b[ip_off + 5]
    size = (40 + plen - (cp - ip_off) - 8) % (1 << 64)
    if nd.v:
        if cp + 8 > len(b):
            raise Truncated
        ident = int.from_bytes(b[cp + 4:cp + 8], "big")
        nd.out.append(f"frag (0x{ident:08x}:{offlg & 0xFFF8}|{size})")
    else:
        nd.out.append(f"frag ({offlg & 0xFFF8}|{size})")
    if offlg & 0xFFF8:
        return -1
    nd.out.append(" ")
    return 8


def _rt6(nd, b: bytes, cp: int) -> int:
    out = nd.out
    length = b[cp + 1]
    typ = b[cp + 2]
    out.append(f"RT6 (len={length}, type={typ}{' [Deprecated]' if typ == 0 else ''}, segleft={b[cp + 3]}")
    if typ in (0, 2):
        if nd.v:
            out.append(f", rsv=0x{int.from_bytes(b[cp + 4:cp + 8], 'big'):x}")
        if length % 2 == 1:
            out.append(" [|ip6]")
            return -1
        for i in range(length >> 1):
            out.append(f", [{i}]{ip6addr(nd, b, cp + 8 + 16 * i)}")
        out.append(") ")
        return (length + 1) << 3
    out.append(" (unknown type) [|ip6]")
    return -1


def pseudo_header(b: bytes, ip_off: int, length: int, proto: int) -> bytes:
    """The IPv6 pseudo-header for upper-layer checksums; the destination is the routing
    header's last address when there is one (tcpdump's ip6_finddst)."""
    import struct
    dst = bytes(b[ip_off + 24:ip_off + 40])
    nh = b[ip_off + 6]
    cp = ip_off + 40
    while cp + 2 <= len(b):
        if nh in (0, 60, 51):
            step = (b[cp + 1] + 2) * 4 if nh == 51 else (b[cp + 1] + 1) << 3
            nh = b[cp]
            cp += step
            continue
        if nh == 43:
            if cp + 4 <= len(b) and b[cp + 2] in (0, 2) and b[cp + 1] % 2 == 0:
                n = b[cp + 1] >> 1
                if n and cp + 8 + 16 * n <= len(b):
                    dst = bytes(b[cp + 8 + 16 * (n - 1):cp + 8 + 16 * n])
        break
    return bytes(b[ip_off + 8:ip_off + 24]) + dst + struct.pack("!IxxxB", length, proto)

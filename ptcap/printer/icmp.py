"""ICMP (print-icmp.c): echo, unreachables with the quoted datagram, time exceeded, and the rest."""
from __future__ import annotations

from .checksum import cksum, shouldbe

_UNREACH = {
    0: "net {} unreachable", 1: "host {} unreachable", 4: "{} unreachable - need to frag",
    5: "{} unreachable - source route failed", 6: "net {} unreachable - unknown",
    7: "host {} unreachable - unknown", 8: "{} unreachable - source host isolated",
    9: "net {} unreachable - admin prohibited", 10: "host {} unreachable - admin prohibited",
    11: "net {} unreachable - tos prohibited", 12: "host {} unreachable - tos prohibited",
    13: "host {} unreachable - admin prohibited filter",
    14: "host {} unreachable - host precedence violation",
    15: "host {} unreachable - precedence cutoff",
}
_REDIRECT = {0: "redirect {} to net {}", 1: "redirect {} to host {}",
             2: "redirect-tos {} to net {}", 3: "redirect-tos {} to host {}"}
_TYPES = {0: "echo reply", 3: "dest unreachable", 4: "source quench", 5: "redirect",
          8: "echo request", 9: "router advertisement", 10: "router solicitation",
          11: "time exceeded", 12: "parameter problem", 13: "time stamp request",
          14: "time stamp reply", 15: "information request", 16: "information reply",
          17: "address mask request", 18: "address mask reply"}
_ERROR_TYPES = (3, 4, 5, 11, 12)


def _u16(b: bytes, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def _u32(b: bytes, at: int) -> int:
    raw = b[at:at + 4]
    if len(raw) < 4:
        raise IndexError  # a GET_ macro: tcpdump longjmps
    return int.from_bytes(raw, "big")


def _addr(nd, b: bytes, at: int) -> str:
    raw = bytes(b[at:at + 4])
    if len(raw) < 4:
        raise IndexError  # a GET_ macro: tcpdump longjmps
    return nd.names.ipaddr(raw)


def _ts(ms: int) -> str:
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def icmp_print(nd, b: bytes, off: int, length: int, ip_off: int, fragmented: bool) -> None:
    nd.proto = "icmp"
    out = nd.out
    names = nd.names
    typ = b[off]
    code = b[off + 1]
    if typ in (0, 8):
        text = f"echo {'reply' if typ == 0 else 'request'}, id {_u16(b, off + 4)}, seq {_u16(b, off + 6)}"
    elif typ == 3:
        oip = off + 8
        if code == 2:
            text = f"{_addr(nd, b, oip + 16)} protocol {b[oip + 9]} unreachable"
        elif code == 3:
            hlen = (b[oip] & 0x0F) * 4
            proto = b[oip + 9]
            dport = _u16(b, oip + hlen + 2)
            dst = _addr(nd, b, oip + 16)
            if proto == 6:
                text = f"{dst} tcp port {names.tcpport(dport)} unreachable"
            elif proto == 17:
                text = f"{dst} udp port {names.udpport(dport)} unreachable"
            else:
                text = f"{dst} protocol {proto} port {dport} unreachable"
        elif code == 4:
            mtu = _u16(b, off + 6)
            dst = _addr(nd, b, oip + 16)
            text = f"{dst} unreachable - need to frag (mtu {mtu})" if mtu else f"{dst} unreachable - need to frag"
        elif code in _UNREACH:
            text = _UNREACH[code].format(_addr(nd, b, oip + 16))
        else:
            text = f"{_addr(nd, b, oip + 16)} unreachable - #{code}"
    elif typ == 5:
        gw = _addr(nd, b, off + 4)
        dst = _addr(nd, b, off + 8 + 16)
        fmt = _REDIRECT.get(code)
        text = fmt.format(dst, gw) if fmt else f"redirect-#{code} {dst} to {gw}"
    elif typ == 11:
        _addr(nd, b, off + 8 + 16)  # tcpdump checks the quoted header is there
        text = {0: "time exceeded in-transit", 1: "ip reassembly time exceeded"}.get(code, f"time exceeded-#{code}")
    elif typ == 12:
        text = f"parameter problem - octet {b[off + 4]}" if code == 0 else f"parameter problem - code {code}"
    elif typ == 13:
        text = f"time stamp query id {_u16(b, off + 4)} seq {_u16(b, off + 6)}"
    elif typ == 14:
        text = (f"time stamp reply id {_u16(b, off + 4)} seq {_u16(b, off + 6)}: "
                f"org {_ts(_u32(b, off + 8))}, recv {_ts(_u32(b, off + 12))}, xmit {_ts(_u32(b, off + 16))}")
    elif typ == 17:
        text = "address mask request"
    elif typ == 18:
        text = f"address mask is 0x{_u32(b, off + 8):08x}"
    elif typ == 10:
        text = "router solicitation"
    elif typ == 4:
        text = "source quench"
    elif typ in (15, 16):
        text = _TYPES[typ]
    else:
        text = _TYPES.get(typ, f"type-#{typ}")
    out.append(f"ICMP {text}, length {length}")
    if nd.v and not fragmented:
        if off + length <= len(b):
            s = cksum(bytes(b[off:off + length]))
            if s:
                field = _u16(b, off + 2)
                out.append(f" (wrong icmp cksum {field:x} (->{shouldbe(field, s):x})!)")
    if nd.v and typ in _ERROR_TYPES:
        inner = off + 8
        out.append("\n\t")
        from .ip import ip_print
        ip_print(nd, b, inner, _u16(b, inner + 2))

"""ICMPv6 (print-icmp6.c): errors, echo, neighbour discovery with -v options, MLD."""
from __future__ import annotations


from .checksum import cksum, shouldbe
from .hexdump import hex_lines
from .ip6 import ip6addr
from .truncation import Truncated

_TYPES = {
    1: "destination unreachable", 2: "packet too big", 3: "time exceeded in-transit",
    4: "parameter problem", 128: "echo request", 129: "echo reply",
    130: "multicast listener query", 131: "multicast listener report",
    132: "multicast listener done", 133: "router solicitation", 134: "router advertisement",
    135: "neighbor solicitation", 136: "neighbor advertisement", 137: "redirect",
    138: "router renumbering", 139: "who-are-you request", 140: "who-are-you reply",
    141: "inverse neighbor solicitation", 142: "inverse neighbor advertisement",
    143: "multicast listener report v2", 144: "ha discovery request", 145: "ha discovery reply",
    146: "mobile router solicitation", 147: "mobile router advertisement",
    151: "multicast router advertisement", 152: "multicast router solicitation",
    153: "multicast router termination",
}
_UNREACH = {0: "unreachable route", 1: "unreachable prohibited", 2: "beyond scope",
            3: "unreachable address", 4: "unreachable port"}
_LEN_FIRST = (133, 134, 135, 136, 137, 145, 147)
_OPT_NAMES = {1: "source link-address", 2: "destination link-address", 3: "prefix info",
              4: "redirected header", 5: "mtu", 7: "advertisement interval",
              8: "homeagent information", 24: "route info", 25: "rdnss", 31: "dnssl"}
_MLD2_REC = {1: "is_in", 2: "is_ex", 3: "to_in", 4: "to_ex", 5: "allow", 6: "block"}


def _u16(b: bytes, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def _u32(b: bytes, at: int) -> int:
    raw = b[at:at + 4]
    if len(raw) < 4:
        raise IndexError  # a GET_ macro: tcpdump longjmps
    return int.from_bytes(raw, "big")


def _upper_dport(b: bytes, oip: int) -> tuple[int, int]:
    """(protocol, destination port) of the datagram quoted in an error, skipping extension headers."""
    nh = b[oip + 6]
    cp = oip + 40
    while nh in (0, 43, 60, 44):
        if nh == 44:
            if _u16(b, cp + 2) & 0xFFF8:
                raise Truncated
            nh, cp = b[cp], cp + 8
        else:
            nh, cp = b[cp], cp + ((b[cp + 1] + 1) << 3)
    return nh, _u16(b, cp + 2)


def _time(seconds: int) -> str:
    return "infinity" if seconds == 0xFFFFFFFF else f"{seconds}s"


def _opt_print(nd, b: bytes, cp: int, length: int) -> None:
    out = nd.out
    end = cp + length
    while cp < end:
        if cp + 2 > len(b):
            raise Truncated
        typ, olen = b[cp], b[cp + 1]
        if olen == 0 or cp + olen * 8 > end:
            raise Truncated
        res = olen * 8
        if cp + res > len(b):
            raise Truncated
        out.append(f"\n\t  {_OPT_NAMES.get(typ, 'unknown')} option ({typ}), length {res} ({olen}): ")
        body = cp + 2
        known = True
        if typ in (1, 2):
            raw = bytes(b[body:cp + res])
            while raw and raw[-1] == 0 and len(raw) > 6:
                raw = raw[:-1]
            out.append(nd.names.etheraddr(raw) if len(raw) == 6 else raw.hex(":"))
        elif typ == 5:
            out.append(f" {_u32(b, cp + 4)}")
        elif typ == 3:
            plen = b[cp + 2]
            flags = b[cp + 3]
            fl = ", ".join(n for bit, n in ((0x80, "onlink"), (0x40, "auto"), (0x20, "router")) if flags & bit) or "none"
            prefix = bytes(b[cp + 16:cp + 32])
            if len(prefix) < 16:
                raise Truncated
            out.append(f"{nd.names.ip6addr(prefix)}/{plen}, "
                       f"Flags [{fl}], valid time {_time(_u32(b, cp + 4))}, pref. time {_time(_u32(b, cp + 8))}")
        elif typ == 7:
            out.append(f" {_u32(b, cp + 4)}ms")
        elif typ == 8:
            out.append(f" preference {_u16(b, cp + 4)}, lifetime {_u16(b, cp + 6)}")
        elif typ == 25:
            out.append(f" lifetime {_time(_u32(b, cp + 4))}, addr: ")
            out.append(" addr: ".join(ip6addr(nd, b, a) for a in range(cp + 8, cp + res, 16)))
        elif typ == 31:
            out.append(f" lifetime {_time(_u32(b, cp + 4))}, domain(s):")
            c = cp + 8
            while c < cp + res and b[c] != 0:
                from .dns import _fqdn
                out.append(" ")
                c = _fqdn(nd, b[:cp + res], c, cp + 8)
        else:
            known = False
        if not known or typ not in _OPT_NAMES:
            if nd.v <= 1:
                out.append(hex_lines(bytes(b[body:cp + res]), "\n\t  "))
                cp += res
                continue
        if nd.v > 1:
            out.append(hex_lines(bytes(b[body:cp + res]), "\n\t    "))
        cp += res


def icmp6_print(nd, b: bytes, off: int, length: int, ip_off: int, fragmented: bool) -> None:
    nd.proto = "icmp6"
    out = nd.out
    typ = b[off]
    code = b[off + 1]
    if nd.v and not fragmented and off + length <= len(b):
        field = _u16(b, off + 2)
        from .ip6 import pseudo_header
        pseudo = pseudo_header(b, ip_off, length, 58)
        s = cksum(pseudo, bytes(b[off:off + length]))
        out.append(f"[bad icmp6 cksum 0x{field:04x} -> 0x{shouldbe(field, s):04x}!] " if s else "[icmp6 sum ok] ")
    out.append(f"ICMP6, {_TYPES.get(typ, f'unknown icmp6 type ({typ})')}")
    if nd.v and typ in _LEN_FIRST:
        out.append(f", length {length}")
    oip = off + 8
    if typ == 1:
        out.append(f", {_UNREACH.get(code, f'unknown unreach code ({code})')}")
        if code in (0, 1, 3):
            out.append(f" {ip6addr(nd, b, oip + 24)}")
        elif code == 2:
            out.append(f" {ip6addr(nd, b, oip + 24)}, source address {ip6addr(nd, b, oip + 8)}")
        elif code == 4:
            proto, dport = _upper_dport(b, oip)
            dst = ip6addr(nd, b, oip + 24)
            names = nd.names
            if proto == 6:
                out.append(f", {dst} tcp port {names.tcpport(dport)}")
            elif proto == 17:
                out.append(f", {dst} udp port {names.udpport(dport)}")
            else:
                out.append(f", {dst} protocol {proto} port {dport} unreachable")
        elif nd.v <= 1:
            out.append(hex_lines(bytes(b[off:off + length])))
            return
    elif typ == 2:
        out.append(f", mtu {_u32(b, off + 4)}")
    elif typ == 3:
        if code == 0:
            out.append(f" for {ip6addr(nd, b, oip + 24)}")
        elif code == 1:
            out.append(" (reassembly)")
        else:
            out.append(f", unknown code ({code})")
    elif typ == 4:
        ip6addr(nd, b, oip + 24)
        ptr = _u32(b, off + 4)
        out.append({0: f", erroneous - octet {ptr}", 1: f", next header - octet {ptr}",
                    2: f", option - octet {ptr}", 3: f", incomplete header chain - octet {ptr}"}.get(code, f", code-#{code}"))
    elif typ in (128, 129):
        out.append(f", id {_u16(b, off + 4)}, seq {_u16(b, off + 6)}")
    elif typ == 130:
        if length == 24:
            _mld1(nd, b, off)
        elif length >= 28:
            out.append(" v2")
            _mld2_query(nd, b, off, length)
        else:
            out.append(f" unknown-version (len {length}) ")
    elif typ in (131, 132):
        _mld1(nd, b, off)
    elif typ == 143:
        _mld2_report(nd, b, off, length)
    elif typ == 133:
        if nd.v:
            _opt_print(nd, b, off + 8, length - 8)
    elif typ == 134:
        if nd.v:
            flags = b[off + 5]
            fl = ", ".join(n for bit, n in ((0x80, "managed"), (0x40, "other stateful"), (0x20, "home agent"),
                                              (0x04, "proxy")) if flags & bit) or "none"
            pref = {0: "medium", 1: "high", 2: "rsv", 3: "low"}[(flags >> 3) & 3]
            out.append(f"\n\thop limit {b[off + 4]}, Flags [{fl}], pref {pref}, router lifetime {_u16(b, off + 6)}s, "
                       f"reachable time {_u32(b, off + 8)}ms, retrans timer {_u32(b, off + 12)}ms")
            _opt_print(nd, b, off + 16, length - 16)
    elif typ == 135:
        out.append(f", who has {ip6addr(nd, b, off + 8)}")
        if nd.v:
            _opt_print(nd, b, off + 24, length - 24)
    elif typ == 136:
        out.append(f", tgt is {ip6addr(nd, b, off + 8)}")
        if nd.v:
            flags = _u32(b, off + 4)
            fl = ", ".join(n for bit, n in ((0x80000000, "router"), (0x40000000, "solicited"),
                                              (0x20000000, "override")) if flags & bit) or "none"
            out.append(f", Flags [{fl}]")
            _opt_print(nd, b, off + 24, length - 24)
    elif typ == 137:
        out.append(f", {ip6addr(nd, b, off + 24)} to {ip6addr(nd, b, off + 8)}")
        if nd.v:
            _opt_print(nd, b, off + 40, length - 40)
    else:
        out.append(f", length {length}")
        if nd.v <= 1:
            out.append(hex_lines(bytes(b[off:off + length])))
        return
    if not nd.v:
        out.append(f", length {length}")


def _mld1(nd, b: bytes, off: int) -> None:
    nd.out.append(f"max resp delay: {_u16(b, off + 4)} addr: {ip6addr(nd, b, off + 8)}")


def _mld2_query(nd, b: bytes, off: int, length: int) -> None:
    out = nd.out
    mrc = _u16(b, off + 4)
    mrt = mrc if mrc < 32768 else ((mrc & 0x0FFF) | 0x1000) << (((mrc & 0x7000) >> 12) + 3)
    if nd.v:
        out.append(f" [max resp delay={mrt}]")
    out.append(f" [gaddr {ip6addr(nd, b, off + 8)}")
    if nd.v:
        s = b[off + 24]
        if s & 0x08:
            out.append(" sflag")
        if s & 0x07:
            out.append(f" robustness={s & 0x07}")
        qqic = b[off + 25]
        qqi = qqic if qqic < 128 else ((qqic & 0x0F) | 0x10) << (((qqic & 0x70) >> 4) + 3)
        out.append(f" qqi={qqi}")
    nsrcs = _u16(b, off + 26)
    if nsrcs:
        if length < 28 + nsrcs * 16:
            out.append(" invalid number of sources")
        elif nd.v > 1:
            out.append(" {" + "".join(f" {ip6addr(nd, b, off + 28 + 16 * i)}" for i in range(nsrcs)) + " }")
        else:
            out.append(f", {nsrcs} source(s)")
    out.append("]")


def _mld2_report(nd, b: bytes, off: int, length: int) -> None:
    out = nd.out
    ngroups = _u16(b, off + 6)
    out.append(f", {ngroups} group record(s)")
    if not nd.v:
        return
    group = 8
    for _ in range(ngroups):
        if length < group + 20:
            out.append(" [invalid number of groups]")
            return
        out.append(f" [gaddr {ip6addr(nd, b, off + group + 4)}")
        rtype = b[off + group]
        out.append(f" {_MLD2_REC.get(rtype, f' [v2-report-#{rtype}]')}")
        nsrcs = _u16(b, off + group + 2)
        if length < group + 20 + nsrcs * 16:
            out.append(f" [invalid number of sources {nsrcs}]")
            return
        if nd.v == 1:
            out.append(f", {nsrcs} source(s)")
        else:
            out.append(" {" + "".join(f" {ip6addr(nd, b, off + group + 20 + 16 * j)}" for j in range(nsrcs)) + " }")
        group += 20 + nsrcs * 16
        out.append("]")

"""DNS on port 53 and mDNS on 5353 (print-domain.c): the one-line summary, more with -vv/-vvv."""
from __future__ import annotations

import socket

from .text import safe_chars
from .truncation import Truncated

_TYPES = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR", 10: "NULL",
    11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB",
    19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP_PTR", 24: "SIG", 25: "KEY", 26: "PX",
    27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA",
    35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL",
    43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 57: "RKEY",
    58: "TALINK", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID", 105: "L32",
    106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
    252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY", 256: "URI", 32768: "TA", 32769: "DLV",
}
_CLASSES = {1: "IN", 3: "CHAOS", 4: "HS", 254: "NONE", 255: "ANY"}
_OPS = ("", " inv_q", " stat", " op3", " notify", " update", " op6", " op7", " op8", " updateA",
        " updateD", " updateDA", " updateM", " updateMA", " zoneInit", " zoneRef")
_RCODES = ("", " FormErr", " ServFail", " NXDomain", " NotImp", " Refused", " YXDomain", " YXRRSet",
           " NXRRSet", " NotAuth", " NotZone", " Resp11", " Resp12", " Resp13", " Resp14", " Resp15",
           " BadVers", " BadKey", " BadTime", " BadMode", " BadName", " BadAlg", " BadTrunc", " BadCookie")
_EDNS = {1: "LLQ", 2: "UL", 3: "NSID", 5: "DAU", 6: "DHU", 7: "N3U", 8: "ECS", 9: "EXPIRE",
         10: "COOKIE", 11: "KEEPALIVE", 12: "PADDING", 13: "CHAIN", 14: "KEY-TAG", 16: "CLIENT-TAG",
         17: "SERVER-TAG"}
_EDNS = {k: v for k, v in _EDNS.items() if k != 16 and k != 17}


class _Stop(Exception):
    """ns_rprint returned snapend: stop the sections quietly."""


def _u16(b: bytes, at: int) -> int:
    return (b[at] << 8) | b[at + 1]


def _nskip(b: bytes, cp: int) -> int | None:
    if cp >= len(b):
        return None
    i = b[cp]
    cp += 1
    while i:
        kind = i & 0xC0
        if kind == 0xC0:
            return cp + 1
        if kind == 0x40:
            if i & 0x3F != 1 or cp >= len(b):
                return None
            bitlen = b[cp] or 256
            cp += 1 + (bitlen + 7) // 8
        else:
            cp += i
        if cp >= len(b):
            return None
        i = b[cp]
        cp += 1
    return cp


def _fqdn(nd, b: bytes, cp: int, base: int) -> int:
    """Print a domain name; the offset after it in the message (not after a pointer target)."""
    out = nd.out
    max_offset = cp - base
    i = b[cp]
    cp += 1
    if i == 0:
        out.append(".")
        return cp
    compressed = False
    rp = cp
    end = len(b)
    while i and cp < end:
        kind = i & 0xC0
        if kind == 0xC0:
            if not compressed:
                rp = cp + 1
                compressed = True
            offset = ((i << 8) | b[cp]) & 0x3FFF
            if offset >= max_offset:
                out.append("<BAD PTR>")
                raise Truncated
            max_offset = offset
            cp = base + offset
            i = b[cp]
            cp += 1
            continue
        if kind == 0x40:
            out.append("<ELT %d>" % (i & 0x3F) if i & 0x3F != 1 else "")
            raise Truncated
        label = bytes(b[cp:cp + i])
        out.append(safe_chars(label))
        if len(label) < i:
            raise Truncated
        cp += i
        out.append(".")
        i = b[cp]
        cp += 1
        if not compressed:
            rp = cp
    return rp


def _relts(secs: int) -> str:
    if secs == 0:
        return "0s"
    out = []
    for unit, n in (("y", 31536000), ("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= n:
            out.append(f"{secs // n}{unit}")
            secs %= n
    return "".join(out)


def _qprint(nd, b: bytes, cp: int, base: int, mdns: bool) -> int:
    np = cp
    cp = _nskip(b, cp)
    if cp is None or cp + 4 > len(b):
        raise Truncated
    qtype = _u16(b, cp)
    qclass = _u16(b, cp + 2)
    out = nd.out
    out.append(f" {_TYPES.get(qtype, f'Type{qtype}')}")
    klass = qclass & ~0x8000 if mdns else qclass
    if klass != 1:
        out.append(f" {_CLASSES.get(klass, f'(Class {klass})')}")
    if mdns:
        out.append(" (QU)" if qclass & 0x8000 else " (QM)")
    out.append("? ")
    _fqdn(nd, b, np, base)
    return cp + 4


def _edns_option(nd, b: bytes, cp: int) -> int:
    out = nd.out
    code = _u16(b, cp)
    dlen = _u16(b, cp + 2)
    cp += 4
    out.append(_EDNS.get(code, f"Opt{code}"))
    if dlen:
        out.append(" ")
        data = bytes(b[cp:cp + dlen])
        if len(data) < dlen:
            raise Truncated
        if code == 10:
            if dlen < 8 or 8 < dlen < 16 or dlen > 40:
                out.append(" (invalid)")
            else:
                out.append(data[:8].hex())
                if dlen > 8:
                    out.append(" " + data[8:].hex())
        elif code == 8 and dlen >= 4:
            family, src, scope = _u16(data, 0), data[2], data[3]
            addr = data[4:]
            if family == 1:
                out.append(f"{socket.inet_ntoa(addr.ljust(4, bytes(1))[:4])}/{src}/{scope}")
            elif family == 2:
                out.append(f"{socket.inet_ntop(socket.AF_INET6, addr.ljust(16, bytes(1))[:16])}/{src}/{scope}")
            else:
                out.append(data.hex())
        elif code == 12:
            out.append(f"({dlen})")
        elif code in (9, 11) and dlen in (2, 4):
            out.append(str(int.from_bytes(data, "big")))
        else:
            out.append(data.hex())
    return cp + dlen


def _rprint(nd, b: bytes, cp: int, base: int, mdns: bool) -> int:
    out = nd.out
    if nd.v:
        out.append(" ")
        cp = _fqdn(nd, b, cp, base)
    else:
        cp = _nskip(b, cp)
    if cp is None or cp + 10 > len(b):
        return len(b)  # tcpdump returns the end of the capture here: the sections stop
    typ = _u16(b, cp)
    klass_raw = _u16(b, cp + 2)
    klass = klass_raw & ~0x8000 if mdns and typ != 41 else klass_raw
    if klass != 1 and typ != 41:
        out.append(f" {_CLASSES.get(klass, f'(Class {klass})')}")
    if mdns and klass_raw & 0x8000:
        out.append(" (Cache flush)")
    opt_flags = 0
    if typ == 41:
        opt_flags = _u16(b, cp + 6)
    elif nd.v > 2:
        out.append(f" [{_relts(int.from_bytes(b[cp + 4:cp + 8], 'big'))}]")
    rdlen = _u16(b, cp + 8)
    cp += 10
    rp = cp + rdlen
    out.append(f" {_TYPES.get(typ, f'Type{typ}')}")
    if rp > len(b):
        raise Truncated
    if typ == 1:
        out.append(f" {socket.inet_ntoa(bytes(b[cp:cp + 4]))}" if rdlen >= 4 else "")
        if rdlen < 4:
            raise Truncated
    elif typ in (2, 5, 12, 39):
        out.append(" ")
        _fqdn(nd, b, cp, base)
    elif typ == 6:
        if nd.v:
            out.append(" ")
            c = _fqdn(nd, b, cp, base)
            out.append(" ")
            c = _fqdn(nd, b, c, base)
            if c + 20 > len(b):
                raise Truncated
            for k in range(5):
                out.append(f" {int.from_bytes(b[c + 4 * k:c + 4 * k + 4], 'big')}")
    elif typ == 15:
        out.append(" ")
        _fqdn(nd, b, cp + 2, base)
        out.append(f" {_u16(b, cp)}")
    elif typ == 16:
        c = cp
        while c < rp:
            n = b[c]
            out.append(' "' + safe_chars(bytes(b[c + 1:c + 1 + n])) + '"')
            if c + 1 + n > len(b):
                raise Truncated
            c += 1 + n
    elif typ == 33:
        out.append(" ")
        _fqdn(nd, b, cp + 6, base)
        out.append(f":{_u16(b, cp + 4)} {_u16(b, cp)} {_u16(b, cp + 2)}")
    elif typ == 28:
        raw = bytes(b[cp:cp + 16])
        if len(raw) < 16:
            raise Truncated
        out.append(f" {socket.inet_ntop(socket.AF_INET6, raw)}")
    elif typ == 256:
        out.append(f" {_u16(b, cp)} {_u16(b, cp + 2)} ")
        out.append(safe_chars(bytes(b[cp + 4:rp])))
    elif typ == 41:
        out.append(f" UDPsize={klass}")
        if opt_flags & 0x8000:
            out.append(" DO")
        if cp < rp:
            out.append(" [")
            while cp < rp:
                cp = _edns_option(nd, b, cp)
                if cp < rp:
                    out.append(",")
            out.append("]")
    return rp


def domain_print(nd, b: bytes, cp: int, length: int, over_tcp: bool, mdns: bool) -> None:
    nd.proto = "domain"
    out = nd.out
    if over_tcp:
        if length < 2:
            out.append(f" [DNS over TCP: length {length} < 2] (invalid)")
            return
        length -= 2
        prefix = _u16(b, cp)
        if prefix != length:
            out.append(f" [prefix length({prefix}) != length({length})] (invalid)")
            return
        cp += 2
        out.append(" ")
    end = cp + length
    if end < len(b):
        b = b[:end]
    base = cp
    if cp + 12 > len(b):
        raise Truncated
    qid = _u16(b, cp)
    b2 = _u16(b, cp + 2)
    qd, an, ns, ar = _u16(b, cp + 4), _u16(b, cp + 6), _u16(b, cp + 8), _u16(b, cp + 10)
    rcode = b2 & 0x0F
    opcode = (b2 >> 11) & 0x0F
    # the extended rcode lives in the OPT record's TTL
    c = cp + 12
    try:
        for _ in range(qd):
            c = _nskip(b, c)
            if c is None:
                raise _Stop
            c += 4
            if c >= len(b):
                raise _Stop
        for _ in range(an + ns):
            c = _nskip(b, c)
            if c is None:
                raise _Stop
            c += 8
            if c + 2 > len(b):
                raise _Stop
            c += 2 + _u16(b, c)
            if c >= len(b):
                raise _Stop
        for _ in range(ar):
            c = _nskip(b, c)
            if c is None or c + 2 > len(b):
                raise _Stop
            typ = _u16(b, c)
            c += 4
            if c + 1 > len(b):
                raise _Stop
            if typ == 41:
                rcode |= b[c] << 4
                raise _Stop
            c += 4
            if c + 2 > len(b):
                raise _Stop
            c += 2 + _u16(b, c)
            if c >= len(b):
                raise _Stop
    except _Stop:
        pass
    c = cp + 12
    try:
        if b2 & 0x8000:
            rc = _RCODES[rcode] if rcode < len(_RCODES) else f" Resp{rcode}"
            out.append(f"{qid}{_OPS[opcode]}{rc}{'*' if b2 & 0x0400 else ''}{'' if b2 & 0x0080 else '-'}"
                       f"{'|' if b2 & 0x0200 else ''}{'$' if b2 & 0x0020 else ''}")
            if qd != 1:
                out.append(f" [{qd}q]")
            for i in range(qd):
                if nd.v > 1:
                    if i == 0:
                        out.append(" q:")
                    c = _qprint(nd, b, c, base, mdns)
                else:
                    c = _nskip(b, c)
                    if c is None:
                        raise Truncated
                    c += 4
            out.append(f" {an}/{ns}/{ar}")
            c = _section(nd, b, c, base, mdns, an, "")
            if nd.v > 1:
                if c < len(b) and ns:
                    c = _section(nd, b, c, base, mdns, ns, " ns:")
                elif ns:
                    raise Truncated
                if c < len(b) and ar:
                    c = _section(nd, b, c, base, mdns, ar, " ar:")
                elif ar:
                    raise Truncated
        else:
            out.append(f"{qid}{_OPS[opcode]}{'+' if b2 & 0x0100 else ''}{'%' if b2 & 0x0010 else ''}")
            if b2 & 0x6CF:
                out.append(f" [b2&3=0x{b2:x}]")
            if opcode == 1:
                if qd:
                    out.append(f" [{qd}q]")
                if an != 1:
                    out.append(f" [{an}a]")
            else:
                if an:
                    out.append(f" [{an}a]")
                if qd != 1:
                    out.append(f" [{qd}q]")
            if ns:
                out.append(f" [{ns}n]")
            if ar:
                out.append(f" [{ar}au]")
            left = qd
            if left:
                c = _qprint(nd, b, c, base, mdns)
                left -= 1
                while c < len(b) and left:
                    c = _qprint(nd, b, c, base, mdns)
                    left -= 1
            if left:
                raise Truncated
            if nd.v > 1:
                if an:
                    c = _section(nd, b, c, base, mdns, an, "")
                if c < len(b) and ns:
                    c = _section(nd, b, c, base, mdns, ns, " ns:")
                elif ns:
                    raise Truncated
                if c < len(b) and ar:
                    c = _section(nd, b, c, base, mdns, ar, " ar:")
                elif ar:
                    raise Truncated
    except _Stop:
        pass
    out.append(f" ({length})")


def _section(nd, b: bytes, c: int, base: int, mdns: bool, count: int, label: str) -> int:
    if not count:
        return c
    nd.out.append(label)
    c = _rprint(nd, b, c, base, mdns)
    count -= 1
    while c < len(b) and count:
        nd.out.append(",")
        c = _rprint(nd, b, c, base, mdns)
        count -= 1
    if count:
        raise Truncated
    return c

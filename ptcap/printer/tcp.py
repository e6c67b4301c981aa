"""TCP (print-tcp.c): flags, relative sequence numbers, window, options, and the payload printers."""
from __future__ import annotations

import struct

from .checksum import cksum, shouldbe
from .truncation import Truncated

_HDR = struct.Struct("!HHIIBBHHH").unpack_from
_FLAGS = {}
for _f in range(256):
    _FLAGS[_f] = "".join(c for bit, c in ((1, "F"), (2, "S"), (4, "R"), (8, "P"), (16, "."),
                                          (32, "U"), (64, "E"), (128, "W")) if _f & bit) or "none"
_OPTION_NAMES = {0: "eol", 1: "nop", 2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 6: "echo",
                 7: "echoreply", 8: "TS", 11: "cc", 12: "ccnew", 13: "ccecho", 19: "md5", 20: "scps",
                 28: "uto", 29: "tcp-ao", 30: "mptcp", 34: "tfo", 253: "exp", 254: "exp"}
_MASK = 0xFFFFFFFF
_NOP_NOP_TS = b"\x01\x01\x08\x0a"


class _OptTrunc(Exception):
    """Truncated inside the options after a check (tcpdump's 'goto trunc': ' [|tcp]>' )."""


class _BadOpt(Exception):
    pass


def tcp_print(nd, b: bytes, off: int, length: int, ver: int, ip_off: int, fragmented: bool) -> None:
    nd.proto = "tcp"
    out = nd.out
    names = nd.names
    if ver == 6:
        src = b[ip_off + 8:ip_off + 24]
        dst = b[ip_off + 24:ip_off + 40]
        direct = b[ip_off + 6] == 6
        addr = names.ip6addr
    else:
        src = b[ip_off + 12:ip_off + 16]
        dst = b[ip_off + 16:ip_off + 20]
        direct = b[ip_off + 9] == 6
        addr = names.ipaddr
    if len(b) - off < 20:
        if len(b) - off < 4:
            out.append(f"{addr(src)} > {addr(dst)}:")
            raise Truncated
        sport = (b[off] << 8) | b[off + 1]
        dport = (b[off + 2] << 8) | b[off + 3]
        if direct:
            out.append(f"{addr(src)}.{names.tcpport(sport)} > {addr(dst)}.{names.tcpport(dport)}: ")
        else:
            out.append(f"{names.tcpport(sport)} > {names.tcpport(dport)}: ")
        raise Truncated
    sport, dport, seq, ack, offx, flags, win, csum, urp = _HDR(b, off)
    cache = nd.endpoint_cache
    ckey = (src, dst, sport, dport, direct)
    ports = cache.get(ckey)
    if ports is None:
        tcpport = names.tcpport
        if direct:
            ports = f"{addr(src)}.{tcpport(sport)} > {addr(dst)}.{tcpport(dport)}: "
        else:
            ports = f"{tcpport(sport)} > {tcpport(dport)}: "
        if len(cache) > 65536:
            cache.clear()
        cache[ckey] = ports
    hlen = (offx >> 4) * 4
    if hlen < 20:
        out.append(f"{ports} tcp {length - hlen} [bad hdr length {hlen} - too short, < 20]")
        return
    if nd.q:
        out.append(f"{ports}tcp {length - hlen}")
        if hlen > length:
            out.append(f" [bad hdr length {hlen} - too long, > {length}]")
        return
    out.append(f"{ports}Flags [{_FLAGS[flags]}]")
    rev = False
    thseq = thack = 0
    if not nd.S and flags & 0x10:
        if sport > dport or (sport == dport and src > dst):
            rev = True
            key = (dst, src, (dport << 16) | sport)
        else:
            key = (src, dst, (sport << 16) | dport)
        table = nd.tcp_seq
        th = table.get(key)
        if th is None or flags & 0x02:
            th = [ack - 1 & _MASK, seq] if rev else [seq, ack - 1 & _MASK]
            table[key] = th
        elif rev:
            seq = (seq - th[1]) & _MASK
            ack = (ack - th[0]) & _MASK
        else:
            seq = (seq - th[0]) & _MASK
            ack = (ack - th[1]) & _MASK
        thseq, thack = th
    if hlen > length:
        out.append(f" [bad hdr length {hlen} - too long, > {length}]")
        return
    if nd.v and not fragmented:
        if off + length <= len(b):
            if ver == 4:
                pseudo = bytes(b[ip_off + 12:ip_off + 20]) + struct.pack("!BBH", 0, 6, length)
            else:
                from .ip6 import pseudo_header
                pseudo = pseudo_header(b, ip_off, length, 6)
            s = cksum(pseudo, bytes(b[off:off + length]))
            out.append(f", cksum 0x{csum:04x}")
            if s != 0:
                out.append(f" (incorrect -> 0x{shouldbe(csum, s):04x})")
            else:
                out.append(" (correct)")
    length -= hlen
    if length > 0:
        seqtext = f", seq {seq}:{(seq + length) & _MASK}"
    elif nd.v > 1 or flags & 0x07:
        seqtext = f", seq {seq}"
    else:
        seqtext = ""
    if flags & 0x10:
        out.append(f"{seqtext}, ack {ack}, win {win}")
    else:
        out.append(f"{seqtext}, win {win}")
    if flags & 0x20:
        out.append(f", urg {urp}")
    if hlen == 32 and b[off + 20:off + 24] == _NOP_NOP_TS and off + 32 <= len(b):
        # the option block of nearly every established-connection segment
        out.append(f", options [nop,nop,TS val {int.from_bytes(b[off + 24:off + 28], 'big')} "
                   f"ecr {int.from_bytes(b[off + 28:off + 32], 'big')}]")
    elif hlen > 20:
        out.append(", options [")
        try:
            _options(nd, b, off + 20, hlen - 20, rev, thseq, thack)
        except _BadOpt:
            out.append("[bad opt]]")
            return
        except _OptTrunc:
            out.append(" [|tcp]>")
            return
        out.append("]")
    out.append(f", length {length}")
    if length <= 0:
        return
    data = off + hlen
    if flags & 0x04 and nd.v:
        _rst_data(nd, b, data, length)
        return
    _payload(nd, b, data, length, sport, dport)


def _options(nd, b: bytes, cp: int, hlen: int, rev: bool, thseq: int, thack: int) -> None:
    """tcpdump's option loop: a declared length past the header is '[bad opt]' (_BadOpt), data
    past the capture after its check is ' [|tcp]>' (_OptTrunc), a failed read is IndexError."""
    out = nd.out
    n = len(b)
    first = True
    while hlen > 0:
        if first:
            first = False
        else:
            out.append(",")
        opt = b[cp]
        cp += 1
        if opt == 1:
            out.append("nop")
            hlen -= 1
            continue
        if opt == 0:
            out.append("eol")
            break
        olen = b[cp]
        cp += 1
        if olen < 2 or olen > hlen:
            raise _BadOpt
        hlen -= 2
        if opt == 8:
            if 8 > hlen:
                out.append("TS")
                raise _BadOpt
            if cp + 8 > n:
                out.append("TS")
                raise _OptTrunc
            out.append(f"TS val {int.from_bytes(b[cp:cp + 4], 'big')} ecr {int.from_bytes(b[cp + 4:cp + 8], 'big')}")
            used = 8
        elif opt == 2:
            if 2 > hlen:
                out.append("mss")
                raise _BadOpt
            if cp + 2 > n:
                out.append("mss")
                raise _OptTrunc
            out.append(f"mss {(b[cp] << 8) | b[cp + 1]}")
            used = 2
        elif opt == 3:
            if 1 > hlen:
                out.append("wscale")
                raise _BadOpt
            if cp + 1 > n:
                out.append("wscale")
                raise _OptTrunc
            out.append(f"wscale {b[cp]}")
            used = 1
        elif opt == 4:
            out.append("sackOK")
            used = 0
        else:
            out.append(_OPTION_NAMES.get(opt, f"unknown-{opt}"))
            used = _option_body(nd, b, cp, opt, olen, hlen, rev, thseq, thack)
        cp += used
        hlen -= used
        if used + 2 != olen:
            out.append(f"[len {olen}]")


def _check(b: bytes, at: int, k: int, hlen: int) -> None:
    if k > hlen:
        raise _BadOpt
    if at + k > len(b):
        raise _OptTrunc


def _option_body(nd, b: bytes, cp: int, opt: int, olen: int, hlen: int, rev: bool, thseq: int, thack: int) -> int:
    """The less common options; returns the data length consumed."""
    out = nd.out
    datalen = 0
    if opt == 5:
        datalen = olen - 2
        if datalen % 8:
            out.append(" invalid sack")
        else:
            out.append(f" {datalen // 8} ")
            base = thseq if rev else thack
            for i in range(0, datalen, 8):
                _check(b, cp + i, 4, hlen)
                s = int.from_bytes(b[cp + i:cp + i + 4], "big")
                _check(b, cp + i, 8, hlen)
                e = int.from_bytes(b[cp + i + 4:cp + i + 8], "big")
                out.append(f"{{{(s - base) & _MASK}:{(e - base) & _MASK}}}")
    elif opt in (11, 12, 13):
        datalen = 4
        _check(b, cp, 4, hlen)
        out.append(f" {int.from_bytes(b[cp:cp + 4], 'big')}")
    elif opt == 19:
        datalen = 16
        _check(b, cp, 16, hlen)
        out.append(f":can't check - {bytes(b[cp:cp + 16]).hex()}")
    elif opt == 28:
        datalen = 2
        _check(b, cp, 2, hlen)
        uto = (b[cp] << 8) | b[cp + 1]
        out.append(f" 0x{uto:x} {(uto >> 1) * 60 if uto & 1 else uto >> 1}")
    elif opt == 30:
        datalen = olen - 2
        _check(b, cp, datalen, hlen)
        _mptcp(nd, b, cp, datalen)
    elif opt == 34:
        datalen = olen - 2
        _check(b, cp, datalen, hlen)
        out.append(" ")
        _fastopen(nd, b, cp, datalen, False)
    elif opt in (253, 254):
        datalen = olen - 2
        _check(b, cp, datalen, hlen)
        if datalen < 2:
            raise _BadOpt
        magic = (b[cp] << 8) | b[cp + 1]
        out.append("-")
        if magic == 0xF989:
            _fastopen(nd, b, cp + 2, datalen - 2, True)
        else:
            out.append(f"{magic:04x}")
    else:
        datalen = olen - 2
        if datalen:
            out.append(" 0x")
        for i in range(datalen):
            _check(b, cp + i, 1, hlen)
            out.append(f"{b[cp + i]:02x}")
    return datalen


def _fastopen(nd, b: bytes, cp: int, datalen: int, exp: bool) -> None:
    out = nd.out
    if exp:
        out.append("tfo")
    if datalen == 0:
        out.append(" cookiereq")
    elif datalen % 2 != 0 or datalen < 4 or datalen > 16:
        out.append(" invalid")
    else:
        out.append(f" cookie {bytes(b[cp:cp + datalen]).hex()}")


_MPTCP_SUBTYPES = ("capable", "join", "dss", "add-addr", "rem-addr", "prio", "fail", "fast-close")


def _mptcp(nd, b: bytes, cp: int, datalen: int) -> None:
    # print-mptcp.c decodes every subtype; we print its length and subtype name
    if datalen + 2 < 3:
        raise _BadOpt
    sub = b[cp] >> 4
    nd.out.append(f" {datalen + 2} {_MPTCP_SUBTYPES[sub] if sub < len(_MPTCP_SUBTYPES) else 'unknown'}")


def _rst_data(nd, b: bytes, cp: int, length: int) -> None:
    out = nd.out
    avail = len(b) - cp
    out.append(" [RST" if avail >= length else " [!RST")
    if length > 30:
        length = 30
        out.append("+")
    out.append(" ")
    out.append(text.safe_chars(bytes(b[cp:cp + min(length, avail)])))
    out.append("]")


def _payload(nd, b: bytes, cp: int, length: int, sport: int, dport: int) -> None:
    if sport == 80 or dport == 80 or sport == 8080 or dport == 8080:
        nd.out.append(": ")
        text.http_print(nd, b, cp, length)
    elif sport == 53 or dport == 53:
        dns.domain_print(nd, b, cp, length, over_tcp=True, mdns=False)
    elif sport == 22 or dport == 22:
        text.ssh_print(nd, b, cp, length)
    elif sport == 21 or dport == 21:
        nd.out.append(": ")
        text.txtproto_print(nd, b, cp, length, "ftp", None, False)
    elif sport == 25 or dport == 25:
        nd.out.append(": ")
        text.txtproto_print(nd, b, cp, length, "smtp", None, False)


from . import dns, text  # noqa: E402

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
    if len(b) - off < 4:
        out.append(f"{addr(bytes(src))} > {addr(bytes(dst))}:")
        raise Truncated
    sport = (b[off] << 8) | b[off + 1]
    dport = (b[off + 2] << 8) | b[off + 3]
    if direct:
        out.append(f"{addr(bytes(src))}.{names.tcpport(sport)} > {addr(bytes(dst))}.{names.tcpport(dport)}: ")
    else:
        out.append(f"{names.tcpport(sport)} > {names.tcpport(dport)}: ")
    if len(b) - off < 20:
        raise Truncated
    sport, dport, seq, ack, offx, flags, win, csum, urp = _HDR(b, off)
    hlen = (offx >> 4) * 4
    if hlen < 20:
        out.append(f" tcp {length - hlen} [bad hdr length {hlen} - too short, < 20]")
        return
    if nd.q:
        out.append(f"tcp {length - hlen}")
        if hlen > length:
            out.append(f" [bad hdr length {hlen} - too long, > {length}]")
        return
    out.append(f"Flags [{_FLAGS[flags]}]")
    rev = False
    thseq = thack = 0
    if not nd.S and flags & 0x10:
        src = bytes(src)
        dst = bytes(dst)
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
        else:
            if rev:
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
    if nd.v > 1 or length > 0 or flags & 0x07:
        out.append(f", seq {seq}:{(seq + length) & _MASK}" if length > 0 else f", seq {seq}")
    if flags & 0x10:
        out.append(f", ack {ack}")
    out.append(f", win {win}")
    if flags & 0x20:
        out.append(f", urg {urp}")
    if hlen > 20:
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
    out = nd.out
    sep = ""
    n = len(b)

    def check(i: int, k: int) -> None:
        # LENCHECK: declared length first, then the captured bytes
        if k > hlen_left[0]:
            raise _BadOpt
        if i + k > n:
            raise _OptTrunc

    hlen_left = [hlen]
    while hlen_left[0] > 0:
        out.append(sep)
        opt = b[cp]
        cp += 1
        if opt in (0, 1):
            olen = 1
        else:
            olen = b[cp]
            cp += 1
            if olen < 2 or olen > hlen_left[0]:
                raise _BadOpt
            hlen_left[0] -= 1
        hlen_left[0] -= 1
        datalen = 0
        out.append(_OPTION_NAMES.get(opt, f"unknown-{opt}"))
        if opt == 2:
            datalen = 2
            check(cp, 2)
            out.append(f" {(b[cp] << 8) | b[cp + 1]}")
        elif opt == 3:
            datalen = 1
            check(cp, 1)
            out.append(f" {b[cp]}")
        elif opt == 5:
            datalen = olen - 2
            if datalen % 8:
                out.append(" invalid sack")
            else:
                out.append(f" {datalen // 8} ")
                for i in range(0, datalen, 8):
                    check(cp + i, 4)
                    s = int.from_bytes(b[cp + i:cp + i + 4], "big")
                    check(cp + i, 8)
                    e = int.from_bytes(b[cp + i + 4:cp + i + 8], "big")
                    base = thseq if rev else thack
                    out.append(f"{{{(s - base) & _MASK}:{(e - base) & _MASK}}}")
        elif opt in (11, 12, 13):
            datalen = 4
            check(cp, 4)
            out.append(f" {int.from_bytes(b[cp:cp + 4], 'big')}")
        elif opt == 8:
            datalen = 8
            check(cp, 8)
            out.append(f" val {int.from_bytes(b[cp:cp + 4], 'big')} ecr {int.from_bytes(b[cp + 4:cp + 8], 'big')}")
        elif opt == 19:
            datalen = 16
            check(cp, 16)
            out.append(f":can't check - {bytes(b[cp:cp + 16]).hex()}")
        elif opt == 28:
            datalen = 2
            check(cp, 2)
            uto = (b[cp] << 8) | b[cp + 1]
            out.append(f" 0x{uto:x}")
            out.append(f" {(uto >> 1) * 60 if uto & 1 else uto >> 1}")
        elif opt == 30:
            datalen = olen - 2
            check(cp, datalen)
            _mptcp(nd, b, cp, datalen)
        elif opt == 34:
            datalen = olen - 2
            check(cp, datalen)
            out.append(" ")
            _fastopen(nd, b, cp, datalen, False)
        elif opt in (253, 254):
            datalen = olen - 2
            check(cp, datalen)
            if datalen < 2:
                raise _BadOpt
            magic = (b[cp] << 8) | b[cp + 1]
            out.append("-")
            if magic == 0xF989:
                _fastopen(nd, b, cp + 2, datalen - 2, True)
            else:
                out.append(f"{magic:04x}")
        elif opt not in (0, 1, 4):
            datalen = olen - 2
            if datalen:
                out.append(" 0x")
            for i in range(datalen):
                check(cp + i, 1)
                out.append(f"{b[cp + i]:02x}")
        cp += datalen
        hlen_left[0] -= datalen
        datalen += 1 if opt in (0, 1) else 2
        if datalen != olen:
            out.append(f"[len {olen}]")
        sep = ","
        if opt == 0:
            break


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
    from .text import safe_chars
    out.append(safe_chars(bytes(b[cp:cp + min(length, avail)])))
    out.append("]")


def _payload(nd, b: bytes, cp: int, length: int, sport: int, dport: int) -> None:
    if sport == 80 or dport == 80 or sport == 8080 or dport == 8080:
        nd.out.append(": ")
        from .text import http_print
        http_print(nd, b, cp, length)
    elif sport == 53 or dport == 53:
        from .dns import domain_print
        domain_print(nd, b, cp, length, over_tcp=True, mdns=False)
    elif sport == 22 or dport == 22:
        from .text import ssh_print
        ssh_print(nd, b, cp, length)
    elif sport == 21 or dport == 21:
        nd.out.append(": ")
        from .text import txtproto_print
        txtproto_print(nd, b, cp, length, "ftp", None, False)
    elif sport == 25 or dport == 25:
        nd.out.append(": ")
        from .text import txtproto_print
        txtproto_print(nd, b, cp, length, "smtp", None, False)

"""IPv4 (print-ip.c): the header line, -v details, options, fragments, and the protocol demultiplexer."""
from __future__ import annotations

from .checksum import cksum, shouldbe
from .tables import IPPROTO_NAMES
from .truncation import Truncated

_OPTION_NAMES = {0: "EOL", 1: "NOP", 68: "timestamp", 130: "security", 7: "RR", 137: "SSRR",
                 131: "LSRR", 148: "RA", 82: "traceroute"}
_ECN = ("", ",ECT(1)", ",ECT(0)", ",CE")
_PROTO_NAMES: dict[int, str | None] = {}


def _frag_flags(off: int) -> str:
    s = ("+" if off & 0x2000 else "") + ("DF" if off & 0x4000 else "") + ("rsvd" if off & 0x8000 else "")
    return s or "none"


def protoname(nd, nh: int) -> str:
    """' name' from /etc/protocols when names are on, else ' ip-proto-N'."""
    if not nd.n:
        name = _PROTO_NAMES.get(nh, "")
        if name == "":
            name = None
            try:
                with open("/etc/protocols") as f:
                    for line in f:
                        fields = line.split("#", 1)[0].split()
                        if len(fields) >= 2 and fields[1] == str(nh):
                            name = fields[0]
                            break
            except OSError:
                pass
            _PROTO_NAMES[nh] = name
        if name:
            return f" {name}"
    return f" ip-proto-{nh}"


def _optprint(nd, b: bytes, off: int, length: int) -> str:
    parts = []
    sep = ""
    end = off + length
    while off < end:
        code = b[off]
        parts.append(sep + _OPTION_NAMES.get(code, f"unknown {code}"))
        sep = ","
        if code in (0, 1):
            olen = 1
        else:
            olen = b[off + 1]
            if olen < 2:
                parts.append(f" [bad length {olen}]")
                break
        if olen > end - off:
            parts.append(f" [bad length {olen}]")
            break
        if off + olen > len(b):
            raise Truncated
        if code == 0:
            break
        if code in (7, 131, 137):
            if olen < 3:
                parts.append(f" [bad length {olen}]")
            else:
                if (olen + 1) & 3:
                    parts.append(f" [bad length {olen}]")
                ptr = b[off + 2] - 1
                if ptr < 3 or ((ptr + 1) & 3) or ptr > olen + 1:
                    parts.append(f" [bad ptr {b[off + 2]}]")
                for i in range(3, olen, 4):
                    parts.append(f" {nd.names.ipaddr(bytes(b[off + i:off + i + 4]))}")
                    if ptr > i:
                        parts.append(",")
        elif code == 148:
            if olen < 4:
                parts.append(f" [bad length {olen}]")
            else:
                value = (b[off + 2] << 8) | b[off + 3]
                if value:
                    parts.append(f" value {value}")
        off += olen
    return "".join(parts)


def ip_print(nd, b: bytes, off: int, length: int) -> None:
    nd.proto = "ip"
    out = nd.out
    version = b[off] >> 4
    if version != 4:
        out.append("IP6, wrong link-layer encapsulation" if version == 6 else f"IP{version} (invalid)")
        return
    if not nd.e:
        out.append("IP ")
    if len(b) - off < 20:
        out.append(" [|ip]")
        return
    if length < 20:
        out.append(f"truncated-ip {length}")
        return
    hlen = (b[off] & 0x0F) * 4
    if hlen < 20:
        out.append(f"bad-hlen {hlen}")
        return
    total = (b[off + 2] << 8) | b[off + 3]
    if length < total:
        out.append(f"truncated-ip - {total - length} bytes missing! ")
    if total < hlen:
        out.append(f"bad-len {total}")
        return
    end = off + total
    if end < len(b):
        b = b[:end]  # the IP length ends the payload (Ethernet padding is not part of it)
    ip_len = total - hlen
    fragoff = (b[off + 6] << 8) | b[off + 7]
    nh = b[off + 9]
    if nd.v:
        tos = b[off + 1]
        ttl = b[off + 8]
        parts = [f"(tos 0x{tos:x}{_ECN[tos & 3]}"]
        if ttl >= 1:
            parts.append(f", ttl {ttl}")
        parts.append(f", id {(b[off + 4] << 8) | b[off + 5]}, offset {(fragoff & 0x1FFF) * 8}, "
                     f"flags [{_frag_flags(fragoff)}], proto {IPPROTO_NAMES.get(nh, 'unknown')} ({nh})"
                     f", length {total}")
        out.append("".join(parts))
        if hlen > 20:
            out.append(", options (")
            try:
                out.append(_optprint(nd, b, off + 20, hlen - 20))
            except (Truncated, IndexError):
                out.append(" [truncated-option]")
            out.append(")")
        if off + hlen <= len(b):
            s = cksum(bytes(b[off:off + hlen]))
            if s != 0:
                field = (b[off + 10] << 8) | b[off + 11]
                out.append(f", bad cksum {field:x} (->{shouldbe(field, s):x})!")
        out.append(")\n    ")
    if fragoff & 0x1FFF == 0:
        if nh not in (6, 17, 132, 33):
            names = nd.names
            out.append(f"{names.ipaddr(bytes(b[off + 12:off + 16]))} > {names.ipaddr(bytes(b[off + 16:off + 20]))}: ")
        ip_demux(nd, b, off + hlen, ip_len, 4, bool(fragoff & 0x2000), nh, off)
    else:
        names = nd.names
        out.append(f"{names.ipaddr(bytes(b[off + 12:off + 16]))} > {names.ipaddr(bytes(b[off + 16:off + 20]))}:")
        out.append(protoname(nd, nh))


def ip_demux(nd, b: bytes, off: int, length: int, ver: int, fragmented: bool, nh: int, ip_off: int) -> None:
    """Hand the payload to the next protocol (ip_demux_print); ip_off is where the IP header starts."""
    if nh == 6:
        tcp.tcp_print(nd, b, off, length, ver, ip_off, fragmented)
    elif nh == 17:
        udp.udp_print(nd, b, off, length, ver, ip_off, fragmented)
    elif nh == 1 and ver == 4:
        icmp.icmp_print(nd, b, off, length, ip_off, fragmented)
    elif nh == 58 and ver == 6:
        icmp6.icmp6_print(nd, b, off, length, ip_off, fragmented)
    elif nh == 2:
        igmp.igmp_print(nd, b, off, length)
    elif nh == 4:
        ip_print(nd, b, off, length)
    elif nh == 41:
        ip6.ip6_print(nd, b, off, length)
    elif nh == 59 and ver == 6:
        nd.out.append("no next header")
    else:
        nd.out.append(f"{protoname(nd, nh)} {length}")


def ipaddr(b: bytes, off: int) -> bytes:
    """Four address bytes at off, or Truncated."""
    raw = b[off:off + 4]
    if len(raw) < 4:
        raise Truncated
    return bytes(raw)


from . import icmp, icmp6, igmp, ip6, tcp, udp  # noqa: E402  (after ip_demux: ip6 imports it)

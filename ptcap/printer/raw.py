"""Raw IP links (LINKTYPE_RAW, IPV4, IPV6) and PPP framing."""
from __future__ import annotations


def raw_if_print(nd, b: bytes, orig_len: int) -> int:
    if nd.e:
        nd.out.append("ip: ")
    ipn_print(nd, b, 0, orig_len)
    return 0


def ipn_print(nd, b: bytes, off: int, length: int) -> None:
    nd.proto = "ip"
    version = b[off] & 0xF0
    if version == 0x40:
        from .ip import ip_print
        ip_print(nd, b, off, length)
    elif version == 0x60:
        from .ip6 import ip6_print
        ip6_print(nd, b, off, length)
    else:
        nd.out.append(f"unknown ip {version >> 4}")


def ipv4_if_print(nd, b: bytes, orig_len: int) -> int:
    from .ip import ip_print
    ip_print(nd, b, 0, orig_len)
    return 0


def ipv6_if_print(nd, b: bytes, orig_len: int) -> int:
    from .ip6 import ip6_print
    ip6_print(nd, b, 0, orig_len)
    return 0


def ppp_if_print(nd, b: bytes, orig_len: int) -> int:
    nd.proto = "ppp"
    off = 0
    length = orig_len
    if length < 2:
        nd.out.append(" [|ppp]")
        return 0
    head = (b[0] << 8) | b[1]
    if head == 0xFF03:
        off, length = 2, length - 2
    if length < 2:
        nd.out.append(" [|ppp]")
        return 0
    if b[off] % 2:
        proto = b[off]
        off += 1
        length -= 1
    else:
        proto = (b[off] << 8) | b[off + 1]
        off += 2
        length -= 2
    nd.ll_hdr_len = off
    if nd.e:
        name = {0x21: "IP", 0x57: "IPV6", 0x0800: "IP", 0x86DD: "IPV6"}.get(proto, f"unknown ctrl-proto (0x{proto:04x})")
        nd.out.append(f"{name} (0x{proto:04x}), length {orig_len}: ")
    if proto in (0x21, 0x0800):
        from .ip import ip_print
        ip_print(nd, b, off, length)
    elif proto in (0x57, 0x86DD):
        from .ip6 import ip6_print
        ip6_print(nd, b, off, length)
    else:
        from .hexdump import hex_lines
        nd.out.append(f"{'' if nd.e else 'PPP-'}unknown PPP protocol (0x{proto:04x})")
        nd.out.append(hex_lines(b[off:off + length]))
    return off

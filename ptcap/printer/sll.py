"""Linux cooked captures: SLL (v1, 16-byte header) and SLL2 (v2, 20 bytes, with the interface index)."""
from __future__ import annotations

import socket

from .ether import default_print, ethertype_print, type_text

PKTTYPES = {0: "In", 1: "B", 2: "M", 3: "P", 4: "Out"}
_IFNAMES: dict[int, str] = {}


def _ifname(index: int) -> str:
    name = _IFNAMES.get(index)
    if name is None:
        try:
            name = socket.if_indextoname(index)
        except OSError:
            name = "?"
        _IFNAMES[index] = name
    return name


def _proto_text(nd, etype: int) -> str:
    if nd.q:
        return ""
    if etype <= 1500:
        return {1: "802.3", 4: "802.2"}.get(etype, f"ethertype Unknown (0x{etype:04x})")
    return type_text(nd, etype)


def _sll_header(nd, b: bytes, orig_len: int) -> str:
    pkttype = (b[0] << 8) | b[1]
    halen = (b[4] << 8) | b[5]
    etype = (b[14] << 8) | b[15]
    addr = f"{nd.names.etheraddr(b[6:12])} " if halen == 6 else ""
    return f"{PKTTYPES.get(pkttype, '?'):>3} {addr}{_proto_text(nd, etype)}, length {orig_len}: "


def _sll2_header(nd, b: bytes, orig_len: int) -> str:
    ifindex = int.from_bytes(b[4:8], "big")
    halen = b[11]
    etype = (b[0] << 8) | b[1]
    addr = f"{nd.names.etheraddr(b[12:18])} " if halen == 6 else ""
    return f"ifindex {ifindex} {addr}{_proto_text(nd, etype)}, length {orig_len}: "


def _payload(nd, b: bytes, off: int, etype: int, length: int, header) -> None:
    while etype == 0x8100:
        if len(b) - off < 4:
            nd.proto = "vlan"
            nd.out.append(" [|vlan]")
            return
        tag = (b[off] << 8) | b[off + 1]
        if nd.e:
            nd.out.append(f"vlan {tag & 0xFFF}, p {tag >> 13}{', DEI' if tag & 0x1000 else ''}, ")
        etype = (b[off + 2] << 8) | b[off + 3]
        if nd.e:
            nd.out.append(f"{type_text(nd, etype)}, ")
        off += 4
        length -= 4
    if etype <= 1500:
        if etype == 4:
            from .ether import llc_print
            if llc_print(nd, b, off, length):
                return
        elif not nd.e:
            nd.out.append(header())
        default_print(nd, b, off)
        return
    if not ethertype_print(nd, etype, b, off, length):
        if not nd.e:
            nd.out.append(header())
        default_print(nd, b, off)


def sll_if_print(nd, b: bytes, orig_len: int) -> int:
    nd.proto = "sll"
    if len(b) < 16:
        nd.out.append(" [|sll]")
        return len(b)
    nd.ll_hdr_len = 16
    if nd.e:
        nd.out.append(_sll_header(nd, b, orig_len))
    etype = (b[14] << 8) | b[15]
    _payload(nd, b, 16, etype, orig_len - 16, lambda: _sll_header(nd, b, orig_len))
    return 16


def sll2_if_print(nd, b: bytes, orig_len: int) -> int:
    nd.proto = "sll2"
    if len(b) < 20:
        nd.out.append(" [|sll2]")
        return len(b)
    nd.ll_hdr_len = 20
    ifindex = int.from_bytes(b[4:8], "big")
    nd.out.append(f"{_ifname(ifindex):<5} {PKTTYPES.get(b[10], '?'):<3} ")
    if nd.e:
        nd.out.append(_sll2_header(nd, b, orig_len))
    etype = (b[0] << 8) | b[1]
    _payload(nd, b, 20, etype, orig_len - 20, lambda: _sll2_header(nd, b, orig_len))
    return 20

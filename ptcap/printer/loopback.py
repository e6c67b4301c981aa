"""BSD loopback (DLT_NULL, host byte order family) and OpenBSD loopback (DLT_LOOP, network order)."""
from __future__ import annotations

import sys

from .ether import default_print

_AF_NAMES = {2: "IPv4", 24: "IPv6", 28: "IPv6", 30: "IPv6", 7: "OSI", 16: "Appletalk", 23: "IPX"}


def _header(nd, family: int, length: int) -> str:
    if nd.q:
        name = _AF_NAMES.get(family)
        return f"{name if name else f'Unknown AF {family}'}, length {length}: "
    return f"AF {_AF_NAMES.get(family, 'Unknown')} ({family}), length {length}: "


def _print(nd, b: bytes, orig_len: int, family: int) -> int:
    nd.ll_hdr_len = 4
    if nd.e:
        nd.out.append(_header(nd, family, orig_len))
    if family == 2:
        from .ip import ip_print
        ip_print(nd, b, 4, orig_len - 4)
    elif family in (24, 28, 30):
        from .ip6 import ip6_print
        ip6_print(nd, b, 4, orig_len - 4)
    else:
        if not nd.e:
            nd.out.append(_header(nd, family, orig_len))
        default_print(nd, b, 4)
    return 4


def null_if_print(nd, b: bytes, orig_len: int) -> int:
    nd.proto = "null"
    if len(b) < 4:
        nd.out.append(" [|null]")
        return len(b)
    family = int.from_bytes(b[:4], sys.byteorder)
    if family & 0xFFFF0000:
        family = int.from_bytes(b[:4], "big" if sys.byteorder == "little" else "little")
    return _print(nd, b, orig_len, family)


def loop_if_print(nd, b: bytes, orig_len: int) -> int:
    nd.proto = "loop"
    if len(b) < 4:
        nd.out.append(" [|loop]")
        return len(b)
    return _print(nd, b, orig_len, int.from_bytes(b[:4], "big"))

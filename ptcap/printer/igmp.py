"""IGMP (print-igmp.c): queries, reports and leaves."""
from __future__ import annotations


def igmp_print(nd, b: bytes, off: int, length: int) -> None:
    nd.proto = "igmp"
    out = nd.out
    if nd.q:
        out.append("igmp")
        return
    typ = b[off]
    names = nd.names
    if typ == 0x11:
        out.append("igmp query")
        if length >= 12:
            out.append(" v3")
            mrc = b[off + 1]
            group = bytes(b[off + 4:off + 8])
            if len(group) < 4:
                from .truncation import Truncated
                raise Truncated
            if group != b"\0\0\0\0":
                out.append(f" [gaddr {names.ipaddr(group)}")
                nsrcs = (b[off + 10] << 8) | b[off + 11]
                if nsrcs:
                    out.append(f", {nsrcs} source(s)")
                out.append("]")
            return
        mrc = b[off + 1]
        if mrc and mrc != 100:
            out.append(f" v2 [max resp time {mrc}]")
        elif mrc:
            out.append(" v2")
        else:
            out.append(" v1")
        group = bytes(b[off + 4:off + 8])
        if len(group) < 4:
            from .truncation import Truncated
            raise Truncated
        if group != b"\0\0\0\0":
            out.append(f" [gaddr {names.ipaddr(group)}]")
        if length != 8:
            out.append(f" [len {length}]")
    elif typ in (0x12, 0x16):
        out.append(f"igmp v{1 if typ == 0x12 else 2} report {names.ipaddr(_addr(b, off + 4))}")
    elif typ == 0x17:
        out.append(f"igmp leave {names.ipaddr(_addr(b, off + 4))}")
    elif typ == 0x22:
        ngroups = (b[off + 6] << 8) | b[off + 7]
        out.append(f"igmp v3 report, {ngroups} group record(s)")
    else:
        out.append(f"igmp-{typ}")


def _addr(b: bytes, at: int) -> bytes:
    raw = bytes(b[at:at + 4])
    if len(raw) < 4:
        from .truncation import Truncated
        raise Truncated
    return raw

"""The kernel's BTF (/sys/kernel/btf/vmlinux): names of enum values and ids of types.

Only what ptcap needs: `enum skb_drop_reason` names for drop records, and the type id
of a tracepoint's `btf_trace_*` typedef to load a tp_btf program without libbpf.
"""
from __future__ import annotations

import functools
import os
import struct

from ptcap.errors import PtcapError

KIND_ENUM, KIND_TYPEDEF, KIND_ENUM64 = 6, 8, 19
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
# bytes after the 12-byte common part, by kind: a constant, or per member (vlen)
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}


def path() -> str:
    return os.environ.get("PTCAP_BTF", "/sys/kernel/btf/vmlinux")


class Btf:
    """The types of one BTF blob, indexed by (kind, name)."""

    def __init__(self, raw: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(raw)
        if magic != 0xEB9F:
            raise PtcapError("kernel BTF: bad magic")
        self._raw = raw
        self._strings = hdr_len + str_off
        self._where: dict[tuple[int, str], tuple[int, int]] = {}   # (kind, name) -> (type id, offset)
        off, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 1
        unpack = _TYPE.unpack_from
        extra = _EXTRA
        wanted = (KIND_ENUM, KIND_TYPEDEF, KIND_ENUM64)
        while off < end:
            name_off, info, _size = unpack(raw, off)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind in wanted and name_off:
                self._where.setdefault((kind, self._name(name_off)), (tid, off))
            fixed, per = extra.get(kind, (0, 0))
            off += 12 + fixed + per * vlen
            tid += 1

    def _name(self, off: int) -> str:
        start = self._strings + off
        return self._raw[start:self._raw.index(b"\0", start)].decode()

    def type_id(self, kind: int, name: str) -> int | None:
        found = self._where.get((kind, name))
        return found[0] if found else None

    def enum(self, name: str) -> dict[int, str]:
        """value -> name of every member of an enum (empty when the kernel has no such enum)."""
        found = self._where.get((KIND_ENUM, name))
        if found is None:
            return {}
        _tid, off = found
        _n, info, _size = _TYPE.unpack_from(self._raw, off)
        signed = info >> 31
        out = {}
        for i in range(info & 0xFFFF):
            name_off, value = struct.unpack_from("<Ii" if signed else "<II", self._raw, off + 12 + 8 * i)
            out[value] = self._name(name_off)
        return out


@functools.lru_cache(maxsize=1)
def vmlinux() -> Btf:
    try:
        with open(path(), "rb") as f:
            return Btf(f.read())
    except OSError as e:
        raise PtcapError(f"reading kernel BTF {path()}: {e.strerror}") from None


def drop_reasons() -> dict[int, str]:
    """enum skb_drop_reason as the kernel names it, without the SKB_DROP_REASON_ prefix."""
    out = {}
    for value, name in vmlinux().enum("skb_drop_reason").items():
        for prefix in ("SKB_DROP_REASON_", "SKB_"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[value] = name
    return out

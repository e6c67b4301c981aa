"""The kernel's BTF (/sys/kernel/btf/vmlinux) through libbpf's btf__ API: names of enum
values and ids of types.

Only what ptcap needs: `enum skb_drop_reason` names for drop records, the type id of a
tracepoint's `btf_trace_*` typedef (or of a function, for fentry) to load a filter program
for it, and how many arguments a tracepoint has.
"""
from __future__ import annotations

import ctypes
import functools
import os

from ptcap.errors import PtcapError
from ptcap.kernel.libbpf import _lib

KIND_PTR, KIND_ENUM, KIND_TYPEDEF, KIND_FUNC, KIND_FUNC_PROTO, KIND_ENUM64 = 2, 6, 8, 12, 13, 19


class _Type(ctypes.Structure):         # struct btf_type: name_off, info, size or type
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_type", ctypes.c_uint32)]


class _Enum(ctypes.Structure):         # struct btf_enum
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _Enum64(ctypes.Structure):       # struct btf_enum64
    _fields_ = [("name_off", ctypes.c_uint32), ("lo", ctypes.c_uint32), ("hi", ctypes.c_uint32)]


for _name, _res, _args in (
    ("btf__parse", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]),
    ("btf__free", None, [ctypes.c_void_p]),
    ("btf__find_by_name_kind", ctypes.c_int32, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]),
    ("btf__type_by_id", ctypes.POINTER(_Type), [ctypes.c_void_p, ctypes.c_uint32]),
    ("btf__name_by_offset", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_uint32]),
):
    getattr(_lib, _name).restype = _res
    getattr(_lib, _name).argtypes = _args


def path() -> str:
    return os.environ.get("PTCAP_BTF", "/sys/kernel/btf/vmlinux")


class Btf:
    """One BTF blob parsed by libbpf (freed with the object)."""

    def __init__(self, file: str) -> None:
        self._ptr = _lib.btf__parse(file.encode(), None)
        if not self._ptr:
            err = ctypes.get_errno() or 1
            raise PtcapError(f"reading kernel BTF {file}: {os.strerror(err)}")

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            _lib.btf__free(self._ptr)
            self._ptr = None

    def type_id(self, kind: int, name: str) -> int | None:
        found = _lib.btf__find_by_name_kind(self._ptr, name.encode(), kind)
        return found if found > 0 else None

    def _type(self, tid: int) -> _Type:
        return _lib.btf__type_by_id(self._ptr, tid).contents

    def _name(self, off: int) -> str:
        return (_lib.btf__name_by_offset(self._ptr, off) or b"").decode()

    def enum(self, name: str) -> dict[int, str]:
        """value -> name of every member of an enum (empty when the kernel has no such enum)."""
        for kind, member in ((KIND_ENUM, _Enum), (KIND_ENUM64, _Enum64)):
            tid = self.type_id(kind, name)
            if tid is None:
                continue
            t = self._type(tid)
            vlen = t.info & 0xFFFF
            members = ctypes.cast(ctypes.addressof(t) + ctypes.sizeof(_Type), ctypes.POINTER(member))
            out = {}
            for i in range(vlen):
                m = members[i]
                value = m.val if kind == KIND_ENUM else (m.hi << 32) | m.lo
                out[value] = self._name(m.name_off)
            return out
        return {}

    def tracepoint_args(self, name: str) -> int | None:
        """How many arguments the tracepoint passes (its btf_trace_ typedef's prototype,
        less the leading context pointer); None if the kernel has no such tracepoint."""
        tid = self.type_id(KIND_TYPEDEF, f"btf_trace_{name}")
        if tid is None:
            return None
        ptr = self._type(self._type(tid).size_type)          # typedef -> pointer
        proto = self._type(ptr.size_type)                      # pointer -> func proto
        if (proto.info >> 24) & 0x1F != KIND_FUNC_PROTO:
            return None
        return (proto.info & 0xFFFF) - 1


@functools.lru_cache(maxsize=1)
def vmlinux() -> Btf:
    return Btf(path())


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

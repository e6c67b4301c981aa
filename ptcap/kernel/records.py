"""The contract with the BPF programs: every record, offset and enum of bpf/ptcap.h, once.

Each layout below names its C struct and lists its fields in order; the struct formats,
sizes and offsets every other module uses come from here. `check_objects()` compares them
with the BTF clang wrote into the built objects (bpf/records.bpf.c keeps every type of
ptcap.h in its object's BTF; the other objects are checked for the types they use), so a
header changed on one side only is one clear error at load, not misread packets.
"""
from __future__ import annotations

import ctypes
import enum
import functools
import struct
from pathlib import Path

from ptcap.errors import PtcapError


class Layout:
    """A C struct as struct-module fields: (name, format) in declaration order. Padding the
    C side names is a named 'x' field (its offset is checked; pack and unpack skip it)."""

    def __init__(self, c_name: str, *fields: tuple[str, str]) -> None:
        self.c_name = c_name
        self.fields = fields
        self.struct = struct.Struct("<" + "".join(fmt for _, fmt in fields))
        self.size = self.struct.size
        self.offset: dict[str, int] = {}
        self.field_size: dict[str, int] = {}
        at = 0
        for name, fmt in fields:
            size = struct.calcsize("<" + fmt)
            if name:
                self.offset[name], self.field_size[name] = at, size
            at += size

    def __repr__(self) -> str:
        return f"Layout(struct {self.c_name}, {self.size} bytes)"


COMM_LEN = 16
FILENAME_LEN = 256
ARGS_LEN = 1024
SCRATCH_SIZE = 32768        # the largest per-CPU map value
SCRATCH_HDR = 128

OWNER = Layout("ptcap_owner",
               ("pid", "I"), ("tid", "I"), ("uid", "I"), ("gid", "I"), ("start_ns", "Q"),
               ("cgroup_id", "Q"), ("mntns", "I"), ("ppid", "I"),
               ("comm", f"{COMM_LEN}s"), ("pcomm", f"{COMM_LEN}s"))
PACKET = Layout("ptcap_packet",
                ("ifindex", "I"), ("kind", "H"), ("hook", "B"), ("dir", "B"),
                ("owner", f"{OWNER.size}s"), ("location", "Q"), ("reason", "I"),
                ("marks", "I"), ("peer", f"{OWNER.size}s"), ("_pad", "4x"),
                ("iface_id", "I"), ("ts_hi", "I"), ("ts_lo", "I"), ("caplen", "I"), ("len", "I"))
EXEC = Layout("ptcap_exec",
              ("pid", "I"), ("kind", "H"), ("_pad", "2x"), ("ppid", "I"), ("args_len", "I"),
              ("start_ns", "Q"), ("filename", f"{FILENAME_LEN}s"), ("args", f"{ARGS_LEN}s"))
FORK = Layout("ptcap_fork",
              ("pid", "I"), ("kind", "H"), ("_pad", "2x"), ("ppid", "I"), ("_pad2", "4x"),
              ("start_ns", "Q"))
SCRATCH = Layout("ptcap_scratch",
                 ("location", "Q"), ("reason", "I"), ("len", "I"), ("avail", "I"), ("snap", "I"),
                 ("ifindex", "I"), ("raw", "B"), ("dir", "B"), ("_pad", "2x"),
                 ("owner", f"{OWNER.size}s"), ("_pad2", "24x"),
                 ("data", f"{SCRATCH_SIZE - SCRATCH_HDR}s"))


class Hook(enum.IntEnum):
    """enum ptcap_hook: kernel hook points, in the order of their prog arrays."""

    KFREE_SKB = 0
    CONSUME_SKB = 1
    NET_DEV_QUEUE = 2
    NET_DEV_START_XMIT = 3
    NETIF_RECEIVE_SKB = 4
    TCP_RETRANSMIT_SKB = 5
    TCP_SEND_RESET = 6
    DEV_DIRECT_XMIT = 7     # fentry on __dev_direct_xmit (kernels with BPF trampolines)
    MAX = 8


HOOK_CONFIG = Layout("ptcap_hook_config",
                     ("clock_offset", "q"), ("rate", "I"), ("backtrace", "I"),
                     ("iface_id", f"{Hook.MAX}I"))
IFACE_KEY = Layout("ptcap_iface_key", ("netns_cookie", "Q"), ("ifindex", "I"), ("_pad", "4x"))
IFACE = Layout("ptcap_iface", ("iface_id", "I"), ("flags", "I"))
CONFIG = Layout("ptcap_config", ("clock_offset", "q"), ("who", "I"), ("peer_selects", "I"))
RING_CONFIG = Layout("ptcap_ring_config", ("packet_limit", "Q"), ("wake_shift", "Q"))

# container admission at cgroup_mkdir (bpf/cgroups.bpf.c)
CONTAINER_ID_LEN = 76       # PTCAP_CONTAINER_ID_LEN: containerd allows ids of 76 characters
CGROUP_NAME_LEN = 128
CGROUP_NAME = Layout("ptcap_cgroup_name", ("name", f"{CGROUP_NAME_LEN}s"))
CGROUP_DIR = Layout("ptcap_cgroup_dir", ("parent_id", "Q"), ("name", f"{CGROUP_NAME.size}s"))
CGROUP_WANT = Layout("ptcap_cgroup_want", ("len", "I"), ("id", "80s"))

LAYOUTS = (OWNER, PACKET, EXEC, FORK, SCRATCH, HOOK_CONFIG, IFACE_KEY, IFACE, CONFIG, RING_CONFIG,
           CGROUP_NAME, CGROUP_DIR, CGROUP_WANT)


class EventKind(enum.IntEnum):
    """enum ptcap_event_kind: every record has its kind at byte 4."""

    PACKET = 1
    EXEC = 2
    FORK = 3
    EXIT = 4


class Direction(enum.IntEnum):
    """enum ptcap_dir, numbered as pcapng's epb_flags inbound/outbound bits."""

    UNKNOWN = 0         # user space only: a packet read from a file that does not say
    IN = 1
    OUT = 2


class HookSlot(enum.IntEnum):
    """enum ptcap_hook_slot: where the filters and the emit program sit in a hook's prog array."""

    FILTER_ETHER = 0
    FILTER_RAW = 1
    EMIT = 2
    MAX = 3


class Who(enum.IntFlag):
    """enum ptcap_who_bits: which process selectors are active."""

    PIDS = 1
    COMMS = 2
    UIDS = 4
    MNTNS = 8
    FOLLOW = 16


class Counter(enum.IntEnum):
    """enum ptcap_counter: the per-CPU counters' slots."""

    RECEIVED = 0
    DROPPED = 1
    RATE_LIMITED = 2
    PROC_LOST = 3       # process events the ring had no room for
    MAX = 4


class LinkType(enum.IntEnum):
    """The link-layer header types (LINKTYPE_*) of the packets ptcap captures, writes, reads."""

    NULL = 0
    ETHERNET = 1
    RAW = 101
    LOOP = 108
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


# C enum → (Python enum, prefix of its enumerators, members only user space has)
ENUMS: dict[str, tuple[type[enum.IntEnum] | type[enum.IntFlag], str, frozenset[str]]] = {
    "ptcap_event_kind": (EventKind, "PTCAP_EV_", frozenset()),
    "ptcap_dir": (Direction, "PTCAP_DIR_", frozenset({"UNKNOWN"})),
    "ptcap_hook": (Hook, "PTCAP_HOOK_", frozenset()),
    "ptcap_hook_slot": (HookSlot, "PTCAP_SLOT_", frozenset()),
    "ptcap_who_bits": (Who, "PTCAP_WHO_", frozenset()),
    "ptcap_counter": (Counter, "PTCAP_CNT_", frozenset()),
}

# Offsets the hot paths use, derived from the layouts above.
KIND_AT = PACKET.offset["kind"]
DIR_AT = PACKET.offset["dir"]
KEY_AT = PACKET.offset["owner"]                       # owner, location, reason, marks, peer: a packet's key
KEY_END = PACKET.offset["iface_id"]
OWNER_LEN = OWNER.size
EPB_AT = PACKET.offset["iface_id"]                    # from here on: a pcapng EPB body
CAPLEN_AT = PACKET.offset["caplen"]
HEADER_LEN = PACKET.size


# --- the check against the objects' BTF ---------------------------------------------------

_KIND_INT, _KIND_PTR, _KIND_ARRAY, _KIND_STRUCT, _KIND_UNION, _KIND_ENUM = 1, 2, 3, 4, 5, 6
_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT, _KIND_TYPE_TAG = 8, 9, 10, 11, 18
_KIND_ENUM64 = 19


@functools.cache
def _libbpf() -> ctypes.CDLL:
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    p = ctypes.c_void_p
    for name, res, args in (("btf__parse_elf", p, [ctypes.c_char_p, p]), ("btf__free", None, [p]),
                            ("btf__type_cnt", ctypes.c_uint32, [p]),
                            ("btf__type_by_id", p, [p, ctypes.c_uint32]),
                            ("btf__name_by_offset", ctypes.c_char_p, [p, ctypes.c_uint32])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


class ObjectTypes:
    """The structs and enums of one object file's BTF that this module declares, read with
    libbpf's btf__ API: struct name → (size, {member: (offset, size)}), enum name →
    {enumerator: value}. (The kernel's own types, thousands in an object, are skipped by name:
    decoding them all cost 180 ms at every start.)"""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._wanted = {layout.c_name for layout in LAYOUTS} | ENUMS.keys()
        self.structs: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {}
        self.enums: dict[str, dict[str, int]] = {}
        lib = _libbpf()
        btf = lib.btf__parse_elf(self.path.encode(), None)
        if not btf:
            err = ctypes.get_errno()
            raise PtcapError(f"{self.path}: no BTF in the object ({_strerror(err)}); rebuild with make -C bpf")
        try:
            self._read(lib, btf)
        finally:
            lib.btf__free(btf)

    def _read(self, lib: ctypes.CDLL, btf: int) -> None:
        def u32s(addr: int, n: int) -> tuple[int, ...]:
            return struct.unpack(f"<{n}I", ctypes.string_at(addr, 4 * n))

        def name(off: int) -> str:
            return (lib.btf__name_by_offset(btf, off) or b"").decode()

        def size_of(tid: int) -> int:
            for _ in range(32):
                t = lib.btf__type_by_id(btf, tid)
                _name_off, info, size_or_type = u32s(t, 3)
                kind = (info >> 24) & 0x1F
                if kind in (_KIND_INT, _KIND_STRUCT, _KIND_UNION, _KIND_ENUM, _KIND_ENUM64):
                    return size_or_type
                if kind == _KIND_PTR:
                    return 8
                if kind == _KIND_ARRAY:
                    elem, _index, nelems = u32s(t + 12, 3)
                    return size_of(elem) * nelems
                if kind in (_KIND_TYPEDEF, _KIND_VOLATILE, _KIND_CONST, _KIND_RESTRICT, _KIND_TYPE_TAG):
                    tid = size_or_type
                    continue
                return 0
            return 0

        for tid in range(1, lib.btf__type_cnt(btf)):
            t = lib.btf__type_by_id(btf, tid)
            name_off, info, size = u32s(t, 3)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            if not name_off or kind not in (_KIND_STRUCT, _KIND_ENUM, _KIND_ENUM64):
                continue
            if name(name_off) not in self._wanted:
                continue
            if kind == _KIND_STRUCT:
                members = {}
                for i in range(vlen):
                    m_name, m_type, m_off = u32s(t + 12 + 12 * i, 3)
                    bits = m_off & 0xFFFFFF if kflag else m_off
                    members[name(m_name)] = (bits // 8, size_of(m_type))
                self.structs.setdefault(name(name_off), (size, members))
            elif kind in (_KIND_ENUM, _KIND_ENUM64):
                step = 8 if kind == _KIND_ENUM else 12
                values = {}
                for i in range(vlen):
                    e = u32s(t + 12 + step * i, step // 4)
                    value = e[1] if kind == _KIND_ENUM else e[1] | (e[2] << 32)
                    values[name(e[0])] = value
                self.enums.setdefault(name(name_off), values)


def _strerror(err: int) -> str:
    import os
    return os.strerror(err) if err else "unknown error"


def mismatches(types: ObjectTypes) -> list[str]:
    """Every way the object's BTF disagrees with the layouts and enums above (types the
    object does not hold are not compared)."""
    out = []
    for layout in LAYOUTS:
        found = types.structs.get(layout.c_name)
        if found is None:
            continue
        size, members = found
        where = f"struct {layout.c_name}"
        if size != layout.size:
            out.append(f"{where} is {size} bytes in the object, {layout.size} in ptcap/kernel/records.py")
        for field, (offset, fsize) in members.items():
            if field not in layout.offset:
                out.append(f"{where}.{field} (offset {offset}) is not in ptcap/kernel/records.py")
            elif (offset, fsize) != (layout.offset[field], layout.field_size[field]):
                out.append(f"{where}.{field} is at {offset}, {fsize} bytes in the object; at "
                           f"{layout.offset[field]}, {layout.field_size[field]} bytes in ptcap/kernel/records.py")
        for field in layout.offset.keys() - members.keys():
            out.append(f"{where}.{field} is in ptcap/kernel/records.py, not in the object")
    for c_name, (py_enum, prefix, own) in ENUMS.items():
        values = types.enums.get(c_name)
        if values is None:
            continue
        theirs = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in values.items()}
        ours = {m.name: int(m.value) for m in py_enum if m.name not in own}
        for key in sorted(theirs.keys() | ours.keys()):
            if theirs.get(key) != ours.get(key):
                out.append(f"enum {c_name}: {prefix}{key} is {theirs.get(key, 'missing')} in the object, "
                           f"{ours.get(key, 'missing')} in ptcap/kernel/records.py")
    return out


def check_object(path: str | Path) -> ObjectTypes:
    """Raise PtcapError naming every difference between an object and this module."""
    types = ObjectTypes(path)
    wrong = mismatches(types)
    if wrong:
        raise PtcapError(f"{path}: the kernel records do not match user space ({'; '.join(wrong)}): "
                         "bpf/ptcap.h and ptcap/kernel/records.py must change together; rebuild with make -C bpf")
    return types


_checked: set[str] = set()


def check_objects(directory: str | Path, names: tuple[str, ...] = ("records", "capture", "hooks", "procs",
                                                                     "sockowner")) -> None:
    """At load: every built object of `directory` that exists, once per process; records.bpf.o
    (which holds every type of ptcap.h) must exist."""
    directory = Path(directory)
    for name in names:
        path = directory / f"{name}.bpf.o"
        if str(path) in _checked:
            continue
        if not path.exists():
            if name == "records":
                raise PtcapError(f"{path}: missing; rebuild with make -C bpf")
            continue
        types = check_object(path)
        if name == "records":
            absent = ([f"struct {l.c_name}" for l in LAYOUTS if l.c_name not in types.structs]
                      + [f"enum {e}" for e in ENUMS if e not in types.enums])
            if absent:
                raise PtcapError(f"{path}: its BTF lacks {', '.join(absent)} (bpf/records.bpf.c keeps "
                                 "every type of ptcap.h)")
        _checked.add(str(path))

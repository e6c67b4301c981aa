"""The bpf(2) system call: programs, maps, links and test runs, straight from Python.

libbpf (ptcap.libbpf) loads the clang-built CO-RE objects; this module covers what
libbpf 1.1 cannot do for us: programs assembled at run time (the translated pcap
filter), TCX links (BPF_LINK_CREATE with BPF_TCX_INGRESS/EGRESS), test runs.
"""
from __future__ import annotations

import ctypes
import enum
import errno
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_SYS_BPF = 321  # x86_64


class Cmd(enum.IntEnum):
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_TEST_RUN = 10
    OBJ_GET_INFO_BY_FD = 15
    LINK_CREATE = 28
    LINK_DETACH = 34


class ProgType(enum.IntEnum):
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    RAW_TRACEPOINT = 17
    TRACING = 26


class MapType(enum.IntEnum):
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    RINGBUF = 27


class AttachType(enum.IntEnum):
    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_INET_SOCK_RELEASE = 34
    TRACE_RAW_TP = 23
    TCX_INGRESS = 46
    TCX_EGRESS = 47


class BPFError(OSError):
    """A bpf(2) call failed; carries the verifier log for program loads."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        self.log = log
        message = f"{what}: {os.strerror(err)}"
        if log:
            message += "\n" + log
        super().__init__(err, message)

    def __str__(self) -> str:
        return self.args[1]


def _buf(data: bytes) -> tuple[ctypes.Array, int]:
    b = ctypes.create_string_buffer(data, len(data))
    return b, ctypes.addressof(b)


def sys_bpf(cmd: int, attr: ctypes.Array) -> int:
    """Run bpf(cmd, attr); return the result or raise OSError with errno."""
    ret = _libc.syscall(_SYS_BPF, ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _attr(fmt: str, *values, size: int = 128) -> ctypes.Array:
    raw = struct.pack(fmt, *values)
    return ctypes.create_string_buffer(raw + bytes(size - len(raw)), size)


def prog_load(prog_type: int, insns: bytes, *, name: str = "", license: str = "GPL",
              expected_attach_type: int = 0, attach_btf_id: int = 0, log_size: int = 1 << 20) -> int:
    """Load an eBPF program; on failure the BPFError carries the verifier's log.
    A tp_btf program (TRACING, BPF_TRACE_RAW_TP) names its tracepoint by attach_btf_id,
    the kernel BTF id of the tracepoint's btf_trace_* typedef."""
    code, code_addr = _buf(insns)
    lic, lic_addr = _buf(license.encode() + b"\0")
    name_b = name.encode()[:15].ljust(16, b"\0")
    log = ctypes.create_string_buffer(log_size)
    for level, (lbuf, lsize) in ((0, (0, 0)), (1, (ctypes.addressof(log), log_size))):
        attr = _attr("=IIQQIIQII16sIIIIQIIQII", prog_type, len(insns) // 8, code_addr, lic_addr,
                     level, lsize, lbuf, 0, 0, name_b, 0, expected_attach_type,
                     0, 0, 0, 0, 0, 0, 0, attach_btf_id)
        try:
            return sys_bpf(Cmd.PROG_LOAD, attr)
        except OSError as e:
            if level == 1 or e.errno not in (errno.EACCES, errno.EINVAL, errno.E2BIG, errno.ENOSPC):
                text = log.value.decode(errors="replace").strip() if level else ""
                raise BPFError(e.errno, f"loading BPF program {name or '?'}", _tail(text)) from None
    raise AssertionError("unreachable")


def _tail(log: str, lines: int = 20) -> str:
    parts = log.splitlines()
    return "\n".join(parts[-lines:])


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               *, flags: int = 0, name: str = "") -> int:
    attr = _attr("=IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:15].ljust(16, b"\0"))
    try:
        return sys_bpf(Cmd.MAP_CREATE, attr)
    except OSError as e:
        raise BPFError(e.errno, f"creating BPF map {name or '?'}") from None


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    kb, ka = _buf(key)
    vb, va = _buf(value)
    try:
        sys_bpf(Cmd.MAP_UPDATE_ELEM, _attr("=IIQQQ", fd, 0, ka, va, flags))
    except OSError as e:
        raise BPFError(e.errno, "updating BPF map") from None


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    kb, ka = _buf(key)
    vb = ctypes.create_string_buffer(value_size)
    try:
        sys_bpf(Cmd.MAP_LOOKUP_ELEM, _attr("=IIQQQ", fd, 0, ka, ctypes.addressof(vb), 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise BPFError(e.errno, "reading BPF map") from None
    return vb.raw


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash-like map (BPF_MAP_GET_NEXT_KEY from the start)."""
    keys: list[bytes] = []
    nb = ctypes.create_string_buffer(key_size)
    prev = None
    while True:
        kb, ka = _buf(prev) if prev is not None else (None, 0)
        try:
            sys_bpf(Cmd.MAP_GET_NEXT_KEY, _attr("=IIQQ", fd, 0, ka, ctypes.addressof(nb)))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return keys
            raise BPFError(e.errno, "walking BPF map") from None
        prev = nb.raw
        keys.append(prev)


def map_delete(fd: int, key: bytes) -> bool:
    kb, ka = _buf(key)
    try:
        sys_bpf(Cmd.MAP_DELETE_ELEM, _attr("=IIQQQ", fd, 0, ka, 0, 0))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise BPFError(e.errno, "deleting from BPF map") from None
    return True


def prog_test_run(fd: int, data: bytes, *, repeat: int = 1, ctx: bytes | None = None,
                  data_out_size: int | None = None) -> tuple[int, bytes]:
    """Run a loaded program on one packet (BPF_PROG_TEST_RUN); return (retval, data out)."""
    db, da = _buf(data)
    out_size = len(data) + 256 if data_out_size is None else data_out_size
    ob = ctypes.create_string_buffer(max(out_size, 1))
    cb, ca = _buf(ctx) if ctx else (None, 0)
    attr = _attr("=IIIIQQIIIIQQ", fd, 0, len(data), out_size, da, ctypes.addressof(ob),
                 repeat, 0, len(ctx) if ctx else 0, 0, ca, 0)
    try:
        sys_bpf(Cmd.PROG_TEST_RUN, attr)
    except OSError as e:
        raise BPFError(e.errno, "test-running BPF program") from None
    retval, size_out = struct.unpack_from("=I4xI", attr.raw, 4)
    return retval, ob.raw[:size_out]


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE: target is an ifindex for TCX, a cgroup fd for cgroup hooks."""
    try:
        return sys_bpf(Cmd.LINK_CREATE, _attr("=IIII", prog_fd, target, attach_type, flags))
    except OSError as e:
        raise BPFError(e.errno, f"attaching BPF program (attach type {attach_type})") from None



"""bpf(2) through libbpf's low-level calls: programs, maps, links and test runs.

libbpf (ptcap.kernel.libbpf) loads the clang-built CO-RE objects; this module covers the
objects ptcap makes at run time: programs assembled from the pcap filter (bpf_prog_load),
their maps, TCX and cgroup links (bpf_link_create: libbpf 1.1 passes BPF_TCX_INGRESS and
BPF_TCX_EGRESS through), test runs. No syscall numbers or attribute layouts of our own:
libbpf knows the architecture's.
"""
from __future__ import annotations

import ctypes
import enum
import errno
import functools
import os

from ptcap.kernel.libbpf import _lib

_p, _u32, _int = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int


class _ProgLoadOpts(ctypes.Structure):      # struct bpf_prog_load_opts (libbpf 1.1)
    _fields_ = [("sz", ctypes.c_size_t), ("attempts", _int), ("expected_attach_type", _int),
                ("prog_btf_fd", _u32), ("prog_flags", _u32), ("prog_ifindex", _u32),
                ("kern_version", _u32), ("attach_btf_id", _u32), ("attach_prog_fd", _u32),
                ("attach_btf_obj_fd", _u32), ("fd_array", _p), ("func_info", _p),
                ("func_info_cnt", _u32), ("func_info_rec_size", _u32), ("line_info", _p),
                ("line_info_cnt", _u32), ("line_info_rec_size", _u32), ("log_level", _u32),
                ("log_size", _u32), ("log_buf", _p)]


class _MapCreateOpts(ctypes.Structure):     # struct bpf_map_create_opts
    _fields_ = [("sz", ctypes.c_size_t), ("btf_fd", _u32), ("btf_key_type_id", _u32),
                ("btf_value_type_id", _u32), ("btf_vmlinux_value_type_id", _u32),
                ("inner_map_fd", _u32), ("map_flags", _u32), ("map_extra", ctypes.c_uint64),
                ("numa_node", _u32), ("map_ifindex", _u32)]


class _TestRunOpts(ctypes.Structure):       # struct bpf_test_run_opts
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", _p), ("data_out", _p), ("data_size_in", _u32),
                ("data_size_out", _u32), ("ctx_in", _p), ("ctx_out", _p), ("ctx_size_in", _u32),
                ("ctx_size_out", _u32), ("retval", _u32), ("repeat", _int), ("duration", _u32),
                ("flags", _u32), ("cpu", _u32), ("batch_size", _u32)]


for _name, _args in (
    ("bpf_prog_load", [_int, ctypes.c_char_p, ctypes.c_char_p, _p, ctypes.c_size_t,
                       ctypes.POINTER(_ProgLoadOpts)]),
    ("bpf_map_create", [_int, ctypes.c_char_p, _u32, _u32, _u32, ctypes.POINTER(_MapCreateOpts)]),
    ("bpf_map_update_elem", [_int, _p, _p, ctypes.c_uint64]),
    ("bpf_map_lookup_elem", [_int, _p, _p]),
    ("bpf_map_delete_elem", [_int, _p]),
    ("bpf_map_get_next_key", [_int, _p, _p]),
    ("bpf_prog_test_run_opts", [_int, ctypes.POINTER(_TestRunOpts)]),
    ("bpf_link_create", [_int, _int, _int, _p]),
    ("bpf_link_update", [_int, _int, _p]),
    ("bpf_prog_query", [_int, _int, _u32, ctypes.POINTER(_u32), _p, ctypes.POINTER(_u32)]),
):
    getattr(_lib, _name).argtypes = _args
    getattr(_lib, _name).restype = _int


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
    TRACE_FENTRY = 24
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


def _buf(data: bytes) -> ctypes.Array:
    return ctypes.create_string_buffer(data, len(data))


def prog_load(prog_type: int, insns: bytes, *, name: str = "", license: str = "GPL",
              expected_attach_type: int = 0, attach_btf_id: int = 0, log_size: int = 1 << 20) -> int:
    """Load an eBPF program; on failure the BPFError carries the verifier's log.
    A tp_btf program (TRACING, BPF_TRACE_RAW_TP) names its tracepoint by attach_btf_id,
    the kernel BTF id of the tracepoint's btf_trace_* typedef."""
    code = _buf(insns)
    log = ctypes.create_string_buffer(log_size)
    for level in (0, 1):
        opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=expected_attach_type,
                             attach_btf_id=attach_btf_id)
        if level:
            opts.log_level, opts.log_size, opts.log_buf = 1, log_size, ctypes.addressof(log)
        ret = _lib.bpf_prog_load(prog_type, name.encode()[:15] or None, license.encode(), code,
                                 len(insns) // 8, ctypes.byref(opts))
        if ret >= 0:
            return ret
        err = -ret
        if level == 1 or err not in (errno.EACCES, errno.EINVAL, errno.E2BIG, errno.ENOSPC):
            text = log.value.decode(errors="replace").strip() if level else ""
            raise BPFError(err, f"loading BPF program {name or '?'} failed on Linux {os.uname().release}",
                           _tail(text))
    raise AssertionError("unreachable")


@functools.cache
def has_may_goto() -> bool:
    """Does the verifier know may_goto (Linux 6.9+)? Asked once per process with a program of
    four instructions; any refusal (6.1 says "unknown opcode e5") means no: the filter
    translator then bounds its loops without it, which every kernel accepts."""
    probe = bytes.fromhex("b700000000000000" "e500010000000000" "b700000001000000" "9500000000000000")
    try:
        os.close(prog_load(ProgType.SOCKET_FILTER, probe, name="ptcap_may_goto"))
    except BPFError:
        return False
    return True


def _tail(log: str, lines: int = 20) -> str:
    parts = log.splitlines()
    return "\n".join(parts[-lines:])


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               *, flags: int = 0, name: str = "") -> int:
    opts = _MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), map_flags=flags)
    ret = _lib.bpf_map_create(map_type, name.encode()[:15] or None, key_size, value_size,
                              max_entries, ctypes.byref(opts))
    if ret < 0:
        raise BPFError(-ret, f"creating BPF map {name or '?'}")
    return ret


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    ret = _lib.bpf_map_update_elem(fd, _buf(key), _buf(value), flags)
    if ret < 0:
        raise BPFError(-ret, "updating BPF map")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    vb = ctypes.create_string_buffer(value_size)
    return vb.raw if map_lookup_into(fd, _buf(key), vb) else None


def map_lookup_into(fd: int, key: ctypes.Array, value: ctypes.Array) -> bool:
    """map_lookup into buffers the caller keeps (a value read many times a second); False
    when the key is not there."""
    ret = _lib.bpf_map_lookup_elem(fd, key, value)
    if ret == -errno.ENOENT:
        return False
    if ret < 0:
        raise BPFError(-ret, "reading BPF map")
    return True


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash-like map (BPF_MAP_GET_NEXT_KEY from the start)."""
    keys: list[bytes] = []
    nb = ctypes.create_string_buffer(key_size)
    prev = None
    while True:
        ret = _lib.bpf_map_get_next_key(fd, _buf(prev) if prev is not None else None, nb)
        if ret == -errno.ENOENT:
            return keys
        if ret < 0:
            raise BPFError(-ret, "walking BPF map")
        prev = nb.raw
        keys.append(prev)


def map_delete(fd: int, key: bytes) -> bool:
    ret = _lib.bpf_map_delete_elem(fd, _buf(key))
    if ret == -errno.ENOENT:
        return False
    if ret < 0:
        raise BPFError(-ret, "deleting from BPF map")
    return True


def prog_test_run(fd: int, data: bytes, *, repeat: int = 1, ctx: bytes | None = None,
                  data_out_size: int | None = None) -> tuple[int, bytes]:
    """Run a loaded program on one packet (BPF_PROG_TEST_RUN); return (retval, data out).
    Empty data runs a program that takes none (raw_tp, tp_btf)."""
    out_size = (len(data) + 256 if data else 0) if data_out_size is None else data_out_size
    db = _buf(data) if data else None
    ob = ctypes.create_string_buffer(max(out_size, 1))
    cb = _buf(ctx) if ctx else None
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_size_in=len(data),
                        data_size_out=out_size, repeat=repeat if data else 0,
                        ctx_size_in=len(ctx) if ctx else 0)
    opts.data_in = ctypes.addressof(db) if db is not None else None
    opts.data_out = ctypes.addressof(ob) if out_size else None
    opts.ctx_in = ctypes.addressof(cb) if cb is not None else None
    ret = _lib.bpf_prog_test_run_opts(fd, ctypes.byref(opts))
    if ret < 0:
        raise BPFError(-ret, "test-running BPF program")
    return opts.retval, ob.raw[:opts.data_size_out]


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE: target is an ifindex for TCX, a cgroup fd for cgroup hooks."""
    if flags:
        raise ValueError("link flags are not used")
    ret = _lib.bpf_link_create(prog_fd, target, attach_type, None)
    if ret < 0:
        raise BPFError(-ret, f"attaching BPF program (attach type {attach_type})")
    return ret


def link_update(link_fd: int, prog_fd: int) -> None:
    """BPF_LINK_UPDATE: the link runs `prog_fd` from now on (atomically: no packet is missed
    or seen twice)."""
    ret = _lib.bpf_link_update(link_fd, prog_fd, None)
    if ret < 0:
        raise BPFError(-ret, "replacing a linked BPF program")


def attached(target: int, attach_type: int) -> list[int]:
    """Ids of the programs attached to a target (an ifindex for TCX, a cgroup fd)."""
    ids = (_u32 * 64)()
    count, flags = _u32(64), _u32(0)
    ret = _lib.bpf_prog_query(target, attach_type, 0, ctypes.byref(flags), ids, ctypes.byref(count))
    if ret < 0:
        raise BPFError(-ret, f"querying attach type {attach_type}")
    return list(ids[:count.value])

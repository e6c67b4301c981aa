"""Attaching a tc program to an interface: a TCX link where the kernel has TCX (6.6 on),
else a cls_bpf filter on a clsact qdisc made through netlink (libbpf's bpf_tc_* calls).

A TCX link is held by a file descriptor: when ptcap dies, even by SIGKILL, the kernel
drops it. A netlink filter outlives its maker, so a watchdog makes and removes them: a
small child process (ptcap.kernel.tcwatch) in its own session, connected by a socket,
that adds each filter (and the clsact qdisc when there is none) as ptcap asks. It knows
everything it made the moment it made it: when ptcap ends in any way, even killed half-way
through an attachment, the socket closes and the watchdog removes what is still there,
then exits.

PTCAP_TC_ATTACH=netlink takes the netlink path on a kernel that has TCX too (tests use it).
"""
from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import functools
import os
import socket
import struct
import subprocess
import sys

from ptcap.errors import PtcapError
from ptcap.kernel import bpf, libbpf

TC_INGRESS, TC_EGRESS = 1, 2          # enum bpf_tc_attach_point
_RTM_NEWTFILTER, _RTM_GETTFILTER = 44, 46
_TC_H_CLSACT = 0xFFFFFFF1
_PARENT = {TC_INGRESS: 0xFFFFFFF2, TC_EGRESS: 0xFFFFFFF3}


class _Hook(ctypes.Structure):         # struct bpf_tc_hook (libbpf 1.1)
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", ctypes.c_uint32)]


class _Opts(ctypes.Structure):         # struct bpf_tc_opts (libbpf 1.1)
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32),
                ("priority", ctypes.c_uint32)]


_lib = libbpf._lib
for _name in ("bpf_tc_hook_create", "bpf_tc_hook_destroy"):
    getattr(_lib, _name).argtypes = [ctypes.POINTER(_Hook)]
    getattr(_lib, _name).restype = ctypes.c_int
for _name in ("bpf_tc_attach", "bpf_tc_detach"):
    getattr(_lib, _name).argtypes = [ctypes.POINTER(_Hook), ctypes.POINTER(_Opts)]
    getattr(_lib, _name).restype = ctypes.c_int


def _hook(ifindex: int, point: int) -> _Hook:
    return _Hook(ctypes.sizeof(_Hook), ifindex, point, 0)


@functools.lru_cache(maxsize=1)
def has_tcx() -> bool:
    """Does this kernel have TCX links? Asked with a link to no device: a kernel with TCX
    says there is no such device, one without does not know the attach type."""
    prog = bpf.prog_load(bpf.ProgType.SCHED_CLS, bytes.fromhex("b7000000ffffffff9500000000000000"),
                         name="ptcap_tcx_probe")
    try:
        bpf.link_create(prog, 0, bpf.AttachType.TCX_INGRESS)
    except bpf.BPFError as e:
        return e.errno == errno.ENODEV
    finally:
        os.close(prog)
    return True


def use_tcx() -> bool:
    return os.environ.get("PTCAP_TC_ATTACH") != "netlink" and has_tcx()


def method() -> str:
    if use_tcx():
        return "TCX links"
    return "netlink clsact + cls_bpf filters (removed by a watchdog process, even on SIGKILL)"


def filter_names(ifindex: int, point: int) -> list[str]:
    """The filters of one side of an interface's clsact qdisc (a dump): each one's BPF
    program name as tc shows it ("ptcap_filter_in:[42]"), "" for one of another kind."""
    names = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, 0, _PARENT[point], 0)     # struct tcmsg
        s.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETTFILTER, 0x301, 1, 0) + body)
        while True:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if kind in (2, 3):        # NLMSG_ERROR (no qdisc, no filters), NLMSG_DONE
                    return names
                if kind == _RTM_NEWTFILTER and struct.unpack_from("=I", data, off + 16 + 8)[0]:
                    names.append(_bpf_name(data[off + 36:off + length]))    # a handle: a filter
                off += (length + 3) & ~3


def _bpf_name(attrs: bytes) -> str:
    """TCA_OPTIONS → TCA_BPF_NAME of a filter's attributes ("" if none)."""
    for kind, value in _rtattrs(attrs):
        if kind == 2:                                   # TCA_OPTIONS
            for inner, name in _rtattrs(value):
                if inner == 7:                          # TCA_BPF_NAME
                    return name.split(b"\0", 1)[0].decode(errors="replace")
    return ""


def _rtattrs(data: bytes):
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            return
        yield kind & 0x3FFF, data[off + 4:off + length]
        off += (length + 3) & ~3


def filter_count(ifindex: int, point: int) -> int:
    """How many tc filters the clsact qdisc of one interface holds on one side."""
    return len(filter_names(ifindex, point))


def _ptcaps_only(ifindex: int) -> bool:
    """Does the interface's clsact qdisc hold filters, all of them another ptcap's?"""
    names = filter_names(ifindex, TC_INGRESS) + filter_names(ifindex, TC_EGRESS)
    return bool(names) and all(n.startswith("ptcap_") for n in names)


def attach_filter(prog_fd: int, ifindex: int, point: int, made: set, seen: set, where) -> tuple[int, int, bool]:
    """Add one filter in the current namespace, the clsact qdisc first when there is none;
    returns (handle, priority, made: the qdisc is ptcap's to take off). `made` and `seen`
    are the (netns, ifindex) of the qdiscs made by ptcap and of those attached to so far.
    Raises bpf.BPFError (with errno) when the kernel refuses."""
    both = _hook(ifindex, TC_INGRESS | TC_EGRESS)
    err = _lib.bpf_tc_hook_create(ctypes.byref(both))
    if err < 0 and err != -errno.EEXIST:
        raise bpf.BPFError(-err, "creating the clsact qdisc")
    if err == 0 or where not in seen and _ptcaps_only(ifindex):
        # made here, or by another ptcap still capturing (asked before our own first
        # filter is on it): the last one out takes it off
        made.add(where)
    seen.add(where)
    ours = where in made
    hook = _hook(ifindex, point)
    opts = _Opts(ctypes.sizeof(_Opts), prog_fd, 0, 0, 0, 0)
    err = _lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
    if err < 0:
        if ours and filter_count(ifindex, TC_INGRESS) + filter_count(ifindex, TC_EGRESS) == 0:
            _lib.bpf_tc_hook_destroy(ctypes.byref(both))
        raise bpf.BPFError(-err, "adding the tc filter")
    return opts.handle, opts.priority, ours


def detach_filter(ifindex: int, point: int, handle: int, priority: int, made_qdisc: bool) -> None:
    """Remove one filter; and the clsact qdisc when ptcap made it and it is left empty.
    An interface that is gone took both with it."""
    hook = _hook(ifindex, point)
    opts = _Opts(ctypes.sizeof(_Opts), 0, 0, 0, handle, priority)
    _lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    if made_qdisc and filter_count(ifindex, TC_INGRESS) == 0 and filter_count(ifindex, TC_EGRESS) == 0:
        both = _hook(ifindex, TC_INGRESS | TC_EGRESS)
        _lib.bpf_tc_hook_destroy(ctypes.byref(both))


class Watchdog:
    """The child that adds this process's netlink filters, and removes them once it is gone."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ptcap.kernel.tcwatch", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), start_new_session=True, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    os.environ.get("PYTHONPATH")]))})
        finally:
            theirs.close()
        self.sock = ours
        self._next = 0
        if self.sock.recv(16) != b"ready":
            raise PtcapError("the tc watchdog process did not start")

    def _ask(self, msg: str, fds: list[int] = ()) -> list[str]:
        try:
            if fds:
                self.sock.sendmsg([msg.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                self.sock.send(msg.encode())
            answer = self.sock.recv(256).decode().split()
        except OSError:
            answer = []
        if not answer:
            raise PtcapError("the tc watchdog process is gone")
        return answer

    def attach(self, netns_fd: int, prog_fd: int, ifindex: int, point: int) -> int:
        """Have the watchdog add the filter (in the namespace of `netns_fd`); its key.
        Raises bpf.BPFError (with errno) when the kernel refuses."""
        self._next += 1
        answer = self._ask(f"add {self._next} {ifindex} {point}", [netns_fd, prog_fd])
        if answer[0] != "ok":
            raise bpf.BPFError(int(answer[1]), " ".join(answer[2:]))
        return self._next

    def detach(self, key: int) -> None:
        """Have the watchdog remove one filter (and the qdisc it leaves, if it is ptcap's)."""
        with contextlib.suppress(PtcapError):      # gone: it removed everything as it went
            self._ask(f"del {key}")

    def close(self) -> None:
        """Nothing is left registered: the watchdog exits (and we wait for it)."""
        self.sock.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Attachment:
    """One tc program on one side of one interface; close() takes it off."""

    def __init__(self, fd: int = -1, watchdog: Watchdog | None = None, key: int = 0) -> None:
        self.fd = fd
        self._watchdog = watchdog        # a netlink filter: the watchdog's, by key
        self._key = key

    @property
    def updatable(self) -> bool:
        """A TCX link, whose program can be replaced in place."""
        return self._watchdog is None and self.fd >= 0

    def close(self) -> None:
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            watchdog.detach(self._key)
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


class Attacher:
    """Attaches the session's tc programs the way this kernel allows; owns the watchdog."""

    def __init__(self) -> None:
        self._watchdog: Watchdog | None = None

    def attach(self, prog_fd: int, ifindex: int, ingress: bool, netns_fd: int, place) -> Attachment:
        """`place()` is a context manager entering the interface's network namespace.
        Raises bpf.BPFError (with errno) when the kernel refuses."""
        if use_tcx():
            with place():
                attach = bpf.AttachType.TCX_INGRESS if ingress else bpf.AttachType.TCX_EGRESS
                return Attachment(fd=bpf.link_create(prog_fd, ifindex, attach))
        if self._watchdog is None:
            self._watchdog = Watchdog()
        key = self._watchdog.attach(netns_fd, prog_fd, ifindex, TC_INGRESS if ingress else TC_EGRESS)
        # The filter holds the program; we hold it too, so that it is seen as ptcap's while
        # ptcap lives (as a TCX link's is).
        return Attachment(fd=os.dup(prog_fd), watchdog=self._watchdog, key=key)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
            self._watchdog = None

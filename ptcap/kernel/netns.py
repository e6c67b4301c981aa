"""Network namespaces: finding them, stepping into them, and what interfaces they hold.

ptcap is single-threaded, so `inside(ns)` can switch the whole process with setns(2) and
switch back; sockets and TCX links made inside stay bound to that namespace.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from dataclasses import dataclass, field

from ptcap.errors import PtcapError

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71
SIOCGIFHWADDR = 0x8927
RTMGRP_LINK = 1


@dataclass(eq=False)
class Netns:
    """A network namespace ptcap captures in. `name` is what the user sees ('' = ptcap's own)."""

    name: str
    path: str
    fd: int
    cookie: int = 0
    inode: int = 0
    _watch: socket.socket | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.name or "host"

    def watch_fd(self) -> int:
        """The descriptor of watch()'s link notifications."""
        assert self._watch is not None
        return self._watch.fileno()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def current() -> Netns:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ns = Netns("", "/proc/self/ns/net", fd, inode=os.fstat(fd).st_ino)
    ns.cookie = _cookie()
    return ns


def resolve(spec: str) -> Netns:
    """--netns NAME (under /run/netns) or PATH (e.g. /proc/PID/ns/net)."""
    path = spec if "/" in spec else f"/run/netns/{spec}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise PtcapError(f"--netns {spec}: {e.strerror}") from None
    ns = Netns(spec if "/" not in spec else path, path, fd, inode=os.fstat(fd).st_ino)
    try:
        with inside(ns):
            ns.cookie = _cookie()
    except OSError as e:
        ns.close()
        raise PtcapError(f"--netns {spec}: not a network namespace ({e.strerror})") from None
    return ns


def every() -> list[Netns]:
    """Every network namespace a process is in now, once each (the caller closes them).
    ptcap's own comes first, with an empty name."""
    own = current()
    seen = {own.inode}
    found = [own]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        path = f"/proc/{pid}/ns/net"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue          # gone, or a kernel thread
        inode = os.fstat(fd).st_ino
        if inode in seen:
            os.close(fd)
            continue
        seen.add(inode)
        found.append(Netns(path, path, fd, inode=inode))
    return found


ANY, NEWLY = "any", "newly"     # --netns: every namespace / only those created after the start


def visible() -> dict[int, tuple[str, str]]:
    """Every network namespace there is now, by inode: (name, path to open). A namespace
    `ip netns` knows is named as it names it; another (held by its processes only, as
    `unshare -n` and container runtimes make them) by its inode, as lsns shows it; ptcap's
    own has the empty name."""
    found: dict[int, tuple[str, str]] = {}
    try:
        found[os.stat("/proc/self/ns/net").st_ino] = ("", "/proc/self/ns/net")
    except OSError:
        pass
    try:
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        names = []
    for name in names:
        path = f"/run/netns/{name}"
        try:
            st = os.stat(path)
        except OSError:
            continue
        if st.st_dev != os.stat("/run/netns").st_dev:      # a bind-mounted namespace file
            found.setdefault(st.st_ino, (name, path))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        path = f"/proc/{pid}/ns/net"
        try:
            inode = os.stat(path).st_ino
        except OSError:
            continue          # gone, or a kernel thread
        if inode not in found:
            found[inode] = (str(inode), path)
    return found


def open_visible(inode: int, name: str, path: str) -> Netns | None:
    """Open a namespace `visible()` listed; None if it is gone or another one by now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if os.fstat(fd).st_ino != inode:
        os.close(fd)
        return None
    if not name:
        os.close(fd)
        return current()
    ns = Netns(name, path, fd, inode=inode)
    try:
        with inside(ns):
            ns.cookie = _cookie()
    except OSError:
        ns.close()
        return None
    return ns


_home: int | None = None


@contextlib.contextmanager
def inside(ns: Netns):
    """Run the block in `ns` (no-op for ptcap's own namespace)."""
    global _home
    if not ns.name:
        yield
        return
    if _home is None:
        _home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    _setns(ns.fd)
    try:
        yield
    finally:
        _setns(_home)


def _cookie() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]


def links(ns: Netns) -> list[tuple[int, str, int]]:
    """(ifindex, name, ARPHRD type) of every interface in the namespace."""
    out = []
    with inside(ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for ifindex, name in socket.if_nameindex():
            try:
                req = struct.pack("16s16x", name.encode())
                res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, req)
                arphrd = struct.unpack_from("H", res, 16)[0]
            except OSError:
                continue      # gone meanwhile
            out.append((ifindex, name, arphrd))
    return out


def watch(ns: Netns) -> None:
    """Start listening for interfaces coming and going in the namespace (rtnetlink)."""
    with inside(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.bind((0, RTMGRP_LINK))
    s.setblocking(False)
    ns._watch = s


def changed(ns: Netns) -> bool:
    """Did an interface come or go since the last call? (drains the notifications)"""
    if ns._watch is None:
        return False
    seen = False
    while True:
        try:
            if not ns._watch.recv(65536):
                return seen
            seen = True
        except BlockingIOError:
            return seen
        except OSError:       # overrun: something changed
            seen = True


# rtnetlink, for what a veth's other end is (its kind, its peer's namespace)
_NLMSG = struct.Struct("=IHHII")
_RTA = struct.Struct("=HH")
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWNSID, _RTM_GETNSID = 16, 18, 88, 90
_NLM_F_REQUEST, _NLM_F_DUMP = 1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_IFLA_LINK, _IFLA_LINKINFO, _IFLA_INFO_KIND, _IFLA_LINK_NETNSID = 5, 18, 1, 37
_NETNSA_NSID, _NETNSA_FD = 1, 3


def _attrs(data: bytes, at: int):
    while at + 4 <= len(data):
        size, kind = _RTA.unpack_from(data, at)
        if size < 4:
            return
        yield kind & 0x3FFF, data[at + 4:at + size]
        at += (size + 3) & ~3


def _rtnl(ns: Netns, msg_type: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
    """One rtnetlink request in the namespace: the (type, payload) of each answer."""
    out = []
    with inside(ns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    with s:
        s.settimeout(2)
        s.send(_NLMSG.pack(_NLMSG.size + len(body), msg_type, _NLM_F_REQUEST | flags, 1, 0) + body)
        while True:
            data = s.recv(1 << 16)
            at = 0
            while at + _NLMSG.size <= len(data):
                size, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, at)
                if size < _NLMSG.size:
                    return out
                payload = data[at + _NLMSG.size:at + size]
                at += (size + 3) & ~3
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    return out
                out.append((kind, payload))
            if not flags & _NLM_F_DUMP:
                return out


@dataclass(frozen=True)
class LinkPeer:
    """Where a veth's other end is: its namespace, as an id in this one and as an inode."""

    nsid: int
    inode: int


def link_kinds(ns: Netns) -> dict[int, tuple[str, int | None]]:
    """ifindex → (its kind: "veth", "bridge", ... or "", the id of its other end's namespace)."""
    out: dict[int, tuple[str, int | None]] = {}
    try:
        answers = _rtnl(ns, _RTM_GETLINK, _NLM_F_DUMP, struct.pack("=BxHiII", 0, 0, 0, 0, 0))
    except OSError:
        return {}
    for kind, payload in answers:
        if kind != _RTM_NEWLINK or len(payload) < 16:
            continue
        ifindex = struct.unpack_from("=i", payload, 4)[0]
        link, nsid = "", None
        for attr, value in _attrs(payload, 16):
            if attr == _IFLA_LINKINFO:
                link = next((v.rstrip(b"\0").decode(errors="replace") for a, v in _attrs(value, 0)
                             if a == _IFLA_INFO_KIND), "")
            elif attr == _IFLA_LINK_NETNSID and len(value) >= 4:
                nsid = struct.unpack_from("=i", value)[0]
        out[ifindex] = (link, nsid)
    return out


def veth_peers(ns: Netns, kinds: dict[int, tuple[str, int | None]] | None = None) -> dict[int, LinkPeer]:
    """ifindex → its other end's namespace, for each veth of `ns` whose peer is in another
    namespace there is now (a veth with both ends here has none)."""
    found = {i: nsid for i, (link, nsid) in (link_kinds(ns) if kinds is None else kinds).items()
             if link == "veth" and nsid is not None and nsid >= 0}
    if not found:
        return {}
    inodes: dict[int, int] = {}
    for inode, (_name, path) in visible().items():
        if inode == ns.inode:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            body = struct.pack("=B3x", 0) + _RTA.pack(8, _NETNSA_FD) + struct.pack("=I", fd)
            for kind, payload in _rtnl(ns, _RTM_GETNSID, 0, body):
                for attr, value in _attrs(payload, 4):
                    if kind == _RTM_NEWNSID and attr == _NETNSA_NSID:
                        inodes.setdefault(struct.unpack_from("=i", value)[0], inode)
        except OSError:
            pass
        finally:
            os.close(fd)
    return {ifindex: LinkPeer(nsid, inodes.get(nsid, 0)) for ifindex, nsid in found.items()}

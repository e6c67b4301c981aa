"""The tc watchdog (see ptcap.kernel.tcattach): `python -m ptcap.kernel.tcwatch FD`.

Does ptcap's netlink tc changes, as the socket FD asks: "add KEY IFINDEX POINT" with the
interface's network namespace and the filter program as SCM_RIGHTS fds adds the filter
(answer "ok", or "err ERRNO WHAT"); "del KEY" removes it ("done"). Each change is made
and remembered here, in one step that ptcap's death cannot cut in two: when the socket
closes (ptcap ended, however it ended), the watchdog removes every filter still there, in
its namespace, and the clsact qdiscs ptcap made that are left empty. It ignores the
terminal's signals.
"""
from __future__ import annotations

import array
import os
import signal
import socket
import sys


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    from ptcap.kernel import bpf, tcattach
    from ptcap.kernel import netns as nsmod
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    live: dict[str, tuple[int, tuple[int, int, int, int, bool]]] = {}
    made: set[tuple[int, int]] = set()      # (netns inode, ifindex): clsact a ptcap created
    seen: set[tuple[int, int]] = set()      # (netns inode, ifindex): clsact attached to

    def answer(text: str) -> None:
        try:
            sock.send(text.encode())
        except OSError:
            pass            # ptcap is gone: what it asked for is undone below

    answer("ready")
    while True:
        try:
            msg, anc, _flags, _addr = sock.recvmsg(256, socket.CMSG_SPACE(8))
        except OSError:
            msg = b""
        if not msg:
            break
        fds = array.array("i")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % 4])
        words = msg.decode().split()
        if words[0] == "add" and len(fds) == 2:
            ns_fd, prog_fd = fds
            ifindex, point = int(words[2]), int(words[3])
            try:
                nsmod._setns(ns_fd)
                handle, priority, ours = tcattach.attach_filter(
                    prog_fd, ifindex, point, made, seen, (os.fstat(ns_fd).st_ino, ifindex))
            except OSError as e:
                os.close(ns_fd)
                what = str(e).split(": ")[0] if isinstance(e, bpf.BPFError) else "entering its network namespace"
                answer(f"err {e.errno or 0} {what}")
            else:
                live[words[1]] = (ns_fd, (ifindex, point, handle, priority, ours))
                answer("ok")
            finally:
                nsmod._setns(home)
                os.close(prog_fd)
        elif words[0] == "del":
            if words[1] in live:
                _remove(*live.pop(words[1]), home, nsmod, tcattach)
            answer("done")
        else:
            for fd in fds:
                os.close(fd)
    for ns_fd, filt in live.values():
        _remove(ns_fd, filt, home, nsmod, tcattach)
    return 0


def _remove(ns_fd: int, filt: tuple[int, int, int, int, bool], home: int, nsmod, tcattach) -> None:
    ifindex, point, handle, priority, made = filt
    try:
        nsmod._setns(ns_fd)
        tcattach.detach_filter(ifindex, point, handle, priority, made)
    except OSError:
        pass            # the namespace is gone, and its interfaces with it
    finally:
        nsmod._setns(home)
        os.close(ns_fd)


if __name__ == "__main__":
    sys.exit(main())

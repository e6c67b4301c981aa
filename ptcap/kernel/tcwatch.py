"""The tc watchdog (see ptcap.kernel.tcattach): `python -m ptcap.kernel.tcwatch FD`.

Reads registrations from the socket FD ("add KEY IFINDEX POINT HANDLE PRIORITY MADE" with
the interface's network namespace as an SCM_RIGHTS fd, "del KEY"); when the socket closes
(ptcap ended, however it ended), removes every filter still registered, in its namespace,
and the clsact qdiscs ptcap made that are left empty. It ignores the terminal's signals.
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
    from ptcap.kernel import netns as nsmod
    from ptcap.kernel import tcattach
    live: dict[str, tuple[int, list[int]]] = {}
    sock.send(b"ready")
    while True:
        try:
            msg, anc, _flags, _addr = sock.recvmsg(256, socket.CMSG_SPACE(4))
        except OSError:
            msg = b""
        if not msg:
            break
        fds = array.array("i")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % 4])
        words = msg.decode().split()
        if words[0] == "add" and fds:
            live[words[1]] = (fds[0], [int(w) for w in words[2:]])
        elif words[0] == "del" and words[1] in live:
            os.close(live.pop(words[1])[0])
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    for ns_fd, (ifindex, point, handle, priority, made) in live.values():
        try:
            nsmod._setns(ns_fd)
            tcattach.detach_filter(ifindex, point, handle, priority, bool(made))
        except OSError:
            pass
        finally:
            nsmod._setns(home)
            os.close(ns_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())

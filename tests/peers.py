"""Real network peers for the tests, driven line by line over stdin/stdout.

    peers.py tcp-server PORT [ADDR]       accept connections, echo what arrives
    peers.py tcp-client ADDR PORT         connect now; on each 'send N' line, send N bytes
                                          and read the echo
    peers.py udp-server PORT [ADDR]       echo datagrams
    peers.py udp-client ADDR PORT         on each 'send N' line, send a datagram, read reply
    peers.py udp-flood ADDR PORT COUNT    on 'go', send COUNT small datagrams as fast as possible

Every peer prints 'ready ...' when set up and 'done ...' after each command.
"""
from __future__ import annotations

import socket
import sys
import threading
import time


def say(*words) -> None:
    print(*words, flush=True)


def tcp_server(port: int, addr: str = "0.0.0.0") -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    say("ready", port)
    for _ in sys.stdin:
        say("done")


def tcp_client(addr: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.create_connection((addr, port), timeout=10) if family == socket.AF_INET else \
        socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        s.connect((addr, port))
    say("ready", *s.getsockname()[:2])
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "send":
            n = int(cmd[1])
            t = time.time()
            s.sendall(b"x" * n)
            got = 0
            while got < n:
                got += len(s.recv(65536))
            say("done", f"{t:.6f}")
        elif cmd and cmd[0] == "close":
            s.close()
            say("done")


def udp_server(port: int, addr: str = "0.0.0.0") -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))

    def serve() -> None:
        while True:
            data, peer = s.recvfrom(65536)
            s.sendto(data, peer)

    threading.Thread(target=serve, daemon=True).start()
    say("ready", port)
    for _ in sys.stdin:
        say("done")


def udp_client(addr: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((addr, port))
    say("ready", *s.getsockname()[:2])
    for line in sys.stdin:
        cmd = line.split()
        if cmd and cmd[0] == "send":
            t = time.time()
            s.send(b"u" * int(cmd[1]))
            s.recv(65536)
            say("done", f"{t:.6f}")


def udp_flood(addr: str, port: int, count: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((addr, port))
    payload = b"f" * 16
    say("ready")
    for _ in sys.stdin:
        for _ in range(count):
            try:
                s.send(payload)
            except OSError:
                pass
        say("done")


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "tcp-server":
        tcp_server(int(rest[0]), *rest[1:])
    elif mode == "tcp-client":
        tcp_client(rest[0], int(rest[1]))
    elif mode == "udp-server":
        udp_server(int(rest[0]), *rest[1:])
    elif mode == "udp-client":
        udp_client(rest[0], int(rest[1]))
    elif mode == "udp-flood":
        udp_flood(rest[0], int(rest[1]), int(rest[2]))
    else:
        sys.exit(f"unknown mode {mode}")

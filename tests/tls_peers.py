"""TLS peers for the key log tests, driven over stdin/stdout like tests/peers.py.

    tls_peers.py server CERT KEY KEYLOG       HTTPS on 127.0.0.1 (an ephemeral port); logs
                                              its own keys to KEYLOG (the tests' oracle)
    tls_peers.py client URL VERSION COUNT     Python urllib (OpenSSL): says 'ready', waits
                                              for a line, makes COUNT requests, says 'done'
    tls_peers.py get URL VERSION              one request now; prints the body
    tls_peers.py slow-get URL VERSION SECONDS  the same, but the handshake waits SECONDS
                                              before it reads the server's first flight (its
                                              keys come well after the packets they decrypt)

VERSION is tls12 or tls13. The server answers GET /PATH with "you asked for /PATH".
"""
from __future__ import annotations

import http.server
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request

VERSIONS = {"tls12": ssl.TLSVersion.TLSv1_2, "tls13": ssl.TLSVersion.TLSv1_3}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"you asked for {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def server(cert: str, key: str, keylog: str) -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.keylog_filename = keylog
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", srv.server_address[1], flush=True)
    srv.serve_forever()


def _context(version: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()      # honours SSLKEYLOGFILE, as urllib's own does
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def get(url: str, version: str) -> None:
    with urllib.request.urlopen(url, context=_context(version)) as r:
        print(r.read().decode(), end="", flush=True)


def slow_get(url: str, version: str, seconds: float) -> None:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _context(version).wrap_bio(incoming, outgoing)

    def send() -> None:
        if outgoing.pending:
            sock.sendall(outgoing.read())

    def receive() -> None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        incoming.write(data)

    first = True
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            send()
            receive()
            if first:
                time.sleep(seconds)
                first = False
    send()
    tls.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nConnection: close\r\n\r\n".encode())
    send()
    reply = b""
    while True:          # Connection: close, so the reply ends with the connection
        try:
            data = tls.read(65536)
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            if not data:
                break
            incoming.write(data)
            continue
        except ssl.SSLZeroReturnError:
            break
        if not data:
            break
        reply += data
    print(reply.split(b"\r\n\r\n", 1)[1].decode(), end="", flush=True)


def client(url: str, version: str, count: int) -> None:
    ctx = _context(version)
    ctx.keylog_filename = None      # a running program that logs nothing: uprobes only
    print("ready", flush=True)
    for _ in sys.stdin:
        for _ in range(count):
            with urllib.request.urlopen(url, context=ctx) as r:
                body = r.read()
        print("done", body.decode().strip(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(*sys.argv[2:5])
    elif sys.argv[1] == "get":
        get(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "slow-get":
        slow_get(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]))

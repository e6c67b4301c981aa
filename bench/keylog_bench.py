#!/usr/bin/env python3
"""The cost of reading TLS keys with uprobes: a client makes N TLS connections (HTTPS GET,
a new connection each) to a local server, alone, under tcpdump, under ptcap --pid without
keys, and under ptcap --pid with --embed-keylog-to-pcapng (uprobes on the client), in one run.

A uprobe runs in the traced program (a breakpoint trap per probed call), so the cost shows
in the client's own CPU time (utime + stime from /proc/PID/stat) and wall time for the N
connections; ptcap's keys are counted (never shown). Clients: the Go client of the tests
(crypto/tls writeKeyLog probed, built here with golang-go) and Python's urllib (OpenSSL 3,
SSL_read/SSL_write probed).

    sudo .venv/bin/python bench/keylog_bench.py [--connections 1000] [--version tls13] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = ROOT / "tests" / "tls_peers.py"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK      # utime + stime


def start_capture(argv: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("capture exited early: " + proc.stderr.read().decode())
        if "listening on" in line:
            return proc
    raise RuntimeError("capture did not start")


def client_argv(kind: str, go: Path, url: str, version: str, n: int) -> list[str]:
    if kind == "go":
        return [str(go), url, version, str(n)]
    return [sys.executable, str(PEERS), "client", url, version, str(n)]


def run_one(kind: str, mode: str, go: Path, url: str, version: str, n: int, port: int,
            tmp: Path) -> tuple[float, float, int]:
    client = subprocess.Popen(client_argv(kind, go, url, version, n), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)
    assert client.stdout.readline().startswith("ready")
    keys = tmp / f"keys-{kind}-{mode}.txt"
    keys.unlink(missing_ok=True)
    capture = None
    ptcap = [sys.executable, "-m", "ptcap.cli", "-i", "lo", "--pid", str(client.pid), "-w", "/dev/null"]
    if mode == "tcpdump":
        capture = start_capture(["tcpdump", "-i", "lo", "-w", "/dev/null", f"tcp port {port}"])
    elif mode == "ptcap":
        capture = start_capture(ptcap)
    elif mode == "ptcap+keys":
        capture = start_capture(ptcap + ["--write-keylog-file", str(keys)])
    try:
        before = cpu_seconds(client.pid)
        t0 = time.monotonic()
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline().startswith("done")
        wall = time.monotonic() - t0
        cpu = cpu_seconds(client.pid) - before
    finally:
        if capture is not None:
            capture.send_signal(signal.SIGINT)
            capture.communicate(timeout=60)
        client.kill()
        client.wait()
    lines = len(keys.read_text().splitlines()) if keys.exists() else 0
    return wall, cpu, lines


CALLS = """
import ctypes, sys, time
sys.path.insert(0, sys.argv[1])
from ptcap.meta import openssl_layout as m
lib = m._Lib("libssl.so.3")
client, _logged, (_callback, server) = m._handshake(lib, 0x0304)
buf = ctypes.create_string_buffer(64)
print("ready", flush=True)
n = int(sys.stdin.readline())
t0 = time.perf_counter()
for _ in range(n):
    lib.ssl.SSL_write(client, b"0123456789abcdef", 16)
    lib.ssl.SSL_read(server, buf, 64)
print("done", time.perf_counter() - t0, flush=True)
"""


def per_call(tmp: Path, calls: int, rounds: int) -> None:
    """SSL_write + SSL_read on an in-memory TLS 1.3 connection pair, with and without the
    uprobes on them (two probed calls per iteration)."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for mode in ("none", "ptcap+keys"):
            proc = subprocess.Popen([sys.executable, "-c", CALLS, str(ROOT)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, bufsize=1)
            assert proc.stdout.readline().startswith("ready")
            capture = None
            if mode != "none":
                capture = start_capture([sys.executable, "-m", "ptcap.cli", "-i", "lo", "--pid", str(proc.pid),
                                         "-w", "/dev/null", "--write-keylog-file", str(tmp / "calls-keys.txt")])
            try:
                proc.stdin.write(f"{calls}\n")
                proc.stdin.flush()
                took = float(proc.stdout.readline().split()[1])
            finally:
                if capture is not None:
                    capture.send_signal(signal.SIGINT)
                    capture.communicate(timeout=60)
                proc.kill()
                proc.wait()
            best[mode] = min(best.get(mode, took), took)
    extra = (best["ptcap+keys"] - best["none"]) * 1e6 / calls
    print(f"openssl  {calls} x (SSL_write + SSL_read) in memory: {best['none'] * 1e6 / calls:.2f} µs alone, "
          f"{best['ptcap+keys'] * 1e6 / calls:.2f} µs probed: {extra / 2:.2f} µs per probed call")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--version", choices=("tls12", "tls13"), default="tls13")
    ap.add_argument("--rounds", type=int, default=3, help="runs per row, interleaved; the least CPU is kept")
    ap.add_argument("--calls-only", action="store_true", help="only the per-call OpenSSL measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ptcap-keybench-") as tmpdir:
        tmp = Path(tmpdir)
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        go = tmp / "goclient"
        subprocess.run(["go", "build", "-o", str(go), "."], cwd=ROOT / "tests" / "goclient", check=True,
                       env=dict(os.environ, GOCACHE=str(tmp / "gocache"), GOFLAGS="-mod=mod", CGO_ENABLED="0"))
        server = subprocess.Popen([sys.executable, str(PEERS), "server", str(cert), str(key), str(tmp / "server-keys")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline().split()[1])
            url = f"https://127.0.0.1:{port}/bench"
            n = args.connections
            print(f"{n} TLS connections ({args.version}) per run, best of {args.rounds}; "
                  "client CPU = its utime+stime")
            print(f"{'client':<8} {'capture':<12} {'wall ms/conn':>12} {'client CPU µs/conn':>19} "
                  f"{'CPU vs tcpdump':>15} {'key lines':>10}")
            for kind in () if args.calls_only else ("go", "openssl"):
                rows: dict[str, tuple[float, float, int]] = {}
                for _ in range(args.rounds):     # interleaved, so that load elsewhere hits all rows
                    for mode in ("none", "tcpdump", "ptcap", "ptcap+keys"):
                        got = run_one(kind, mode, go, url, args.version, n, port, tmp)
                        if mode not in rows or got[1] < rows[mode][1]:
                            rows[mode] = got
                base = rows["tcpdump"][1]
                for mode, (wall, cpu, lines) in rows.items():
                    ratio = f"{cpu / base:.2f}x" if base else "-"
                    print(f"{kind:<8} {mode:<12} {wall * 1000 / n:>12.3f} {cpu * 1e6 / n:>19.1f} "
                          f"{ratio:>15} {lines:>10}")
                extra = (rows["ptcap+keys"][1] - rows["ptcap"][1]) * 1e6 / n
                print(f"{kind:<8} key-log uprobes cost the client {extra:.1f} µs CPU per connection")
            per_call(tmp, 100_000, args.rounds)
        finally:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

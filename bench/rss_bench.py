#!/usr/bin/env python3
"""Memory stays flat: ptcap's resident memory over a long capture on a host that starts and
ends many short processes and makes many connections.

ptcap captures the connections (`-i lo -w FILE 'tcp port P'`, every packet with its process
comments); meanwhile the host starts PROCESSES short processes evenly over SECONDS: CONNECTIONS
of them connect to a local server, send a line and end (bench/churn.c), the rest exit at
once. ptcap's RSS (VmRSS of its process) is printed at the start, at every tenth of the run
and at the end, with its own exit report (packets, drops, process events lost).

    sudo .venv/bin/python bench/rss_bench.py [--seconds 600] [--processes 100000] [--connections 10000]
                                             [--ptcap "/other/tree/.venv/bin/python -m ptcap.cli"]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
from procstat import wait_listening  # noqa: E402  (beside this file)

MAX_CHILDREN = 32       # short processes alive at once


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def serve(server: socket.socket, stop: threading.Event) -> None:
    """Accept, read a line, close: one short connection per client."""
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            try:
                conn.recv(256)
            except OSError:
                pass


class Churn:
    """Starts `processes` short processes over `seconds`, `connections` of them clients."""

    def __init__(self, exe: Path, port: int, processes: int, connections: int, seconds: float) -> None:
        self.exe, self.port = str(exe), str(port)
        self.total, self.connections, self.seconds = processes, connections, seconds
        self.started = self.connected = 0
        self._children: set[int] = set()

    def _reap(self, block: bool) -> None:
        while self._children:
            try:
                pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            self._children.discard(pid)
            block = False

    def step(self, elapsed: float) -> None:
        """Start the processes due by `elapsed` seconds into the run."""
        due = min(self.total, int(self.total * min(elapsed / self.seconds, 1.0)))
        while self.started < due:
            self._reap(block=len(self._children) >= MAX_CHILDREN)
            # every (total / connections)-th process is a client
            client = self.connected < self.connections and \
                self.started * self.connections >= self.connected * self.total
            argv = [self.exe, self.port] if client else [self.exe]
            self._children.add(os.posix_spawn(self.exe, argv, os.environ))
            self.started += 1
            self.connected += client
        self._reap(block=False)

    def finish(self) -> None:
        while self._children:
            self._reap(block=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the run (default 10 minutes)")
    ap.add_argument("--processes", type=int, default=100_000, help="short processes started in it")
    ap.add_argument("--connections", type=int, default=10_000, help="how many of them connect")
    ap.add_argument("--samples", type=int, default=10, help="RSS lines between start and end")
    ap.add_argument("--ptcap", default=f"{sys.executable} -m ptcap.cli",
                    help="the command that runs ptcap (another tree's, to compare)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    args.connections = min(args.connections, args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "churn"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "churn.c")], check=True)
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(128)
        port = server.getsockname()[1]
        stop = threading.Event()
        serving = threading.Thread(target=serve, args=(server, stop), daemon=True)
        serving.start()
        out = Path(tmp) / "rss.pcapng"
        argv = args.ptcap.split() + ["-i", "lo", "-w", str(out), f"tcp port {port}"]
        # run from elsewhere: `-m ptcap.cli` imports the tree of the python it is given
        cap = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
        try:
            wait_listening(cap)
            time.sleep(1.0)                  # start-up done (the /proc snapshot, the runtimes)
            churn = Churn(exe, port, args.processes, args.connections, args.seconds)
            print(f"{'seconds':>8} {'processes':>10} {'connections':>12} {'ptcap RSS (MiB)':>16}", flush=True)
            start_rss = rss_kib(cap.pid)
            print(f"{0:>8.0f} {0:>10} {0:>12} {start_rss / 1024:>16.1f}", flush=True)
            t0 = time.monotonic()
            next_sample = 1
            peak = start_rss
            while True:
                elapsed = time.monotonic() - t0
                churn.step(elapsed)
                peak = max(peak, rss_kib(cap.pid))
                if elapsed >= args.seconds * next_sample / args.samples:
                    print(f"{elapsed:>8.0f} {churn.started:>10} {churn.connected:>12} "
                          f"{rss_kib(cap.pid) / 1024:>16.1f}", flush=True)
                    next_sample += 1
                if elapsed >= args.seconds and churn.started >= churn.total:
                    break
                time.sleep(0.005)
            churn.finish()
            end_rss = rss_kib(cap.pid)
        finally:
            cap.send_signal(signal.SIGINT)
            _, err = cap.communicate(timeout=120)
            stop.set()
            serving.join()
            server.close()
    slow = time.monotonic() - t0 > args.seconds * 1.5 + 5
    print(f"ptcap RSS: {start_rss / 1024:.1f} MiB at the start, {end_rss / 1024:.1f} MiB at the end "
          f"(peak {peak / 1024:.1f} MiB; end/start {end_rss / start_rss:.2f}) over {elapsed:.0f} s, "
          f"{churn.started} processes, {churn.connected} connections"
          + (" (the host could not start them at the asked rate)" if slow else ""))
    print("ptcap said: " + "; ".join(l for l in err.decode().splitlines() if l[:1].isdigit()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Big packets: the share of a fast TCP transfer's packets each tool keeps, ptcap against
tcpdump, in one run.

Each transfer runs on loopback (segments of up to 64 KiB), once per tool and output, the tool
capturing its data direction (-Q in, full snapshot length, default buffer sizes: tcpdump's
2 MiB, ptcap's 64 MiB ring): a 100 MB download from a local HTTP server (curl), an iperf3 TCP
run, and the download again with rotation (-C 1 -W 5). A tool keeps captured / (captured +
dropped by kernel) of the packets; the last column is ptcap's share over tcpdump's.

    sudo .venv/bin/python bench/bytes_bench.py [--megabytes 100] [--iperf-seconds 3]
"""
from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from procstat import cpu_ns, wait_listening  # noqa: E402  (beside this file)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


def wait_listen(port: int, timeout: float = 10) -> None:
    """Wait until something listens on the TCP port, without connecting to it (iperf3 -1
    serves one client: a probe would be it)."""
    deadline = time.monotonic() + timeout
    want = f":{port:04X} "
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                if any(want in line and line.split()[3] == "0A" for line in f):
                    return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def count(err: str, what: str) -> int:
    m = re.search(rf"(\d+) packets? {what}", err)
    return int(m.group(1)) if m else -1


TREE = ROOT


def capture(tool: str, out: str, expr: str, extra: list[str], traffic) -> dict:
    if tool == "ptcap":
        venv = TREE / ".venv" / "bin" / "python"
        argv = [str(venv) if venv.exists() else sys.executable, "-m", "ptcap.cli"]
    else:
        argv = ["tcpdump"]
    argv += ["-i", "lo", "-Q", "in", *extra, "-w", out, expr]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=TREE)
    try:
        wait_listening(proc)
        before = cpu_ns(proc.pid)
        t0 = time.monotonic()
        traffic()
        seconds = time.monotonic() - t0
        time.sleep(1.2)         # tcpdump hands over what it has once a second
        used = (cpu_ns(proc.pid) - before) / 1e9
    finally:
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1].decode()
    got, lost = count(err, "captured"), count(err, "dropped by kernel")
    if got < 0:
        raise RuntimeError(f"{tool}: {err}")
    return {"captured": got, "dropped": lost, "share": got / max(got + lost, 1), "cpu": used,
            "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=int, default=100, help="size of the download")
    ap.add_argument("--iperf-seconds", type=float, default=3.0)
    ap.add_argument("--dir", default="/dev/shm", help="where the files are written")
    ap.add_argument("--only", default="", help="comma-separated runs to do (download,iperf3,rotation)")
    ap.add_argument("--tree", default=str(ROOT), help="the ptcap tree to run (its .venv)")
    args = ap.parse_args()
    global TREE
    TREE = Path(args.tree)
    only = set(filter(None, args.only.split(",")))

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        work.chmod(0o1777)      # tcpdump opens rotated files as user tcpdump (-Z)
        (work / "www").mkdir()
        with open(work / "www" / "blob", "wb") as f:
            f.truncate(args.megabytes * 1_000_000)
        http_port = free_tcp_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                   "--directory", str(work / "www"), str(http_port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        try:
            wait_port(http_port)

            def download() -> None:
                subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{http_port}/blob"], check=True)

            iperf_port = free_tcp_port()

            def iperf() -> None:
                srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(iperf_port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait_listen(iperf_port)
                    subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(iperf_port), "-t",
                                    str(args.iperf_seconds)], check=True, stdout=subprocess.DEVNULL)
                finally:
                    srv.wait(timeout=30)

            plan = [
                ("download", "/dev/null", f"tcp src port {http_port}", [], download),
                ("download", "file", f"tcp src port {http_port}", [], download),
                ("iperf3", "/dev/null", f"tcp port {iperf_port}", [], iperf),
                ("iperf3", "file", f"tcp port {iperf_port}", [], iperf),
                ("rotation", "-C 1 -W 5", f"tcp src port {http_port}", ["-C", "1", "-W", "5"], download),
            ]
            for name, output, expr, extra, traffic in plan:
                if only and name not in only:
                    continue
                result = {}
                for tool in ("tcpdump", "ptcap"):
                    out = "/dev/null" if output == "/dev/null" else str(work / f"{tool}-{name}.pcap{'ng' if tool == 'ptcap' else ''}")
                    # iperf3 uses the control connection too: the share counts every packet
                    result[tool] = capture(tool, out, expr, extra, traffic)
                    for leftover in work.glob(f"{tool}-*"):
                        leftover.unlink()
                rows.append((name, output, result))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)

    print(f"{'run':>9} {'output':>10} {'tool':>8} {'captured':>9} {'dropped':>8} {'kept':>6} {'cpu_s':>6}  ptcap/tcpdump")
    worst = None
    for name, output, result in rows:
        ratio = result["ptcap"]["share"] / max(result["tcpdump"]["share"], 1e-9)
        worst = ratio if worst is None else min(worst, ratio)
        for tool in ("tcpdump", "ptcap"):
            r = result[tool]
            tail = f"  {ratio:.2f}" if tool == "ptcap" else ""
            print(f"{name:>9} {output:>10} {tool:>8} {r['captured']:>9} {r['dropped']:>8} "
                  f"{r['share']:>6.1%} {r['cpu']:>6.2f}{tail}")
    if worst is not None:
        print(f"lowest share ratio ptcap/tcpdump: {worst:.2f} (goal >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

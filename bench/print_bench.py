#!/usr/bin/env python3
"""Live printing: `ptcap -n` against `tcpdump -n`, in one run, on a loopback UDP flood.

Each tool prints the same flood (inbound copies only) to a pipe this script reads. For each it
reports the packets sent and printed, how far behind the flood its lines were when the flood
ended (seconds until the line count reached what was sent), and CPU per printed packet (user +
system of the tool and every process it waited for: ptcap's tcpdump children count), from
"listening on" to its exit (start-up excluded, as bench/cpu_bench.py does) and, in the last
column, from exec on. The last lines give the CPU ratios ptcap/tcpdump.

    sudo .venv/bin/python bench/print_bench.py [--rate 100000] [--seconds 4]
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
sys.path.insert(0, str(HERE))
from capture_bench import wait_listening  # noqa: E402
from flooding import build_flooder  # noqa: E402


def cpu_so_far(pid: int) -> float:
    """utime + stime of a process and of the children it waited for, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_one(tool: str, rate: int, seconds: float, flooder: Path, port: int) -> dict:
    expr = f"udp dst port {port}"
    if tool == "ptcap":
        argv = [sys.executable, "-m", "ptcap.cli", "-n", "-i", "lo", "-Q", "in", "-B", "65536", expr]
    else:
        argv = ["tcpdump", "-n", "-i", "lo", "-Q", "in", "-B", "65536", expr]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    wait_listening(proc)
    start_cpu = cpu_so_far(proc.pid)
    lines = [0]
    reached: dict[int, float] = {}

    def count() -> None:
        fd = proc.stdout.fileno()
        while True:
            data = os.read(fd, 1 << 20)
            if not data:
                return
            lines[0] += data.count(b"\n")
            reached.setdefault(lines[0], time.monotonic())

    reader = threading.Thread(target=count, daemon=True)
    reader.start()
    time.sleep(0.5)
    sent = int(subprocess.run([str(flooder), "127.0.0.1", str(port), str(rate), str(seconds)],
                              capture_output=True, text=True, check=True).stdout.split()[0])
    flood_end = time.monotonic()
    deadline = flood_end + 30
    last, idle_since = -1, time.monotonic()
    while time.monotonic() < deadline:        # until the lines stop coming (1.5 s idle)
        if lines[0] != last:
            last, idle_since = lines[0], time.monotonic()
        elif time.monotonic() - idle_since > 1.5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(proc.pid, 0)
    reader.join(10)
    proc.stderr.close()
    printed = lines[0]
    caught_up = min((t for n, t in reached.items() if n >= 0.999 * sent), default=None)
    lag = (caught_up - flood_end) if caught_up is not None else float("inf")
    cpu = usage.ru_utime + usage.ru_stime
    return {"sent": sent, "printed": printed, "lag": max(lag, 0.0), "cpu_us": (cpu - start_cpu) / max(printed, 1) * 1e6,
            "all_us": cpu / max(printed, 1) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--port", type=int, default=9788)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no ICMP unreachables in the flood
    sink.bind(("127.0.0.1", args.port))
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        flooder = build_flooder(Path(tmp))
        print(f"{'tool':>8} {'sent':>9} {'printed':>9} {'behind_s':>9} {'cpu_us/pkt':>11} {'with_start':>11}")
        for tool in ("tcpdump", "ptcap"):
            r = res[tool] = run_one(tool, args.rate, args.seconds, flooder, args.port)
            print(f"{tool:>8} {r['sent']:>9} {r['printed']:>9} {r['lag']:>9.2f} {r['cpu_us']:>11.2f} "
                  f"{r['all_us']:>11.2f}", flush=True)
    ratio = res["ptcap"]["cpu_us"] / res["tcpdump"]["cpu_us"]
    with_start = res["ptcap"]["all_us"] / res["tcpdump"]["all_us"]
    print(f"CPU per printed packet with start-up: ptcap/tcpdump = {with_start:.2f}x")
    print(f"CPU per printed packet: ptcap/tcpdump = {ratio:.2f}x (goal <= 1.2x); "
          f"behind at the end: ptcap {res['ptcap']['lag']:.2f} s, tcpdump {res['tcpdump']['lag']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

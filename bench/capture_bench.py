#!/usr/bin/env python3
"""Capture throughput: ptcap -w against tcpdump -w, in one run, on a loopback UDP flood.

For each rate (packets/s) both tools capture the same flood (one after the other, same
buffer size, same filter, inbound only: on lo tcpdump keeps only the arriving copy); the table shows packets offered, captured and
dropped, and the last line the highest rate each held with zero drops and their ratio. A rate is
held when nothing was lost and the flood reached 95 % of it while that tool was capturing
(a capture that slows the sender down does not get credit for a rate it prevented).

    sudo .venv/bin/python bench/capture_bench.py [--rates 50000,100000,...] [--seconds 3]
"""
from __future__ import annotations

import argparse
import os
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
PORT = 9787

sys.path.insert(0, str(HERE))
from flooding import build_flooder  # noqa: E402  (beside this file)


def set_port(port: int) -> None:
    global PORT
    PORT = port


def wait_listening(proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("capture exited early")
        if "listening on" in line:
            return
    raise RuntimeError("capture did not start")


def stats(text: str) -> dict[str, int]:
    out = {}
    for key in ("captured", "received by filter", "dropped by kernel"):
        m = re.search(rf"(\d+) packets? {key}", text)
        out[key] = int(m.group(1)) if m else -1
    return out


def run_one(tool: str, rate: int, seconds: float, flooder: Path, workdir: Path, buffer_kib: int) -> dict:
    out = workdir / (f"{tool}.pcapng" if tool == "ptcap" else f"{tool}.pcap")
    expr = f"udp dst port {PORT}"
    if tool == "ptcap":
        argv = [sys.executable, "-m", "ptcap.cli", "-i", "lo", "-Q", "in", "-B", str(buffer_kib),
                "-w", str(out), expr]
    else:
        argv = ["tcpdump", "-i", "lo", "-Q", "in", "-B", str(buffer_kib), "-w", str(out), expr]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    wait_listening(proc)
    time.sleep(0.3)
    sent = int(subprocess.run([str(flooder), "127.0.0.1", str(PORT), str(rate), str(seconds)],
                              capture_output=True, text=True, check=True).stdout.split()[0])
    time.sleep(1.5)   # longer than tcpdump's 1 s buffer timeout: nothing left unread at the stop
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1].decode()
    s = stats(err)
    s["offered"] = sent
    s["lost"] = max(s["dropped by kernel"], 0) + max(sent - s["captured"], 0)
    out.unlink(missing_ok=True)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="25000,50000,100000,200000,300000,400000,600000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--buffer-kib", type=int, default=32768)
    ap.add_argument("--port", type=int, default=PORT, help="UDP port of the flood")
    args = ap.parse_args()
    set_port(args.port)
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    rates = [int(r) for r in args.rates.split(",")]
    best = {"ptcap": 0, "tcpdump": 0}
    # a bound socket that never reads: no ICMP port-unreachable replies in the flood
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", PORT))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        flooder = build_flooder(workdir)
        print(f"{'rate/s':>8} {'tool':>8} {'offered':>9} {'captured':>9} {'dropped':>9} {'lost':>7}")
        for rate in rates:
            for tool in ("tcpdump", "ptcap"):
                s = run_one(tool, rate, args.seconds, flooder, workdir, args.buffer_kib)
                print(f"{rate:>8} {tool:>8} {s['offered']:>9} {s['captured']:>9} "
                      f"{s['dropped by kernel']:>9} {s['lost']:>7}", flush=True)
                # held: nothing lost, and the flood really ran at (95 % of) the rate
                if s["lost"] == 0 and s["offered"] >= 0.95 * rate * args.seconds:
                    best[tool] = max(best[tool], rate)
    ratio = best["ptcap"] / best["tcpdump"] if best["tcpdump"] else float("nan")
    print(f"highest rate with 0 drops: ptcap {best['ptcap']}/s, tcpdump {best['tcpdump']}/s; "
          f"ratio ptcap/tcpdump = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Selecting in the kernel: ptcap --pid of an idle process while loopback is flooded by
another process, against tcpdump with a filter that matches nothing, in one run.

Both should cost (almost) nothing in user space: no packet is copied to them. The CPU time
of each tool's own process (utime + stime from /proc/PID/stat) is measured over the flood
alone (start-up excluded). For scale, a third row shows ptcap capturing the flood without a
selector (every packet copied, written to /dev/null).

    sudo .venv/bin/python bench/idle_pid_bench.py [--rate 100000] [--seconds 5]
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
PORT = 21900
from flooding import build_flooder, quiet_target  # noqa: E402  (beside this file)
from procstat import cpu_seconds, wait_listening  # noqa: E402


def run_one(label: str, argv: list[str], flooder: Path, rate: int, seconds: float) -> tuple[str, int, float, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_listening(proc)
        time.sleep(0.5)                      # let start-up work settle
        before = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        sent = subprocess.run([str(flooder), "127.0.0.1", str(PORT), str(rate), str(seconds)],
                              capture_output=True, text=True, check=True)
        elapsed = time.monotonic() - t0
        used = cpu_seconds(proc.pid) - before
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    offered = int(sent.stdout.split()[0])
    captured = next((l.split()[0] for l in err.decode().splitlines() if "captured" in l), "?")
    return label, offered, used / elapsed, captured


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100000, help="flood packets per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    with tempfile.TemporaryDirectory() as tmp:
        flooder = build_flooder(Path(tmp))
        py = [sys.executable, "-m", "ptcap.cli", "-i", "lo"]
        with quiet_target(PORT) as idle:
            runs = [
                ("ptcap --pid IDLE", py + ["--pid", str(idle), "-w", "/dev/null"]),
                ("tcpdump 'udp port 9'", ["tcpdump", "-i", "lo", "-w", "/dev/null", "udp port 9"]),
                ("ptcap (no selector)", py + ["-w", "/dev/null", "-B", "65536"]),
            ]
            results = [run_one(label, argv, flooder, args.rate, args.seconds) for label, argv in runs]
    print(f"{'tool':<24} {'offered':>9} {'captured':>9} {'CPU (% of a core)':>18}")
    for label, offered, share, captured in results:
        print(f"{label:<24} {offered:>9} {captured:>9} {share * 100:>17.2f}%")
    ptcap_idle, tcpdump_idle = results[0][2], results[1][2]
    print(f"ptcap --pid of an idle process: {ptcap_idle * 100:.2f}% of a core, tcpdump matching "
          f"nothing: {tcpdump_idle * 100:.2f}% (difference {abs(ptcap_idle - tcpdump_idle) * 100:.2f} "
          f"points); ptcap without a selector: {results[2][2] * 100:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

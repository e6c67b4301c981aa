#!/usr/bin/env python3
"""What following the container runtimes costs: the CPU of a quiet capture (a filter that
matches nothing) while N containers are created and removed (`docker run --rm IMAGE true`,
one after another), in one run, against tcpdump with the same filter, and ptcap without
container metadata (--context process: no runtime is followed).

The engines are private ones (tests/engines.py: a containerd and a dockerd of their own,
on a bridge of their own); each tool's CPU (utime + stime of all its threads, from
/proc/PID/stat) is measured over the containers' churn alone (start-up excluded).

    sudo .venv/bin/python bench/container_bench.py [--containers 100]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from engines import IMAGE, PrivateEngines  # noqa: E402  (the tests' private engines)

from procstat import TICK, cpu_seconds, wait_listening  # noqa: E402  (beside this file)
QUIET = "tcp port 9"        # discard: nothing talks to it here


def churn(engines: PrivateEngines, n: int) -> float:
    t0 = time.monotonic()
    for _ in range(n):
        engines.docker("run", "--rm", "--network", "none", IMAGE, "true")
    return time.monotonic() - t0


def run_one(label: str, argv: list[str], engines: PrivateEngines, n: int) -> tuple[str, float, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env=engines.env)
    try:
        wait_listening(proc)
        time.sleep(1.0)                      # let start-up work settle
        before = cpu_seconds(proc.pid)
        elapsed = churn(engines, n)
        used = cpu_seconds(proc.pid) - before
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    return label, used, elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    engines = PrivateEngines(f"b{os.getpid() % 10000}")
    try:
        engines.start()
        engines.import_image()
        py = [sys.executable, "-m", "ptcap.cli", "-i", "lo", "-w", "/dev/null"]
        rows = [
            run_one("tcpdump", ["tcpdump", "-i", "lo", "-w", "/dev/null", QUIET], engines, args.containers),
            run_one("ptcap --context process (no runtime followed)",
                    py + ["--context", "process", "--containerd-address", engines.containerd, QUIET],
                    engines, args.containers),
            run_one("ptcap (docker, containerd, CRI followed)",
                    py + ["--containerd-address", engines.containerd, QUIET], engines, args.containers),
        ]
    finally:
        engines.stop()
    base = rows[0][1] or 1 / TICK
    print(f"{args.containers} containers created and removed during a quiet capture (filter {QUIET!r})")
    print(f"{'capture':<48} {'CPU s':>7} {'churn s':>8} {'CPU %':>6} {'vs tcpdump':>10}")
    for label, used, elapsed in rows:
        print(f"{label:<48} {used:7.2f} {elapsed:8.1f} {100 * used / elapsed:6.1f} {used / base:9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Start-up time: from exec to "listening on" on stderr, ptcap against tcpdump, in one run.

Each tool starts N times on lo with the same filter (`-c 1 udp port 9`) and is stopped as
soon as it says it listens; the table shows the median and the best, the last lines the
ratios. --tree DIR times another checkout's ptcap (the `ptcap` its .venv installed, so a
tree from before the subpackages works too) as well, to compare before and after a change.
Python runs as installed, with its bytecode cache (PYTHONDONTWRITEBYTECODE is dropped), and
one untimed start of each tool comes first.

    sudo .venv/bin/python bench/startup_bench.py [--runs 9] [--tree /work/main]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def once(argv: list[str], env: dict | None = None) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        for line in proc.stderr:
            if b"listening on" in line:
                return time.monotonic() - t0
        raise SystemExit(f"{argv[0]} exited without listening")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def ptcap(tree: Path) -> list[str]:
    return [str(tree / ".venv" / "bin" / "ptcap"), "-i", "lo", "-c", "1", "udp port 9"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tree", type=Path, action="append", default=[])
    args = ap.parse_args()
    tools = [("tcpdump", ["tcpdump", "-i", "lo", "-n", "-c", "1", "udp port 9"], None)]
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for tree in [ROOT, *args.tree]:
        env = {**base_env, "PYTHONPATH": str(tree)}
        tools.append((f"ptcap ({tree})", ptcap(tree), env))
    times: dict[str, list[float]] = {name: [] for name, _, _ in tools}
    for name, argv, env in tools:            # bytecode written, caches warm
        once(argv, env)
    for _ in range(args.runs):             # interleaved: a busy moment hits every tool
        for name, argv, env in tools:
            times[name].append(once(argv, env))
    print(f"{'tool':60} {'median':>8} {'best':>8}")
    for name, ts in times.items():
        print(f"{name:60} {statistics.median(ts) * 1000:7.0f}ms {min(ts) * 1000:7.0f}ms")
    base = statistics.median(times["tcpdump"])
    for name, ts in list(times.items())[1:]:
        print(f"ratio {name} / tcpdump (median): {statistics.median(ts) / base:.1f}")


if __name__ == "__main__":
    main()

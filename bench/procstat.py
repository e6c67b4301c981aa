"""What the benchmarks read of a process they started: its CPU time, and when it listens."""
from __future__ import annotations

import os
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK      # utime + stime


def wait_listening(proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            raise RuntimeError("capture exited early: " + proc.stderr.read().decode())
        if "listening on" in line:
            return
    raise RuntimeError("capture did not start")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` in nanoseconds (the scheduler's own account, finer
    than the clock ticks of cpu_seconds)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def thread_ns(pid: int) -> dict[int, int]:
    """CPU time of each thread of `pid` in nanoseconds, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out

#!/usr/bin/env python3
"""CPU per captured packet: ptcap -w (pcapng, every packet with its process comment) against
tcpdump -w, both capturing the same loopback flood at the same time.

Both tools run side by side on one flood of small UDP datagrams (their default direction: on
lo each takes every datagram once, tcpdump the arriving copy, ptcap the leaving one naming its
sender, so that every ptcap packet carries a process comment; the same filter, the
same buffer size, files on the same file system); each tool's own CPU time (run time of all its threads, from
/proc/PID/task/*/schedstat) from just before the flood until it has read everything, divided by
the packets it captured, is its cost per packet. Start-up is excluded.

    sudo .venv/bin/python bench/cpu_bench.py [--rate 100000] [--seconds 5] [--dir /dev/shm]
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
sys.path.insert(0, str(HERE))
from flooding import build_flooder  # noqa: E402  (beside this file)
from procstat import cpu_ns, thread_ns, wait_listening  # noqa: E402


def tree_python(tree: str) -> str:
    venv = Path(tree) / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def captured(err: str) -> int:
    m = re.search(r"(\d+) packets? captured", err)
    return int(m.group(1)) if m else -1


def dropped(err: str) -> int:
    m = re.search(r"(\d+) packets? dropped by kernel", err)
    return int(m.group(1)) if m else -1


def commented(path: Path, first: int = 2000) -> float:
    """The share of the first packets of a pcapng file that carry a comment (tshark reads it)."""
    out = subprocess.run(["tshark", "-r", str(path), "-c", str(first), "-T", "fields", "-e", "frame.comment"],
                         capture_output=True, text=True).stdout.splitlines()
    return sum(1 for line in out if line.strip()) / len(out) if out else 0.0


def forks() -> int:
    """Processes the host has started since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("processes "))


def write_cost(directory: Path, nbytes: int, chunk: int = 1 << 20) -> float:
    """CPU seconds this process spends writing `nbytes` into a new file in `directory` in
    `chunk`-byte writes (ptcap's drain writes a MiB at a time): what storing a tool's file costs
    the kernel alone, with no capture around it. The best of three."""
    buf = b"\0" * chunk
    best = float("inf")
    for attempt in range(3):
        path = directory / f"write-cost-{attempt}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            t = time.process_time()
            left = nbytes
            while left > 0:
                left -= os.write(fd, buf[:min(left, chunk)])
            best = min(best, time.process_time() - t)
        finally:
            os.close(fd)
            path.unlink()
    return best


def settle(pids: list[int], idle: dict[int, float] | None = None, quiet: float = 0.5,
           timeout: float = 30) -> None:
    """Wait until each of `pids` has read what it was sent: over `quiet` seconds it used no
    more CPU than its idle rate (`idle`, ns per second: its timers) allows, plus 2 ms. Without
    `idle` (the start), until each uses under 2 ms or the same (within 1 ms) twice in a row."""
    deadline = time.monotonic() + timeout
    last = [cpu_ns(p) for p in pids]
    used_before = [None] * len(pids)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = [cpu_ns(p) for p in pids]
        used = [n - l for n, l in zip(now, last)]
        if idle is not None:
            done = all(u < idle[p] * quiet + 2_000_000 for p, u in zip(pids, used))
        else:
            done = all(u < 2_000_000 or (b is not None and abs(u - b) < 1_000_000)
                       for u, b in zip(used, used_before))
        if done:
            return
        last, used_before = now, used


def idle_rates(pids: list[int], seconds: float = 2.0) -> dict[int, float]:
    """CPU each of `pids` uses while nothing is sent (timers, polls), in ns per second."""
    before = {p: cpu_ns(p) for p in pids}
    time.sleep(seconds)
    return {p: (cpu_ns(p) - before[p]) / seconds for p in pids}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=100000, help="packets per second of the flood")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--payload", type=int, default=16, help="UDP payload bytes")
    ap.add_argument("--buffer-kib", type=int, default=32768)
    ap.add_argument("--dir", default="/dev/shm", help="where both files are written")
    ap.add_argument("--ptcap-arg", action="append", default=[], help="extra ptcap argument")
    ap.add_argument("--tree", default=str(ROOT), help="the ptcap tree to run (its .venv)")
    ap.add_argument("--ptcap-file", default="ptcap.pcapng",
                    help="ptcap's file name (a .pcap name writes classic pcap, no process comments)")
    args = ap.parse_args()

    port = free_udp_port()
    expr = f"udp dst port {port}"
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        flooder = build_flooder(work)
        tools = {
            "tcpdump": ["tcpdump", "-i", "lo", "-B", str(args.buffer_kib),
                        "-w", str(work / "tcpdump.pcap"), expr],
            "ptcap": [tree_python(args.tree), "-m", "ptcap.cli", "-i", "lo", "-B", str(args.buffer_kib),
                      *args.ptcap_arg, "-w", str(work / args.ptcap_file), expr],
        }
        procs = {}
        try:
            for name, argv in tools.items():
                procs[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=args.tree)
                wait_listening(procs[name])
            pids = [p.pid for p in procs.values()]
            settle(pids)
            idle = idle_rates(pids)
            before = {n: cpu_ns(p.pid) for n, p in procs.items()}
            forks_before, t0 = forks(), time.monotonic()
            threads_before = thread_ns(procs["ptcap"].pid)
            sent = int(subprocess.run([str(flooder), "127.0.0.1", str(port), str(args.rate), str(args.seconds),
                                       str(args.payload)], capture_output=True, text=True,
                                      check=True).stdout.split()[0])
            # tcpdump writes what it has once a second (its buffer timeout): wait for both to go quiet
            time.sleep(1.2)
            settle(pids, idle)
            used = {n: (cpu_ns(p.pid) - before[n]) / 1e9 for n, p in procs.items()}
            fork_rate = (forks() - forks_before) / (time.monotonic() - t0)
            threads = {t: n - threads_before.get(t, 0) for t, n in thread_ns(procs["ptcap"].pid).items()}
            main_thread = threads.pop(procs["ptcap"].pid, 0) / 1e9
        finally:
            errs = {}
            for name, p in procs.items():
                p.send_signal(signal.SIGINT)
            for name, p in procs.items():
                errs[name] = p.communicate(timeout=120)[1].decode()
        print(f"flood: {sent} datagrams of {args.payload} bytes at {args.rate}/s for {args.seconds} s, both tools at once")
        print(f"host: {fork_rate:.0f} new processes/s meanwhile (ptcap reads a record for each fork, exec and exit)")
        print("idle, before the flood (counted in the figures for the time measured): " + ", ".join(
            f"{n} {idle[p.pid] / 1e6:.1f} ms CPU/s" for n, p in procs.items()))
        print(f"{'tool':>8} {'captured':>9} {'dropped':>8} {'cpu_s':>7} {'us/pkt':>7}")
        per = {}
        for name in tools:
            got = captured(errs[name])
            per[name] = used[name] / got * 1e6 if got > 0 else float("inf")
            print(f"{name:>8} {got:>9} {dropped(errs[name]):>8} {used[name]:>7.3f} {per[name]:>7.3f}")
            if got < 0:
                print(errs[name], file=sys.stderr)
        if not args.ptcap_file.endswith(".pcap"):
            named = commented(work / args.ptcap_file)
            print(f"ptcap's packets carrying a process comment: {named:.0%} (of the first 2000)")
        sizes = {n: (work / f).stat().st_size for n, f in (("tcpdump", "tcpdump.pcap"), ("ptcap", args.ptcap_file))}
        print("bytes written per packet: " + ", ".join(
            f"{n} {sizes[n] / max(captured(errs[n]), 1):.0f}" for n in tools))
        print(f"ptcap's CPU: reader (main thread) {main_thread:.3f} s, its other threads "
              f"(container runtimes' event streams) {sum(threads.values()) / 1e9:.3f} s")
        ratio = per["ptcap"] / per["tcpdump"] if per["tcpdump"] else float("inf")
        print(f"CPU per captured packet: ptcap/tcpdump = {ratio:.2f} (goal <= 1.0)")
        # the floor: what the kernel takes to store each file's bytes, with nothing else running
        store = {n: write_cost(work, sizes[n]) / max(captured(errs[n]), 1) * 1e6 for n in tools}
        print("storing the file's bytes alone (1 MiB writes, same file system), per packet: " + ", ".join(
            f"{n} {store[n]:.3f} us" for n in tools))
        if per["tcpdump"]:
            print(f"ptcap's storing alone / tcpdump's whole cost = {store['ptcap'] / per['tcpdump']:.2f} "
                  f"(the lowest ratio these bytes allow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

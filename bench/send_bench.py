#!/usr/bin/env python3
"""What ptcap's attribution costs each send: a loopback UDP flood (connected socket, sendmmsg)
with no capture, then with `ptcap -i lo --pid IDLE -w /dev/null` loaded from each BPF object
directory given (runs interleaved). The selector matches nothing, so every packet runs the
owner hooks and the capture program's owner lookup but none reaches the ring or Python:
what is left is the kernel's work in the sender's path.

Per setting: the sender's CPU per datagram (its own utime + stime from wait4, the kernel's
loopback path included) and its difference to no capture, then the kernel's run time per run
(kernel.bpf_stats_enabled, switched on for the run and restored) of ptcap's send hook
(tp_btf sock_send_length) and of its tc egress program on lo (the filter program with the
capture program it tail-calls; the flood's datagrams are one leaving copy each).

    sudo .venv/bin/python bench/send_bench.py [--objs LABEL=DIR ...] [--rate 200000]
        [--seconds 3] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from flooding import build_flooder, quiet_target  # noqa: E402
from procstat import wait_listening  # noqa: E402

PORT = 21950


def flood(flooder: Path, rate: int, seconds: float) -> tuple[int, float]:
    """Datagrams sent and the sender's CPU seconds (user + system)."""
    proc = subprocess.Popen([str(flooder), "127.0.0.1", str(PORT), str(rate), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"flood exited {proc.returncode}")
    return int(out.split()[0]), usage.ru_utime + usage.ru_stime


def family(pid: int) -> set[int]:
    """`pid` and its descendants (ptcap's privileged helpers hold some of its programs)."""
    pids, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                todo += [k for k in kids if k not in pids]
                pids.update(kids)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def held(pids: set[int]) -> tuple[set[int], set[int]]:
    """The programs these processes hold (as programs or through links), and of those the
    ones attached by a tcx link to lo's egress."""
    progs, egress = set(), set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if "prog_id" not in info:
                continue
            progs.add(int(info["prog_id"]))
            if info.get("link_type", "").strip() == "tcx" and info.get("ifindex", "").strip() == "1" \
                    and "egress" in info.get("attach_type", ""):
                egress.add(int(info["prog_id"]))
    return progs, egress


def prog_stats(ids: set[int]) -> dict[int, dict]:
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    return {p["id"]: p for p in progs if p["id"] in ids}


def per_run(before: dict, after: dict, ids) -> float:
    time_ns = sum(after[i].get("run_time_ns", 0) - before.get(i, {}).get("run_time_ns", 0) for i in ids if i in after)
    runs = sum(after[i].get("run_cnt", 0) - before.get(i, {}).get("run_cnt", 0) for i in ids if i in after)
    return time_ns / runs if runs else float("nan")


def with_ptcap(objs: Path, idle: int, flooder: Path, rate: int, seconds: float) -> dict:
    env = dict(os.environ, PTCAP_BPF_DIR=str(objs))
    proc = subprocess.Popen([sys.executable, "-m", "ptcap.cli", "-i", "lo", "--pid", str(idle), "-w", "/dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        wait_listening(proc)
        time.sleep(0.3)
        mine, egress = held(family(proc.pid))
        before = prog_stats(mine)
        sent, cpu = flood(flooder, rate, seconds)
        after = prog_stats(mine)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    send_hook = [i for i, p in after.items() if p.get("name", "").startswith("ptcap_sock_send")]
    return {"sent": sent, "cpu": cpu, "hook": per_run(before, after, send_hook),
            "tc": per_run(before, after, egress)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objs", action="append", default=[], metavar="LABEL=DIR",
                    help="a BPF object directory to load (default: this tree's bpf/build)")
    ap.add_argument("--rate", type=int, default=200000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    objs = [tuple(o.split("=", 1)) for o in args.objs] or [("this tree", str(ROOT / "bpf" / "build"))]
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_was = stats_path.read_text().strip()
    results: dict[str, list[dict]] = {"no capture": []}
    with tempfile.TemporaryDirectory() as tmp:
        flooder = build_flooder(Path(tmp))
        with quiet_target(PORT) as idle:
            stats_path.write_text("1")
            try:
                for _ in range(args.runs):
                    sent, cpu = flood(flooder, args.rate, args.seconds)
                    results["no capture"].append({"sent": sent, "cpu": cpu})
                    for label, path in objs:
                        results.setdefault(label, []).append(with_ptcap(Path(path), idle, flooder, args.rate,
                                                                        args.seconds))
            finally:
                stats_path.write_text(stats_was)
    base = statistics.median(r["cpu"] / r["sent"] * 1e9 for r in results["no capture"])
    print(f"{'setting':<24} {'sent':>8} {'sender ns/send':>15} {'added':>7} {'send hook ns':>13} {'tc egress ns':>13}")
    for label, runs in results.items():
        per_send = statistics.median(r["cpu"] / r["sent"] * 1e9 for r in runs)
        sent = statistics.median(r["sent"] for r in runs)
        hook = statistics.median(r.get("hook", float("nan")) for r in runs)
        tc = statistics.median(r.get("tc", float("nan")) for r in runs)
        print(f"{label:<24} {sent:>8.0f} {per_send:>15.0f} {per_send - base:>7.0f} {hook:>13.0f} {tc:>13.0f}")
    print(f"medians of {args.runs} runs at {args.rate}/s for {args.seconds} s each")
    return 0


if __name__ == "__main__":
    sys.exit(main())

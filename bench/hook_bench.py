#!/usr/bin/env python3
"""Cost of capturing drops (--hook kfree_skb) on a busy host, and what the rate limit saves.

A loopback UDP flood to a port nobody listens on: every datagram is dropped (NO_SOCKET), so
every one passes the kfree_skb hook. For each setting the flood runs at the same offered
rate; the table shows the rate the sender reached, what ptcap captured, what it lost to a
full ring and what --hook-rate held back, and the last column the sender's rate relative
to no capture (1.00 = no visible cost). tcpdump cannot see drops, so the baseline is none.

    sudo .venv/bin/python bench/hook_bench.py [--rate 300000] [--seconds 3] [--port 22990]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from capture_bench import wait_listening  # noqa: E402
from flooding import build_flooder  # noqa: E402


def counts(text: str) -> dict[str, int]:
    out = {}
    for key, pattern in (("captured", r"(\d+) packets? captured"), ("lost", r"(\d+) packets? dropped by kernel"),
                         ("limited", r"(\d+) packets? over --hook-rate")):
        m = re.search(pattern, text)
        out[key] = int(m.group(1)) if m else 0
    return out


def run_one(args: list[str] | None, rate: int, seconds: float, port: int, flooder: Path) -> dict:
    proc = None
    if args is not None:
        proc = subprocess.Popen([sys.executable, "-m", "ptcap.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=ROOT)
        wait_listening(proc)
        time.sleep(0.3)
    sent = int(subprocess.run([str(flooder), "127.0.0.1", str(port), str(rate), str(seconds)],
                              capture_output=True, text=True, check=True).stdout.split()[0])
    result = {"pps": sent / seconds, "captured": 0, "lost": 0, "limited": 0}
    if proc is not None:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        result.update(counts(proc.communicate(timeout=120)[1].decode()))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=300000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--port", type=int, default=22990)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "drops.pcapng"
        settings = [
            ("no capture", None),
            ("filter matches, -w", ["--hook", "kfree_skb", "-B", "65536", "-w", str(out), f"udp port {args.port}"]),
            ("filter excludes", ["--hook", "kfree_skb", "-w", str(out), "udp port 1"]),
            ("--hook-rate 1000, -w", ["--hook", "kfree_skb", "--hook-rate", "1000", "-w", str(out),
                                      f"udp port {args.port}"]),
        ]
        flooder = build_flooder(Path(tmp))
        base = None
        print(f"{'setting':<22} {'sender pps':>11} {'captured':>9} {'ring lost':>9} {'limited':>9} {'vs none':>8}")
        for name, ptcap_args in settings:
            r = run_one(ptcap_args, args.rate, args.seconds, args.port, flooder)
            base = base or r["pps"]
            print(f"{name:<22} {r['pps']:>11.0f} {r['captured']:>9} {r['lost']:>9} {r['limited']:>9} "
                  f"{r['pps'] / base:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

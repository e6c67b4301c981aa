"""How long 'ptcap -n -r' takes on a 100,000-packet capture, against 'tcpdump -n -r'.

Usage: python bench/read_bench.py [PCAP] [--runs N]
Without PCAP it writes one: TCP with timestamps (and HTTP-port payloads), UDP/DNS, ICMP, over
Ethernet. Prints each tool's best wall time (output to /dev/null) and the ratio; exit 1 above 3x.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "data"))


def make_capture(path: Path, count: int = 100_000) -> None:
    import synth
    rnd = random.Random(1)
    a, b = "10.0.0.1", "10.0.0.2"
    packets = []
    for i in range(count):
        kind = i % 10
        if kind < 7:
            payload = rnd.choice([b"", b"", b"x" * 100, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", b"y" * 1400])
            sport, dport = 40000 + i % 50, rnd.choice([80, 443, 8443])
            ts = b"\x01\x01\x08\x0a" + struct.pack("!II", i, i + 1)
            seg = synth.tcp(sport, dport, 1000 + 97 * i, 5000 + i, 0x18 if payload else 0x10, payload, options=ts)
            pkt = synth.ip4(a, b, 6, seg, ident=i & 0xFFFF)
        elif kind < 9:
            q = synth.dns_query(i & 0xFFFF, "host%d.example.com" % (i % 100))
            pkt = synth.ip4(a, "8.8.8.8", 17, synth.udp(30000 + i % 1000, 53, q), ident=i & 0xFFFF)
        else:
            pkt = synth.ip4(a, b, 1, synth.icmp4(8, 0, struct.pack("!HH", 1, i & 0xFFFF) + b"p" * 56))
        packets.append(((1_700_000_000 + i // 1000) * 1_000_000_000 + (i % 1000) * 1_000_000, synth.eth(pkt)))
    synth.write_pcap(path, 1, packets)


def best_time(cmd: list[str], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap", nargs="?")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = None
    if args.pcap:
        path = Path(args.pcap)
    else:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "bench-100k.pcap"
        make_capture(path)
    tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
    ptcap = [sys.executable, "-m", "ptcap.cli"]
    t_tcpdump = best_time([tcpdump, "-n", "-r", str(path)], args.runs)
    t_ptcap = best_time([*ptcap, "-n", "-r", str(path)], args.runs)
    ratio = t_ptcap / t_tcpdump
    print(f"capture: {path} ({os.path.getsize(path)} bytes)")
    print(f"tcpdump -n -r: {t_tcpdump:.3f} s")
    print(f"ptcap   -n -r: {t_ptcap:.3f} s")
    print(f"ratio: {ratio:.2f}x (goal: <= 3x)")
    if tmp:
        tmp.cleanup()
    return 0 if ratio <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())

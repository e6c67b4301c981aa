"""How long 'ptcap -n -r' takes on a 100,000-packet capture, against 'tcpdump -n -r'.

Usage: python bench/read_bench.py [PCAP] [--runs N]
Without PCAP it writes one: TCP with timestamps (and HTTP-port payloads), UDP/DNS, ICMP, over
Ethernet. Prints each tool's best wall time and CPU (output to /dev/null) and the ratio; exit 1
above 1.2x for either file. The same packets as pcapng with a process comment on each (what
ptcap writes) are timed too: there ptcap's tcpdump child reads the file's own blocks and ptcap
merges the processes into its lines (tcpdump prints the same packets without them).
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


def best_time(cmd: list[str], runs: int) -> tuple[float, float]:
    """(best wall time, best CPU time of the process and what it waited for)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        assert status == 0, cmd
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, usage.ru_utime + usage.ru_stime)
    return best, best_cpu


def with_process_comments(src: Path, dst: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ptcap.formats.pcapng import PacketWriter
    from ptcap.formats.reader import read_packets
    from ptcap.meta.context import ProcessContext
    from ptcap.pipeline.packet import Direction
    ctx = ProcessContext(pid=4242, cmd="/usr/bin/curl", args="curl http://10.0.0.2/", tid=4242, tname="curl",
                         uid=1000, ppid=100, pcmd="/bin/bash", pargs="bash")
    with open(dst, "wb") as out:
        writer = PacketWriter(out, False, 1)
        for pkt in read_packets(str(src)):
            pkt.ifname, pkt.direction, pkt.context = "eth0", Direction.OUT, ctx
            writer.write(pkt)
        writer.flush()


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
    ng = Path(tmp.name if tmp else tempfile.mkdtemp()) / "bench-100k-processes.pcapng"
    with_process_comments(path, ng)
    rows = []
    for label, file in (("pcap", path), ("pcapng+processes", ng)):
        t_tcpdump = best_time([tcpdump, "-n", "-r", str(file)], args.runs)
        t_ptcap = best_time([*ptcap, "-n", "-r", str(file)], args.runs)
        rows.append((label, file, t_tcpdump, t_ptcap))
        print(f"{label}: {file} ({os.path.getsize(file)} bytes)")
        print(f"  tcpdump -n -r: {t_tcpdump[0]:.3f} s (CPU {t_tcpdump[1]:.3f} s)")
        print(f"  ptcap   -n -r: {t_ptcap[0]:.3f} s (CPU {t_ptcap[1]:.3f} s, its tcpdump child included)")
        print(f"  ratio: {t_ptcap[0] / t_tcpdump[0]:.2f}x wall, {t_ptcap[1] / t_tcpdump[1]:.2f}x CPU")
    ratios = [r[3][0] / r[2][0] for r in rows]
    print(f"wall ratios: pcap {ratios[0]:.2f}x, pcapng+processes {ratios[1]:.2f}x (goal: <= 1.2x each)")
    if tmp:
        tmp.cleanup()
    return 0 if max(ratios) <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())

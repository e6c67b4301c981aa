"""What a user sees: tcpdump lines, ptcpdump's process context, offline filters and counts."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptcap.meta.context import Part, ProcessContext
from ptcap.pipeline.packet import Direction, Packet
from ptcap.printer import Printer, PrintOptions

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402
from test_reader import pcapng_bytes  # noqa: E402

os.environ["TZ"] = "UTC"
time.tzset()

TS = 1_700_000_000_123_456_789
SYN = synth.ip4("10.0.0.1", "10.0.0.2", 6, synth.tcp(5555, 80, 1, 0, 0x02, options=b"\x02\x04\x05\xb4"))
CTX = ProcessContext(pid=4242, cmd="/usr/bin/curl", args="curl http://10.0.0.2/", tid=4243, tname="curl",
                     uid=1000, gid=1000, ppid=100, pcmd="/bin/bash", pargs="bash",
                     container_id="3f" * 32, container_name="web", container_image="nginx:1",
                     pod_name="web-0", pod_namespace="default", pod_uid="u-1")


def line(pkt: Packet, **opts) -> str:
    return Printer(PrintOptions(numeric=1, **opts), io.StringIO()).format_packet(pkt)


def test_live_packet_with_process_prints_like_ptcpdump():
    pkt = Packet(TS, SYN, len(SYN), 101, ifname="eth0", direction=Direction.OUT, context=CTX)
    assert line(pkt, live=True) == (
        "22:13:20.123456 eth0 curl.4242 Out IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S], seq 1, win 64240, "
        "options [mss 1460], length 0, ParentProc [bash.100], Container [web], Pod [web-0.default]\n")


def test_verbose_context_blocks():
    pkt = Packet(TS, SYN, len(SYN), 101, ifname="eth0", direction=Direction.IN, context=CTX)
    text = line(pkt, verbose=1, live=True)
    first, *rest = text.rstrip("\n").split("\n")
    assert first.startswith("22:13:20.123456 eth0 In IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 44)")
    assert rest[1:] == [
        "    Process (pid 4242, cmd /usr/bin/curl, args curl http://10.0.0.2/)",
        "    Thread (tid 4243, name curl)",
        "    User (uid 1000)",
        "    ParentProc (pid 100, cmd /bin/bash, args bash)",
        f"    Container (name web, id {'3f' * 32}, image nginx:1, labels {{}})",
        "    Pod (name web-0, namespace default, UID u-1, labels {}, annotations {})",
    ]


def test_context_selection():
    pkt = Packet(TS, SYN, len(SYN), 101, ifname="eth0", direction=Direction.OUT, context=CTX)
    text = line(pkt, live=True, context=Part.parse("process,pod"))
    assert " eth0 curl.4242 Out IP " in text and text.endswith(", Pod [web-0.default]\n")
    assert "ParentProc" not in text and "Container" not in text
    verbose = line(pkt, live=True, verbose=1, context=Part.parse("thread,user"))
    assert "Thread (tid 4243, name curl)" in verbose and "User (uid 1000)" in verbose and "Process (" not in verbose


def test_live_packet_without_process_prints_like_tcpdump_any():
    pkt = Packet(TS, SYN, len(SYN), 101, ifname="lo", direction=Direction.IN)
    assert line(pkt, live=True).startswith("22:13:20.123456 lo In IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S]")


def test_file_packet_without_context_is_plain_tcpdump():
    pkt = Packet(TS, synth.eth(SYN), len(SYN) + 14, 1, ifname="eth0")
    assert line(pkt) == "22:13:20.123456 IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S], seq 1, win 64240, options [mss 1460], length 0\n"


def ptcap(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptcap.cli", *args], capture_output=True, input=input,
                          env=dict(os.environ, TZ="UTC"))


def test_reading_a_ptcpdump_pcapng_shows_the_context(tmp_path):
    comments = ["PID: 77\nCmd: /usr/bin/wget\nArgs: wget kernel.org",
                "ParentPID: 1\nParentCmd: /sbin/init\nParentArgs: init"]
    path = tmp_path / "ptcpdump.pcapng"
    path.write_bytes(pcapng_bytes(tsresol=9, name="eth0", packets=[(TS, synth.eth(SYN), 2, comments)]))
    res = ptcap("-n", "-r", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode() == ("22:13:20.123456 eth0 wget.77 Out IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S], "
                                   "seq 1, win 64240, options [mss 1460], length 0, ParentProc [init.1]\n")
    plain = ptcap("-n", "-r", str(path), "--context=")
    assert plain.stdout.decode().startswith("22:13:20.123456 IP 10.0.0.1.5555 > ")


def test_offline_filter_count_and_limit(tmp_path):
    src = synth.build_all(tmp_path / "synth")[0]
    tcp = ptcap("-n", "-r", str(src), "tcp", "and", "port", "80")
    lines = tcp.stdout.decode().splitlines()
    assert lines and all(".80" in ln and "Flags [" in ln for ln in lines)
    expected = subprocess.run(["tcpdump", "-n", "-r", str(src), "tcp", "and", "port", "80"],
                              capture_output=True, env=dict(os.environ, TZ="UTC")).stdout.decode().splitlines()
    assert lines == expected
    assert len(ptcap("-n", "-c", "3", "-r", str(src)).stdout.decode().splitlines()) == 3
    counted = ptcap("-r", str(src), "--count", "udp")
    oracle = subprocess.run(["tcpdump", "-r", str(src), "--count", "udp"], capture_output=True).stdout.decode()
    assert counted.stdout.decode() == oracle and oracle.endswith(" packets\n")


def test_bad_filter_is_a_tcpdump_style_error(tmp_path):
    src = synth.build_all(tmp_path / "synth")[0]
    res = ptcap("-r", str(src), "tcp", "port")
    assert res.returncode == 1
    assert res.stderr.decode().splitlines()[-1] == "ptcap: can't parse filter expression: syntax error"


def test_names_resolve_only_without_n(tmp_path):
    pkt = synth.eth(synth.ip4("127.0.0.1", "127.0.0.1", 6, synth.tcp(5555, 80, 1, 0, 0x02)))
    path = tmp_path / "lo.pcap"
    synth.write_pcap(path, 1, [(TS, pkt)])
    named = ptcap("-r", str(path)).stdout.decode()
    tcpdump = subprocess.run(["tcpdump", "-r", str(path)], capture_output=True,
                             env=dict(os.environ, TZ="UTC")).stdout.decode()
    assert named == tcpdump
    assert "localhost" in named and ".http" in named
    assert "localhost" not in ptcap("-n", "-r", str(path)).stdout.decode()


@pytest.mark.parametrize("flags", [["-t"], ["-tt"], ["-ttt"], ["-tttt"], ["-ttttt"], ["-tt", "--nano"], ["-#"], ["-e", "-q"]])
def test_time_and_number_flags_match_tcpdump(tmp_path, flags):
    src = synth.build_all(tmp_path / "synth")[1]
    env = dict(os.environ, TZ="UTC")
    exp = subprocess.run(["tcpdump", "-n", "-r", str(src), *flags], capture_output=True, env=env).stdout.decode()
    assert ptcap("-n", "-r", str(src), *flags).stdout.decode() == exp

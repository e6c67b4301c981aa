"""A user debugging a filter: -d/-dd/-ddd print what tcpdump prints, bad filters fail as in tcpdump."""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptcap.filter import compiler as pf
from ptcap.errors import PtcapError
from ptcap.cli.filterdump import dump_main as dump_main_fn
from ptcap.kernel.interfaces import filter_linktype

CORPUS = Path("/work/shared/corpus/filters")
TCPDUMP = shutil.which("tcpdump")

pytestmark = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is the oracle")

DUMP_EXPRESSIONS = [
    "", "tcp port 80", "ip6 and udp", "vlan 100 and tcp", "portrange 1000-2000",
    "ip broadcast", "ether multicast", "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420", "ip6 protochain 17", "greater 200",
    "len % 7 = 3 or ip[2:2] / ip[1] > 4", "not (host 10.0.0.1 or net 192.168.0.0/16)",
    "icmp6[icmp6type] == icmp6-neighborsolicit", "mpls and ip", "geneve",
]


def ptcap(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptcap.cli", *argv], capture_output=True,
                          text=True, timeout=30)


def tcpdump(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([TCPDUMP, *argv], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("level", ["-d", "-dd", "-ddd"])
def test_dump_is_byte_identical_to_tcpdump(level):
    for expr in DUMP_EXPRESSIONS:
        mine, theirs = ptcap(level, expr), tcpdump(level, expr)
        assert theirs.returncode == 0, theirs.stderr
        assert (mine.returncode, mine.stdout, mine.stderr) == (0, theirs.stdout, theirs.stderr), expr


def test_dump_follows_snaplen_and_interface():
    assert ptcap("-d", "-s", "96", "tcp").stdout == tcpdump("-d", "-s", "96", "tcp").stdout
    if os.geteuid() == 0:   # tcpdump opens the device to learn its link type
        mine, theirs = ptcap("-dd", "-i", "lo", "udp port 53"), tcpdump("-dd", "-i", "lo", "udp port 53")
        assert (mine.stdout, mine.stderr) == (theirs.stdout, theirs.stderr)


def dump_main(capsys, expr: str, **options) -> tuple[int | str, str, str]:
    """ptcap.cli.filterdump.dump_main as the CLI calls it (the CLI gates --backend itself)."""
    args = argparse.Namespace(dump_filter=1, debug_filter=False, expression=expr.split(),
                              filter_file=None, interfaces=None, backend="tc", snaplen=262144)
    vars(args).update(options)
    try:
        rc = dump_main_fn(args)
    except PtcapError as e:
        rc = f"ptcap: {e}"
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_raw_ip_dump_matches_tcpdump_on_dlt_raw(capsys):
    for expr in ("ip", "tcp port 80", "ip6 and icmp6", "ip protochain 6"):
        rc, out, err = dump_main(capsys, expr, backend="cgroup-skb")
        assert (rc, out, err) == (0, tcpdump("-d", "-y", "RAW", expr).stdout, "")
    vlan = dump_main(capsys, "vlan", backend="cgroup-skb")
    assert vlan[0] == "ptcap: no VLAN support for Raw IP" == "ptcap: " + \
        tcpdump("-d", "-y", "RAW", "vlan").stderr.strip().removeprefix("tcpdump: ")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a tun device needs root")
def test_l3_device_gets_raw_ip_framing():
    name = f"ptf{os.getpid() % 100000}"
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tun"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        assert filter_linktype(name) == pf.LINKTYPE_RAW
        mine, theirs = ptcap("-d", "-i", name, "tcp port 22"), tcpdump("-d", "-i", name, "tcp port 22")
        assert theirs.stdout.startswith("(000) ldb      [0]")
        assert mine.stdout == theirs.stdout
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)
    assert filter_linktype("lo") == pf.LINKTYPE_ETHERNET
    assert filter_linktype("lo", backend="cgroup-skb") == pf.LINKTYPE_RAW


def invalid_cases() -> list[tuple[str, str]]:
    with open(CORPUS / "invalid.tsv", newline="") as f:
        return [(row["expression"], row["tcpdump_error"])
                for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def test_invalid_expressions_fail_in_tcpdumps_words():
    cases = invalid_cases()
    assert len(cases) == 14
    for expr, expected in cases:
        assert expected.startswith("tcpdump: ")
        want = "ptcap: " + expected[len("tcpdump: "):] + "\n"
        result = ptcap("-d", expr)
        assert result.returncode == 1, expr
        assert result.stdout == ""
        assert result.stderr == "Warning: assuming Ethernet\n" + want, expr


def test_invalid_expression_stops_a_capture_before_it_starts():
    result = ptcap("-i", "lo", "-w", os.devnull, "port 99999")
    assert (result.returncode, result.stderr) == (1, "ptcap: illegal port number 99999 > 65535\n")


def test_filter_file_as_tcpdump_reads_it(tmp_path):
    path = tmp_path / "filter"
    path.write_text("# web traffic only\ntcp port 80 # plain http\n  or tcp port 443\n")
    mine, theirs = ptcap("-d", "-F", str(path), "udp"), tcpdump("-d", "-F", str(path), "udp")
    assert theirs.returncode == 0
    assert (mine.returncode, mine.stdout, mine.stderr) == (0, theirs.stdout, theirs.stderr)
    assert "#0x1bb" in mine.stdout and "#0x11" not in mine.stdout   # the command-line 'udp' is ignored
    missing = ptcap("-d", "-F", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.endswith(f"ptcap: can't open {tmp_path / 'nope'}: No such file or directory\n")


def test_debug_filter_prints_the_ebpf():
    result = ptcap("--debug-filter", "tcp port 80")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "call bpf_skb_load_bytes#26" in result.stdout
    assert lines[-1].endswith("exit")
    assert lines[1].startswith("   0: (bf) r6 = r1")


def _null_ipv6_udp_pcap(path: Path, families: list[int], order: str = "<") -> Path:
    """A DLT_NULL capture (as BSD and macOS write loopback) of IPv6 UDP datagrams whose
    4-byte headers hold each of `families` in the writer's byte order: BSD's AF_INET6 is 24,
    28 or 30, by system."""
    import struct
    blob = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0)
    for i, family in enumerate(families):
        udp = struct.pack("!HHHH", 5000 + i, 53, 8 + 4, 0) + b"ping"
        ip6 = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + bytes(15) + b"\1" + bytes(15) + b"\1"
        frame = struct.pack(order + "I", family) + ip6 + udp
        blob += struct.pack(order + "IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_bsd_loopback_file_is_filtered_as_tcpdump_filters_it(tmp_path, order):
    """tcpdump -r compiles on the file's own handle, where libpcap matches DLT_NULL's family in
    the writer's byte order and every BSD value of AF_INET6; ptcap compiled on a dead handle
    (Linux's 10 alone, host order): -d differed and, filtering a file itself (-r with -w, or a
    pcapng), it dropped a BSD machine's IPv6 packets."""
    src = _null_ipv6_udp_pcap(tmp_path / "bsd-lo.pcap", [24, 28, 30, 10, 2], order)
    for expr in ("udp", "ip6", "ip"):
        assert ptcap("-d", "-r", str(src), expr).stdout == tcpdump("-d", "-r", str(src), expr).stdout
        mine, theirs = tmp_path / "mine.pcap", tmp_path / "theirs.pcap"
        assert ptcap("-r", str(src), "-w", str(mine), expr).returncode == 0
        assert tcpdump("-r", str(src), "-w", str(theirs), expr).returncode == 0
        count = lambda p: len(tcpdump("-n", "-r", str(p)).stdout.splitlines())   # noqa: E731
        assert count(mine) == count(theirs), expr


@pytest.mark.parametrize("expression", ["ip6 and udp", "vlan", "ether host 1:2:3:4:5:6"])
@pytest.mark.parametrize("how", ["stdin", "write"])
def test_a_filter_is_compiled_before_the_first_packet_is_read(tmp_path, expression, how):
    """A filter tcpdump refuses for the file's link type ('expression rejects all packets',
    'no VLAN support for Raw IPv4') is its error before any packet, as tcpdump says it: ptcap
    reading the file itself compiled it at the first packet, so a file without packets exited
    0 and a broken first packet said its read error instead (tcpdump's extract_read2_asan)."""
    import struct
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 228, 0, 31) + struct.pack("<I", 20)
    bad = struct.pack("<IIIIIII", 6, 32 + 36, 0, 0, 0, 34, 34) + b"\x45" + b"\0" * 35 + struct.pack("<I", 32 + 36)
    path = tmp_path / "raw.pcapng"
    for data in (shb + idb, shb + idb + bad):
        path.write_bytes(data)
        want = subprocess.run([TCPDUMP, "-n", "-r", "-", expression], input=data, capture_output=True)
        if how == "stdin":
            got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", "-r", "-", expression], input=data,
                                 capture_output=True)
        else:
            got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(path), "-w", str(tmp_path / "o"),
                                  expression], capture_output=True)
        assert got.stderr.splitlines()[-1] == want.stderr.splitlines()[-1].replace(b"tcpdump: ", b"ptcap: ")
        assert got.returncode == want.returncode == 1

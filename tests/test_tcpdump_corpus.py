"""Byte for byte: 'ptcap -r FILE FLAGS' prints what 'tcpdump -r FILE FLAGS' prints, for every
capture of tcpdump's own test corpus (shared/corpus/tcpdump) and every printing flag.

Three paths are held to it: the CLI on the file itself (a file without process information
goes to tcpdump as it is), the CLI reading the same packets as pcapng from stdin (ptcap reads,
filters and feeds a tcpdump child packet by packet, cutting its output at marker packets), and
the marker-mode decoder fed directly with every flag set.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptcap.cli.main import build_parser
from ptcap.formats.pcapng import PacketWriter
from ptcap.formats.reader import CaptureReader, read_packets
from ptcap.sinks.blockfeed import BlockPrinter
from ptcap.sinks.tcpdump import Decoder
from ptcap.sinks.tcpdump_child import PrintFlags

ROOT = Path(__file__).resolve().parent.parent
SHARED = next((p for p in (Path(os.environ.get("PTCAP_SHARED", ROOT.parent / "shared")),
                            ROOT.parent.parent / "shared") if p.exists()), ROOT.parent / "shared")
CORPUS = SHARED / "corpus" / "tcpdump"
TCPDUMP = "/usr/bin/tcpdump"
ENV = dict(os.environ, TZ="UTC")
ESP = "0x12345678@192.1.2.45 3des-cbc-hmac96:0x4043434545464649494a4a4c4c4f4f515152525454575758"

# every printing flag tcpdump has (and the combinations its test suite uses)
FLAGS = ["", "-n", "-nn", "-e", "-q", "-t", "-tt", "-ttt", "-tttt", "-ttttt", "-v", "-vv", "-vvv",
         "-x", "-xx", "-X", "-XX", "-A", "-AA", "-S", "-#", "-K", "-N", "-b", "-H", "-u",
         "--time-stamp-precision=nano", "--nano -tttt", "-T snmp", "-T rtp -v", "-e -XX -#",
         "-ttt -v -A", "-vvv -X -#", "-n -S -e -v", "-q -t -x"]
FILTERS = [["-c", "2"], ["-c", "1", "-v"], ["tcp"], ["udp", "or", "icmp6"], ["not", "ip6"], ["-#", "ip"]]


def corpus() -> list[Path]:
    pcaps = sorted((CORPUS / "pcaps").glob("*.pcap*"))
    assert len(pcaps) >= 28, f"tcpdump's corpus is missing ({CORPUS})"
    return pcaps


def cases() -> list[tuple[str, str, list[str]]]:
    with open(CORPUS / "cases.tsv") as f:
        return [(r["name"], r["pcap"], (r["options"] or "").split()) for r in csv.DictReader(f, delimiter="\t")]


def tcpdump(path: Path, flags: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([TCPDUMP, "-r", str(path), *flags], capture_output=True, env=ENV)


def ptcap(args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptcap.cli", *args], capture_output=True, env=ENV,
                          input=input, cwd=ROOT)


def _split(flags: str) -> list[str]:
    if flags.startswith("-E"):
        return ["-E", ESP]
    return flags.split()


@pytest.mark.parametrize("name,pcap,flags", cases(), ids=[c[0] for c in cases()])
def test_corpus_cases_identical(name, pcap, flags):
    path = CORPUS / "pcaps" / pcap
    want = tcpdump(path, flags)
    got = ptcap(["-r", str(path), *flags])
    assert got.stdout == want.stdout
    assert got.stderr.decode().splitlines()[0] == want.stderr.decode().splitlines()[0]
    assert got.returncode == want.returncode


@pytest.mark.parametrize("flags", FLAGS + ["-E"] + [" ".join(f) for f in FILTERS])
def test_every_flag_on_the_cli(flags):
    """Every flag reaches tcpdump and means the same (over a handful of captures that
    exercise it: TCP with payloads, DNS, PPP)."""
    argv = _split(flags)
    for pcap in ("print-flags.pcap", "dns_tcp.pcap", "icmp_inft_name_length_zero.pcap"):
        path = CORPUS / "pcaps" / pcap
        want = tcpdump(path, argv)
        got = ptcap(["-r", str(path), *argv])
        assert got.stdout == want.stdout, (pcap, flags)
        assert got.returncode == want.returncode


def _args(flags: list[str]):
    return build_parser().parse_intermixed_args([*flags, "-r", "x"])


def _decoded(path: Path, flags: list[str]) -> bytes:
    out = io.BytesIO()
    packets = list(read_packets(str(path)))
    decoder = Decoder(PrintFlags.from_args(_args(flags)), out, 262144, lossless=True)
    for p in packets:
        decoder.put(p.ts_ns, p.linktype, p.data, p.orig_len)
    decoder.close()
    return out.getvalue()


@pytest.mark.parametrize("flags", FLAGS + ["-E"])
def test_marker_mode_identical_for_every_file_and_flag(flags, monkeypatch):
    """Packets fed one by one with markers between them, the markers' lines removed: the
    output is tcpdump's for every corpus file."""
    monkeypatch.setenv("TZ", "UTC")
    argv = _split(flags)
    for path in corpus():
        assert _decoded(path, argv) == tcpdump(path, argv).stdout, (path.name, flags)


def _as_pcapng(path: Path) -> bytes:
    out = io.BytesIO()
    packets = list(read_packets(str(path)))
    writer = PacketWriter(out, False, packets[0].linktype if packets else 1)
    for p in packets:
        writer.write(p)
    writer.flush()
    return out.getvalue()


def _block_printed(data: bytes, flags: list[str]) -> bytes:
    out = io.BytesIO()
    reader = CaptureReader(io.BytesIO(data), "")
    BlockPrinter(reader, PrintFlags.from_args(_args(flags)), lambda ctx, name, direction: (b"", b"", b""),
                 out).run()
    return out.getvalue()


@pytest.mark.parametrize("flags", FLAGS + ["-E"])
def test_file_blocks_path_identical_for_every_file_and_flag(flags, monkeypatch):
    """A pcapng file read by one tcpdump child from its own blocks (marker blocks between
    groups, the groups cut at lines or -# numbers, doubtful ones printed again): with no field
    to add, the output is tcpdump's for every corpus file."""
    monkeypatch.setenv("TZ", "UTC")
    argv = _split(flags)
    for path in corpus():
        data = _as_pcapng(path)
        assert _block_printed(data, argv) == tcpdump(path, argv).stdout, (path.name, flags)


@pytest.mark.parametrize("flags", ["", "-v", "-e -XX -#", "-ttt -A", "-c 2", "-# tcp", "--count udp"])
def test_cli_marker_path_identical(flags):
    """`ptcap -r -` with pcapng on stdin goes through ptcap's reader, filter, -c and -#
    and the marker-cut child: still tcpdump's output for files without process information."""
    argv = flags.split()
    for path in corpus():
        want = tcpdump(path, argv)
        got = ptcap(["-r", "-", *argv], input=_as_pcapng(path))
        assert got.stdout == want.stdout, (path.name, flags, got.stderr)


@pytest.mark.parametrize("linktype", [104, 8, 105, 127, 239, 107, 178])
def test_pcapng_on_stdin_of_a_link_type_ptcap_cannot_mark(linktype):
    """pcapng on stdin whose link type ptcap has no marker for (Cisco HDLC, SLIP, 802.11,
    NFLOG, Frame Relay, Juniper: 60 of tcpdump's own tests): tcpdump's output, as for a file
    without process information; ptcap printed nothing ("ptcap cannot add its fields"), exit 1."""
    packets = list(read_packets(str(CORPUS / "pcaps" / "print-flags.pcap")))[:12]
    out = io.BytesIO()
    writer = PacketWriter(out, False, linktype)
    for p in packets:
        p.linktype = linktype
        writer.write(p)
    writer.flush()
    data = out.getvalue()
    for flags in ([], ["-v", "-c", "5"], ["-e", "len > 100"]):
        want = subprocess.run([TCPDUMP, "-n", "-r", "-", *flags], input=data, capture_output=True, env=ENV)
        got = ptcap(["-n", "-r", "-", *flags], input=data)
        assert got.stdout == want.stdout and want.stdout, (flags, got.stderr)
        assert (got.stderr, got.returncode) == (want.stderr, want.returncode)


@pytest.mark.parametrize("linktype", [104, 105, 239])
def test_a_file_with_processes_of_a_link_type_ptcap_cannot_mark(tmp_path, linktype):
    """A pcapng with process comments whose link type ptcap has no marker for: tcpdump's lines
    alone, after one line that says why; ptcap printed nothing, exit 1."""
    from ptcap.meta.context import ProcessContext
    out = io.BytesIO()
    writer = PacketWriter(out, False, linktype)
    for p in list(read_packets(str(CORPUS / "pcaps" / "print-flags.pcap")))[:12]:
        p.linktype = linktype
        p.context = ProcessContext.from_comments(["PID: 4242\nCmd: /usr/bin/sender\n"])
        writer.write(p)
    writer.flush()
    path = tmp_path / "f.pcapng"
    path.write_bytes(out.getvalue())
    for flags in ([], ["-v", "-c", "5"]):
        want = tcpdump(path, ["-n", *flags])
        got = ptcap(["-n", "-r", str(path), *flags])
        assert got.stdout == want.stdout and want.stdout, (flags, got.stderr)
        note = f"ptcap: link-type {linktype}: ptcap cannot add its fields to tcpdump's lines for this link type; " \
               "they are tcpdump's alone\n"
        assert (got.stderr, got.returncode) == (note.encode() + want.stderr, want.returncode)

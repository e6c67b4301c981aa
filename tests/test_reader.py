"""Reading captures: every pcap magic, pcapng sections/interfaces/options, stdin, and errors."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ptcap.meta.context import ProcessContext
from ptcap.errors import PtcapError
from ptcap.pipeline.packet import Direction
from ptcap.formats.reader import CaptureReader, read_packets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
import synth  # noqa: E402

PKT = synth.eth(synth.ip4("10.0.0.1", "10.0.0.2", 17, synth.udp(1000, 2000, b"hello")))


def pcap_bytes(order: str, nano: bool, packets, linktype: int = 1, snaplen: int = 262144) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts_ns, data in packets:
        frac = ts_ns % 10**9 if nano else ts_ns % 10**9 // 1000
        out.append(struct.pack(order + "IIII", ts_ns // 10**9, frac, len(data), len(data)) + data)
    return b"".join(out)


def _opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(order: str, btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def pcapng_bytes(order: str = "<", tsresol: int | None = None, name: str = "eth0",
                 packets=(), extra_blocks: bytes = b"", application: str | None = None) -> bytes:
    shb_opts = _opt(order, 4, application.encode()) if application else b""
    shb = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts + _opt(order, 0, b""))
    opts = _opt(order, 2, name.encode())
    if tsresol is not None:
        opts += _opt(order, 9, bytes([tsresol]))
    idb = _block(order, 1, struct.pack(order + "HHI", 1, 0, 262144) + opts + _opt(order, 0, b""))
    out = [shb, idb, extra_blocks]
    for ticks, data, flags, comments in packets:
        body = struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
        body += data + b"\0" * (-len(data) % 4)
        options = b""
        if flags is not None:
            options += _opt(order, 2, struct.pack(order + "I", flags))
        for c in comments:
            options += _opt(order, 1, c.encode())
        if options:
            options += _opt(order, 0, b"")
        out.append(_block(order, 6, body + options))
    return b"".join(out)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_every_magic(tmp_path, order, nano):
    ts = 1_700_000_000_123_456_789 if nano else 1_700_000_000_123_456_000
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(order, nano, [(ts, PKT), (ts + 1000, PKT[:20])]))
    pkts = list(read_packets(str(path)))
    assert [p.ts_ns for p in pkts] == [ts, ts + 1000]
    assert pkts[0].data == PKT and pkts[1].data == PKT[:20] and pkts[0].linktype == 1


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_direction_and_process_comments(tmp_path, order):
    comments = ["PID: 1234\nCmd: /usr/bin/curl\nArgs: curl http://x", "ParentPID: 99\nParentCmd: /bin/bash\nParentArgs: bash"]
    data = pcapng_bytes(order, tsresol=9, name="veth0", packets=[
        (1_700_000_000_000_000_001, PKT, 2, comments),   # outbound, with ptcpdump comments
        (1_700_000_000_000_000_002, PKT, 1, []),
        (1_700_000_000_000_000_003, PKT, None, []),
    ], extra_blocks=_block(order, 0x0BAD, b"\0" * 8))  # an unknown block is skipped
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    pkts = list(read_packets(str(path)))
    assert [p.direction for p in pkts] == [Direction.OUT, Direction.IN, Direction.UNKNOWN]
    assert pkts[0].ts_ns == 1_700_000_000_000_000_001
    assert pkts[0].ifname == "veth0"
    ctx = pkts[0].context
    assert isinstance(ctx, ProcessContext) and ctx.pid == 1234 and ctx.comm == "curl" and ctx.ppid == 99
    assert pkts[1].context is None


def test_pcapng_default_resolution_is_microseconds(tmp_path):
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapng_bytes(packets=[(1_700_000_000_000_001, PKT, None, [])]))
    (pkt,) = read_packets(str(path))
    assert pkt.ts_ns == 1_700_000_000_000_001_000


def test_tshark_written_pcapng_reads_like_the_pcap(tmp_path):
    if subprocess.run(["which", "editcap"], capture_output=True).returncode != 0:
        pytest.skip("editcap (wireshark-common) is not installed")
    src = synth.build_all(tmp_path / "synth")[0]
    ng = tmp_path / "x.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(src), str(ng)], check=True)
    a = [(p.ts_ns, p.data, p.orig_len) for p in read_packets(str(src))]
    b = [(p.ts_ns, p.data, p.orig_len) for p in read_packets(str(ng))]
    assert a == b and len(a) > 20


@pytest.mark.parametrize("content, message", [
    (b"hello world, not a capture", "unknown file format"),
    (b"", "truncated dump file; tried to read 4 file header bytes, only got 0"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated dump file; tried to read 24 file header bytes, only got 2"),  # tcpdump's
])
def test_non_capture_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(PtcapError, match=message):
        list(read_packets(str(path)))


def test_truncated_record_after_good_packets(tmp_path):
    data = pcap_bytes("<", False, [(10**18, PKT), (10**18, PKT)])
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-5])
    it = read_packets(str(path))
    assert next(it).data == PKT
    with pytest.raises(PtcapError, match="truncated dump file; tried to read 47 captured bytes, only got 42"):
        next(it)


def test_cli_errors_and_stdin(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"garbage!" * 10)
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "ptcap.cli", *a], capture_output=True, **kw)  # noqa: E731
    res = run("-r", str(bad))
    assert res.returncode == 1 and res.stderr.decode() == "ptcap: unknown file format\n"
    res = run("-r", str(tmp_path / "missing"))
    assert res.returncode == 1 and res.stderr.decode().strip() == f"ptcap: {tmp_path / 'missing'}: No such file or directory"
    good = pcap_bytes("<", False, [(1_700_000_000 * 10**9, PKT)])
    res = run("-n", "-r", "-", input=good)
    assert res.returncode == 0
    assert res.stdout.decode().endswith("IP 10.0.0.1.1000 > 10.0.0.2.2000: UDP, length 5\n")
    assert "reading from file -, link-type EN10MB (Ethernet), snapshot length 262144" in res.stderr.decode()


def test_reader_streams_without_reading_everything(tmp_path):
    class Counting:
        def __init__(self, data):
            self.data, self.pos, self.max_read = data, 0, 0

        def read(self, n):
            self.max_read = max(self.max_read, n)
            chunk = self.data[self.pos:self.pos + n]
            self.pos += len(chunk)
            return chunk

    big = pcap_bytes("<", False, [(10**18, PKT)] * 50000)  # ~3 MB
    src = Counting(big)
    reader = CaptureReader(src)
    first = next(iter(reader))
    assert first.data == PKT and src.pos < len(big)


@pytest.mark.root
def test_read_select_and_write_again(peers, tmp_path):
    """`ptcap -r FILE [selectors] -w OUT EXPR`, as tcpdump -r -w: the selected packets are
    written again; pcapng keeps their interface, direction and process, .pcap is tcpdump's."""
    from conftest import Capture, comments, free_port, ptcap_argv, tshark_fields
    port = str(free_port())
    server = peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    src = tmp_path / "in.pcapng"
    cap = Capture("-i", "lo", "--loopback-twice", "-w", str(src), "-c", "8", f"udp port {port}")
    client.say("send 7")
    client.say("send 7")
    cap.finish()

    def ptcap(*args):
        res = subprocess.run(ptcap_argv("-r", str(src), *args), capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stdout

    # the client's packets, by the process comments of the file: every copy that names it
    # at either end (both copies of its 4 packets), with -Q only its own (its sent copies)
    lines = ptcap("-n", "--pid", str(client.pid)).splitlines()
    assert len(lines) == 8 and all(f"{client.pid}" in l for l in lines), lines
    assert len(ptcap("-n", "--pid", str(client.pid), "-Q", "out").splitlines()) == 2

    out = tmp_path / "out.pcapng"
    assert ptcap("-Q", "in", "-w", str(out), f"udp dst port {port}") == ""      # -w: no lines
    rows = tshark_fields(out, "frame.comment", "frame.packet_flags_direction", "frame.interface_name")
    assert len(rows) == 2
    for text, direction, iface in rows:
        assert comments(text)["PID"] == str(server.pid) and int(direction, 16) == 1 and iface == "lo"

    classic = tmp_path / "out.pcap"
    ptcap("-w", str(classic), "--pid", str(server.pid))
    res = subprocess.run(["tcpdump", "-n", "-r", str(classic)], capture_output=True, text=True)
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 8, res.stderr     # every copy names it

    bad = subprocess.run(ptcap_argv("-r", str(src), "-w", "/dev/full"), capture_output=True, text=True)
    assert (bad.returncode, bad.stderr.splitlines()[-1]) == (1, "ptcap: /dev/full: No space left on device")


@pytest.mark.root
def test_read_selects_either_end_as_the_capture_did(peers, tmp_path):
    """A local conversation's one copy names both ends, and a capture selects it by either
    (`ptcap --pid N`, `--container-name` of a container talking to a host process): -r
    selects the same packets from the file (it took only the copies whose own process
    matched: none of a host server's packets to a container's client)."""
    from conftest import Capture, free_port, ptcap_argv
    port = str(free_port())
    server = peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    src = tmp_path / "in.pcapng"
    cap = Capture("-i", "lo", "-w", str(src), "-c", "4", "--pid", str(client.pid), f"udp port {port}")
    client.say("send 7")
    client.say("send 7")
    cap.finish()
    res = subprocess.run(ptcap_argv("-r", str(src), "-n", "--pid", str(client.pid)), capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 4, lines
    assert sum(f"udp-server.{server.pid} " in l or f".{server.pid} " in l for l in lines) == 2, lines


# ---- libpcap's limits and its "reading from file" line (issue 15) --------------------------------

def _blk(t: int, body: bytes, total: int | None = None) -> bytes:
    total = 12 + len(body) if total is None else total
    return struct.pack("<II", t, total) + body + struct.pack("<I", total)


_SHB_BODY = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
_SHB = _blk(0x0A0D0D0A, _SHB_BODY)


def _idb(linktype: int = 1, snaplen: int = 262144) -> bytes:
    return _blk(1, struct.pack("<HHI", linktype, 0, snaplen))


BAD_FILES = {
    "shb-2g.pcapng": struct.pack("<II", 0x0A0D0D0A, 0x80000000) + _SHB_BODY + b"\0" * 100,
    "shb-20.pcapng": struct.pack("<II", 0x0A0D0D0A, 20) + _SHB_BODY,
    "epb-2g.pcapng": _SHB + _idb() + struct.pack("<II", 6, 0x80000000) + b"\0" * 100,
    "epb-20m.pcapng": _SHB + _idb() + struct.pack("<II", 6, 20 << 20) + b"\0" * 100,
    "no-idb.pcapng": _SHB,
    # a packet block before the first interface, too short to read: libpcap says the first
    # (it looks for an interface before it reads a packet); ptcap said "too short"
    "pb-before-idb.pcapng": _SHB + _blk(2, b"abcd") + _idb(),
    "epb-before-idb.pcapng": _SHB + _blk(6, b"abcd") + _idb(),
    "caplen-2g.pcap": struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                      + struct.pack("<IIII", 1, 0, 0x80000000, 60) + b"\0" * 60,
    "caplen-over-max.pcap": struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1)
                            + struct.pack("<IIII", 1, 0, 300000, 300000) + b"\0" * 60,
}
GOOD_HEADERS = {
    "snap0.pcap": struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0, 1),
    "snap-huge.pcap": struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0x7FFFFFFF, 147),
    "snap-neg.pcap": struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0x80000000, 1),
    "idb-snap0.pcapng": _SHB + _idb(1, 0),
    "idb-raw.pcapng": _SHB + _idb(101, 1500),
    "idb-huge.pcapng": _SHB + _idb(1, 0x7FFFFFFF),
    "idb-sll2.pcapng": _SHB + _idb(276, 65535),
}


def _limited(limit: int):
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _ptcap_r(path, stdin: bytes | None = None, limit: int = 1 << 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(path)], capture_output=True, input=stdin,
                          preexec_fn=_limited(limit))


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_oversized_and_broken_blocks_are_refused_as_libpcap_does(tmp_path, name):
    """One line in tcpdump's words, exit 1, under a 1 GiB address-space limit (a 2 GB block
    length is never a read size), whether ptcap or its tcpdump child reads the file."""
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    oracle = subprocess.run(["tcpdump", "-r", "-"], input=BAD_FILES[name], capture_output=True)
    want = [ln.replace("tcpdump: ", "ptcap: ", 1) for ln in oracle.stderr.decode().splitlines()
            if not ln.startswith("reading from file")]
    assert oracle.returncode == 1 and len(want) == 1
    for got in (_ptcap_r(path), _ptcap_r("-", BAD_FILES[name])):
        lines = [ln for ln in got.stderr.decode().splitlines() if not ln.startswith("reading from file")]
        assert lines == want and got.returncode == 1, got.stderr
        assert b"Traceback" not in got.stderr and got.stdout == b""


@pytest.mark.parametrize("name", sorted(GOOD_HEADERS))
def test_reading_from_file_line_is_tcpdumps(tmp_path, name):
    """The real snapshot length and link-type name, from ptcap's reader (stdin) and from tcpdump
    itself (a file without process information)."""
    path = tmp_path / name
    path.write_bytes(GOOD_HEADERS[name])
    oracle = subprocess.run(["tcpdump", "-r", str(path)], capture_output=True)
    want = oracle.stderr.decode().splitlines()[0]
    assert _ptcap_r(path).stderr.decode().splitlines()[0] == want
    assert _ptcap_r("-", GOOD_HEADERS[name]).stderr.decode().splitlines()[0] == \
        want.replace(f"reading from file {path},", "reading from file -,")


def _commented_file(n: int = 40) -> tuple[bytes, list[int]]:
    """A pcapng of `n` UDP packets, each with a ptcpdump-style process comment; and where
    each block starts."""
    comment = "PID: 4242\nCmd: /usr/bin/sender\nArgs: sender --fast\n"
    data = pcapng_bytes(packets=[(1_700_000_000_000_000 + i, PKT, 2, [comment]) for i in range(n)])
    offsets, off = [], 0
    while off < len(data):
        offsets.append(off)
        off += struct.unpack_from("<I", data, off + 4)[0]
    return data, offsets


def _damaged() -> dict[str, bytes]:
    data, at = _commented_file()
    blk = at[2 + 25]                # the 26th packet's block (after the SHB and the IDB)
    total = struct.unpack_from("<I", data, blk + 4)[0]
    bad_trailer = bytearray(data)
    struct.pack_into("<I", bad_trailer, blk + total - 4, total + 4)
    bad_length = bytearray(data)
    struct.pack_into("<I", bad_length, blk + 4, total + 8)      # a multiple of 4, the trailer disagrees
    over_snaplen = bytearray(data)
    struct.pack_into("<I", over_snaplen, blk + 20, 300000)                 # the captured length
    over_block = bytearray(data)
    struct.pack_into("<I", over_block, blk + 20, len(PKT) + 100)
    return {"trailer": bytes(bad_trailer), "length": bytes(bad_length),
            "caplen-over-snaplen": bytes(over_snaplen), "caplen-over-block": bytes(over_block),
            "cut-in-header": data[:blk + 3], "cut-in-body": data[:blk + 20]}


@pytest.mark.parametrize("name", sorted(_damaged()))
def test_a_damaged_file_with_processes_prints_what_tcpdump_prints_then_its_error(tmp_path, name):
    """A block libpcap refuses half-way through a file with process comments: every packet
    before it is printed (with its process), then tcpdump's own error, exit 1."""
    path = tmp_path / f"{name}.pcapng"
    path.write_bytes(_damaged()[name])
    oracle = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True)
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", "-r", str(path)], capture_output=True)
    lines = got.stdout.decode().splitlines()
    assert len(lines) == len(oracle.stdout.decode().splitlines()) == 25, got.stderr
    assert all("sender.4242" in line for line in lines)
    want = oracle.stderr.decode().splitlines()[-1].replace("tcpdump: ", "ptcap: ", 1)
    assert got.stderr.decode().splitlines()[-1] == want and got.returncode == oracle.returncode == 1


def _pcap_header(major: int = 2, minor: int = 4, linktype: int = 1, magic: int = 0xA1B2C3D4) -> bytes:
    return struct.pack("<IHHiIII", magic, major, minor, 0, 0, 262144, linktype)


def _record(modified: bool = False) -> bytes:
    extra = struct.pack("<IHBB", 1, 0x0800, 0, 0) if modified else b""     # ifindex, protocol, type
    return struct.pack("<IIII", 1_700_000_000, 5, len(PKT), len(PKT)) + extra + PKT


PCAP_HEADERS = {
    "version 1.4 (archaic)": _pcap_header(1, 4) + _record(),
    "version 2.1284": _pcap_header(2, 1284) + _record(),
    "a header of 20 bytes": _pcap_header()[:20],
    "link type 65535": _pcap_header(linktype=65535) + _record(),
    "link type 65537 (above a pcapng IDB's 16 bits)": _pcap_header(linktype=65537) + _record(),
    "Kuznetzov's modified format": _pcap_header(magic=0xA1B2CD34) + _record(modified=True),
}


@pytest.mark.parametrize("name", sorted(PCAP_HEADERS))
def test_a_pcap_header_is_judged_as_libpcap_judges_it_when_written_again(tmp_path, name):
    """-r FILE -w OUT (ptcap's own reader): the lines and status tcpdump -r FILE -w OUT gives.
    A link type libpcap does not know is refused (ptcap wrote a file tcpdump refuses; 65537
    ended in a struct.error traceback), version 1.x is "archaic", 2.5+ unsupported, a short
    header counts the bytes after the magic, and the modified format's Ethernet snaplen is 14
    bytes longer (all as libpcap 1.10)."""
    path = tmp_path / "in.pcap"
    path.write_bytes(PCAP_HEADERS[name])
    want = subprocess.run(["tcpdump", "-r", str(path), "-w", str(tmp_path / "t.pcap")], capture_output=True, text=True)
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(path), "-w", str(tmp_path / "p.pcapng")],
                         capture_output=True, text=True)
    assert got.stderr.splitlines() == want.stderr.replace("tcpdump: ", "ptcap: ").splitlines(), got.stderr
    assert got.returncode == want.returncode


def test_a_linux_sll2_pipe_is_warned_about_once(tmp_path):
    """tcpdump warns once that LINUX_SLL2 interface names might be incorrect; ptcap said it
    once, and each of its tcpdump children again (three lines from a pipe)."""
    sll2 = struct.pack(">HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\x02" * 6 + b"\0\0") + PKT[14:]
    shb = _block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block("<", 1, struct.pack("<HHI", 276, 0, 262144))
    epb = _block("<", 6, struct.pack("<IIIII", 0, 0, 1, len(sll2), len(sll2)) + sll2 + b"\0" * (-len(sll2) % 4))
    data = shb + idb + epb + epb
    want = subprocess.run(["tcpdump", "-n", "-r", "-"], input=data, capture_output=True)
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", "-r", "-"], input=data, capture_output=True)
    assert want.stderr.count(b"Warning: interface names might be incorrect") == 1
    assert got.stderr.count(b"Warning: interface names might be incorrect") == 1, got.stderr
    assert got.stdout == want.stdout and got.returncode == want.returncode == 0


def test_a_file_with_processes_on_a_link_type_libpcap_refuses_is_one_error(tmp_path):
    """Process comments on an interface of a link type libpcap does not know: tcpdump's one
    line and status; ptcap said first that it could not add its fields (two errors)."""
    comment = _opt("<", 1, b"PID: 1\nCmd: /bin/x") + _opt("<", 0, b"")
    epb = _blk(6, struct.pack("<IIIII", 0, 0, 1, len(PKT), len(PKT)) + PKT + b"\0" * (-len(PKT) % 4) + comment)
    path = tmp_path / "lt65535.pcapng"
    path.write_bytes(_SHB + _idb(65535) + epb)
    want = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True, text=True)
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", "-r", str(path)], capture_output=True, text=True)
    assert want.returncode == 1
    assert got.stderr.splitlines() == want.stderr.replace("tcpdump: ", "ptcap: ").splitlines(), got.stderr
    assert got.returncode == 1 and got.stdout == ""


def test_a_time_stamp_past_2106_keeps_its_low_32_bits_as_libpcap_does(tmp_path):
    """pcapng stamps are 64 bits, a pcap record's seconds 32: a stamp past 2106 (tcpdump's own
    corpus has one, smb_data_print-segv.pcapng) goes to the tcpdump child with its low 32 bits
    of seconds, as pcap_dump writes it; it raised struct.error mid-file, its lines lost."""
    late = 68470465054 * 10**6 + 149710
    data = pcapng_bytes(packets=[(1_480_520_108_640_523, PKT, None, []), (late, PKT, None, []),
                                 (1_480_520_108_641_033, PKT, None, [])])
    path = tmp_path / "late.pcapng"
    path.write_bytes(data)
    for flags in (["-tt"], ["-v"], ["-tttt", "-c", "2"]):
        want = subprocess.run(["tcpdump", "-n", *flags, "-r", "-"], input=data, capture_output=True, env={"TZ": "UTC"})
        got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", *flags, "-r", "-"], input=data,
                             capture_output=True, env={"TZ": "UTC"})
        assert got.stdout == want.stdout and got.returncode == 0, got.stderr
    ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(path), "-w", str(ours)], capture_output=True)
    assert got.returncode == 0, got.stderr
    subprocess.run(["tcpdump", "-r", str(path), "-w", str(theirs)], check=True, capture_output=True)
    assert ours.read_bytes()[24:] == theirs.read_bytes()[24:]


@pytest.mark.parametrize("nano", [False, True])
def test_rewriting_a_pcap_keeps_its_records_as_tcpdump_w_keeps_them(tmp_path, nano):
    """`-r x.pcap -w y.pcap` writes what `tcpdump -r x.pcap -w y.pcap` writes, byte for byte:
    a fraction of a second or more in a record (tcpdump's corpus has dozens; tcpdump prints
    them as they are, '05:27:12.808464432') is kept, scaled as libpcap scales it, not carried
    into the seconds; the FCS bits of the header's link type are kept."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    head = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, 1 | 0x14000000)
    recs = [(1_000_000, 5), (1_000_001, 808464432), (1_000_002, 999999), (1_000_003, 4294967295)]
    data = head + b"".join(struct.pack("<IIII", s, f, len(PKT), len(PKT)) + PKT for s, f in recs)
    src = tmp_path / "in.pcap"
    src.write_bytes(data)
    for extra in ([], ["--nano"], ["-c", "3"]):
        ours, theirs = tmp_path / "ours.pcap", tmp_path / "theirs.pcap"
        got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(src), *extra, "-w", str(ours)],
                             capture_output=True)
        assert got.returncode == 0, got.stderr
        subprocess.run(["tcpdump", "-r", str(src), *extra, "-w", str(theirs)], check=True, capture_output=True)
        assert ours.read_bytes() == theirs.read_bytes(), extra


@pytest.mark.parametrize("source", ["pcap", "pcapng"])
def test_a_file_without_packets_is_written_as_a_file_tcpdump_and_tshark_read(tmp_path, source):
    """`-r EMPTY -w out.pcapng` (tcpdump's empty.pcap and empty.pcapng) wrote a Section Header
    Block alone: 'tcpdump: the capture file has no Interface Description Blocks'. It gets the
    file's link type's interface, as tcpdump -w writes the header of a file with no packet."""
    src = tmp_path / f"empty.{source}"
    src.write_bytes(pcap_bytes("<", False, [], linktype=105, snaplen=4096) if source == "pcap" else
                    _SHB + _idb(105, 4096))
    out = tmp_path / "out.pcapng"
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(src), "-w", str(out)], capture_output=True)
    assert got.returncode == 0, got.stderr
    want = subprocess.run(["tcpdump", "-r", str(src)], capture_output=True)
    read = subprocess.run(["tcpdump", "-r", str(out)], capture_output=True)
    assert (read.returncode, read.stderr) == (0, want.stderr.replace(bytes(src), bytes(out)))
    assert subprocess.run(["tshark", "-r", str(out)], capture_output=True).returncode == 0


def test_a_time_stamp_past_2554_does_not_end_a_pcapng_written_again(tmp_path):
    """A nanosecond pcapng stamp holds 64 bits (until 2554): a later one (a microsecond file's,
    tcpdump's smb_data_print-segv.pcapng) keeps its low 64 bits; it raised struct.error and
    the packets after it were lost."""
    late = 68470465054 * 10**6 + 149710
    src, out = tmp_path / "late.pcapng", tmp_path / "out.pcapng"
    src.write_bytes(pcapng_bytes(packets=[(1_480_520_108_640_523, PKT, None, []), (late, PKT, None, []),
                                          (1_480_520_108_641_033, PKT, None, [])]))
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(src), "-w", str(out)], capture_output=True)
    assert got.returncode == 0 and b"Traceback" not in got.stderr, got.stderr
    read = subprocess.run(["tcpdump", "-n", "-tt", "-r", str(out)], capture_output=True)
    kept = late * 1000 % 2**64          # -tt prints the seconds' low 32 bits
    assert [ln.split()[0] for ln in read.stdout.decode().splitlines()] == \
        ["1480520108.640523", f"{kept // 10**9 % 2**32}.{kept % 10**9 // 1000:06d}", "1480520108.641033"]


def _head_1(argv: list[str], data: bytes, env: dict | None = None) -> tuple[int, bytes]:
    """`argv | head -1`: the exit status and the last line of stderr."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def feed() -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:     # the reader stopped reading: as it may
            pass
    feeder = threading.Thread(target=feed)
    feeder.start()
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    feeder.join()
    return proc.wait(), err.splitlines()[-1]


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "pcapng-with-processes"])
def test_output_that_goes_away_is_said_and_exits_14_as_tcpdump_does(kind):
    """`ptcap -r - | head -1` says tcpdump's 'Unable to write output: Broken pipe' and exits
    with its 14, whether tcpdump read the file (it exited 1) or ptcap did (it exited 0, silent)."""
    comments = ["PID: 4242\nCmd: /usr/bin/sender\n"] if kind.endswith("processes") else []
    packets = [(1_700_000_000_000_000 + i * 10**9, PKT) for i in range(30000)]
    data = pcap_bytes("<", False, packets) if kind == "pcap" else \
        pcapng_bytes(packets=[(ts // 1000, p, 2, comments) for ts, p in packets])
    want = _head_1(["tcpdump", "-n", "-r", "-"], data)
    assert want == (14, b"tcpdump: Unable to write output: Broken pipe")
    assert _head_1([sys.executable, "-m", "ptcap.cli", "-n", "-r", "-"], data) == \
        (14, b"ptcap: Unable to write output: Broken pipe")


def test_output_cut_short_under_pythonunbuffered_is_said_as_tcpdump_says_it(tmp_path):
    """PYTHONUNBUFFERED (set in many container images) gave ptcap a raw stdout: a write that
    `head -1` cut short by leaving mid-write took part of the lines and dropped the rest
    without a word, so a file whose lines ptcap writes at once ended with status 0 and no
    message. Here one group of lines (-x: some 110 KB) is one write, more than a pipe holds."""
    comment = "PID: 4242\nCmd: /usr/bin/sender\n"
    packets = [(1_700_000_000_000_000 + i * 1000, PKT, 2, [comment]) for i in range(400)]
    path = tmp_path / "procs.pcapng"
    path.write_bytes(pcapng_bytes(packets=packets, application="ptcap 0.1"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    assert _head_1(["tcpdump", "-nx", "-r", str(path)], b"") == (14, b"tcpdump: Unable to write output: Broken pipe")
    assert _head_1([sys.executable, "-m", "ptcap.cli", "-nx", "-r", str(path)], b"", env) == \
        (14, b"ptcap: Unable to write output: Broken pipe")


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_output_that_goes_away_while_the_input_waits_ends_as_tcpdump_ends(kind):
    """`producer | ptcap -r - | head -1` with the producer still there but quiet: tcpdump (which
    reads the pipe itself) exits 14 at once. ptcap's thread feeding its tcpdump sat in a read
    of sys.stdin.buffer, holding that object's lock, and the interpreter's exit aborted on it
    ('Fatal Python error: ... could not acquire lock', status -6) or hung."""
    # input a pipe holds (the feeder is done with it), lines (-xx) no pipe holds (tcpdump is
    # still printing when the output goes)
    packets = [(1_700_000_000_000_000 + i * 10**9, PKT) for i in range(600)]
    data = pcap_bytes("<", False, packets) if kind == "pcap" else \
        pcapng_bytes(packets=[(ts // 1000, p, 2, []) for ts, p in packets])
    assert len(data) < 65536
    for argv in (["tcpdump", "-nxx", "-r", "-"], [sys.executable, "-m", "ptcap.cli", "-nxx", "-r", "-"]):
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def feed():                     # all of it, and the input stays open
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except BrokenPipeError:
                pass
        feeder = threading.Thread(target=feed)
        feeder.start()
        assert proc.stdout.readline()
        proc.stdout.close()
        try:
            status = proc.wait(timeout=30)
        finally:
            proc.kill()
            feeder.join()
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        err = proc.stderr.read().splitlines()
        proc.stderr.close()
        assert err and (status, err[-1].split(b": ", 1)[1]) == (14, b"Unable to write output: Broken pipe"), err


@pytest.mark.parametrize("second", ["<", ">"])
@pytest.mark.parametrize("comments", [True, False])
def test_a_second_section_is_read_as_libpcap_reads_it(tmp_path, second, comments):
    """A second Section Header Block in the other byte order: libpcap 1.10 reads its length in
    the first section's order and stops there ('pcapng block size 469762048 > maximum ...').
    ptcap read on: from stdin it printed 12 packets and exit 0; a file with processes printed
    none at all (its tcpdump child died on the block: 'the decoder exited with status 1'). In
    the same order the second section's packets are printed, on its own interfaces."""
    comment = ["PID: 4242\nCmd: /usr/bin/sender\n"] if comments else []
    first = pcapng_bytes("<", packets=[(1_700_000_000_000_000 + i, PKT, 2, comment) for i in range(6)])
    data = first + pcapng_bytes(second, name="eth1", packets=[(1_700_000_001_000_000 + i, PKT, 1, comment)
                                                              for i in range(6)])
    path = tmp_path / "two.pcapng"
    path.write_bytes(data)
    want = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True)
    assert len(want.stdout.splitlines()) == (12 if second == "<" else 6)
    for argv, stdin in ((["-r", str(path)], None), (["-r", "-"], data), (["-r", "-", "udp"], data)):
        got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", *argv], input=stdin, capture_output=True)
        assert len(got.stdout.splitlines()) == len(want.stdout.splitlines()), (argv, got.stderr)
        assert got.returncode == want.returncode
        assert _errors(got.stderr) == [ln.replace(b"tcpdump: ", b"ptcap: ") for ln in _errors(want.stderr)]
    out = tmp_path / "out.pcapng"
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(path), "-w", str(out)], capture_output=True)
    assert got.returncode == want.returncode
    again = subprocess.run(["tcpdump", "-n", "-r", str(out)], capture_output=True)
    assert len(again.stdout.splitlines()) == len(want.stdout.splitlines()) and again.returncode == 0


def _errors(stderr: bytes) -> list[bytes]:
    return [ln for ln in stderr.splitlines() if not ln.startswith(b"reading from file")]


@pytest.mark.parametrize("opts", [["-C", "1"], ["-C", "1", "-W", "2"], ["-C", "1", "-W", "12"],
                                  ["-G", "3600"], ["-C", "2", "-G", "3600"]])
def test_rewriting_rotates_as_tcpdump_r_w_rotates(tmp_path, opts):
    """-r FILE -w OUT -C/-W/-G: the files tcpdump -r writes, byte for byte, under their names
    (-G passes the name through strftime); ptcap wrote one file named as given."""
    big = synth.eth(synth.ip4("10.0.0.1", "10.0.0.2", 17, synth.udp(1000, 2000, b"x" * 1000)))
    src = tmp_path / "big.pcap"
    src.write_bytes(pcap_bytes("<", False, [(1_700_000_000 * 10**9 + i * 10**6, big) for i in range(3000)]))
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    name = "out-%Y.pcap" if "-G" in opts else "out.pcap"
    subprocess.run(["tcpdump", "-Z", "root", "-r", str(src), "-w", name, *opts], cwd=theirs, check=True,
                   capture_output=True)
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-r", str(src), "-w", name, *opts], cwd=ours,
                         capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert got.returncode == 0, got.stderr
    want = {p.name: p.read_bytes() for p in theirs.iterdir()}
    assert len(want) > 1 or "-C" not in opts
    assert {p.name: p.read_bytes() for p in ours.iterdir()} == want


def _idb_named(order: str, linktype: int, snaplen: int) -> bytes:
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + _opt(order, 2, b"eth1") + _opt(order, 0, b""))


@pytest.mark.parametrize("comments", [True, False])
@pytest.mark.parametrize("case", ["snaplen-differs", "packet-before-idb"])
def test_interfaces_are_checked_as_libpcap_checks_them(tmp_path, case, comments):
    """A second interface of the first's link type with another snapshot length: libpcap stops
    there ('an interface has a snapshot length ...'); ptcap printed every packet from stdin and,
    for a file with processes, 'tcpdump (the decoder) exited with status 1'. A packet block
    before any interface: libpcap's own words, not ptcap's 'no Interface Description Block
    for that interface'."""
    comment = ["PID: 4242\nCmd: /usr/bin/sender\n"] if comments else []
    data = pcapng_bytes(packets=[(1_700_000_000_000_000 + i, PKT, 2, comment) for i in range(6)])
    if case == "snaplen-differs":
        data += _idb_named("<", 1, 1500)
    else:
        shb_end = struct.unpack_from("<I", data, 4)[0]
        idb_end = shb_end + struct.unpack_from("<I", data, shb_end + 4)[0]
        epb_end = idb_end + struct.unpack_from("<I", data, idb_end + 4)[0]
        data = data[:shb_end] + data[idb_end:epb_end] + data[shb_end:idb_end] + data[epb_end:]
    path = tmp_path / "f.pcapng"
    path.write_bytes(data)
    for argv, stdin in ((["-r", str(path)], None), (["-r", "-"], data), (["-c", "3", "-r", "-", "udp"], data),
                        (["-c", "7", "-r", "-", "udp"], data)):
        want = subprocess.run(["tcpdump", "-n", *argv], input=stdin, capture_output=True)
        got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", *argv], input=stdin, capture_output=True)
        assert len(got.stdout.splitlines()) == len(want.stdout.splitlines()), (argv, got.stderr)
        assert _errors(got.stderr) == [ln.replace(b"tcpdump: ", b"ptcap: ") for ln in _errors(want.stderr)]
        assert got.returncode == want.returncode == (0 if argv[1] == "3" and case == "snaplen-differs" else 1)


def _raw_opt(code: int, length: int, value: bytes = b"") -> bytes:
    return struct.pack("<HH", code, length) + value


_END = _opt("<", 0, b"")
_BAD_INTERFACE_OPTIONS = {
    "end-with-a-value": _raw_opt(0, 4, b"abcd"),
    "end-longer-than-the-block": _raw_opt(0, 0x8000),
    "name-longer-than-the-block": _raw_opt(2, 40, b"eth0"),
    "tsresol-of-2-bytes": _opt("<", 9, b"\x06\x00") + _END,
    "tsresol-twice": _opt("<", 9, b"\x06") + _opt("<", 9, b"\x09") + _END,
    "tsresol-2^-64": _opt("<", 9, b"\xc0") + _END,
    "tsresol-10^-20": _opt("<", 9, b"\x14") + _END,
    "tsoffset-of-4-bytes": _opt("<", 14, b"\x01\0\0\0") + _END,
    "tsoffset-twice": _opt("<", 14, bytes(8)) * 2 + _END,
    "tsresol-2^-63": _opt("<", 9, b"\xbf") + _END,            # the finest libpcap takes
    "tsresol-10^-19": _opt("<", 9, b"\x13") + _END,
    "options-after-the-end": _END + _opt("<", 9, b"\x06\x00"),
}


@pytest.mark.parametrize("where", ["first", "second"])
@pytest.mark.parametrize("name", sorted(_BAD_INTERFACE_OPTIONS))
def test_interface_options_are_checked_as_libpcap_checks_them(tmp_path, name, where):
    """An interface's options in a file with processes: ptcap's reader took any of them (an
    end option with a length, an if_tsresol of two bytes, one given twice...) and handed the
    block to its tcpdump, which refused it: 'tcpdump (the decoder) exited with status 1', and
    for a later interface the packets before it were not printed. Now the reader refuses what
    libpcap refuses, in its words, at open or after the packets before."""
    comment = ["PID: 4242\nCmd: /usr/bin/sender\n"]
    idb = _block("<", 1, struct.pack("<HHI", 1, 0, 262144) + _BAD_INTERFACE_OPTIONS[name])
    if where == "first":
        data = pcapng_bytes(packets=[(1_700_000_000_000_000 + i, PKT, 2, comment) for i in range(3)])
        shb_end = struct.unpack_from("<I", data, 4)[0]
        idb_end = shb_end + struct.unpack_from("<I", data, shb_end + 4)[0]
        data = data[:shb_end] + idb + data[idb_end:]
    else:
        data = pcapng_bytes(packets=[(1_700_000_000_000_000 + i, PKT, 2, comment) for i in range(3)]) + idb
        last = pcapng_bytes(packets=[(1_700_000_000_000_009, PKT, 2, comment)])
        data += last[last.index(b"\x06\0\0\0"):]       # its packet block
    path = tmp_path / "f.pcapng"
    path.write_bytes(data)
    for argv, stdin in ((["-r", str(path)], None), (["-r", "-"], data)):
        want = subprocess.run(["tcpdump", "-n", *argv], input=stdin, capture_output=True)
        got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", *argv], input=stdin, capture_output=True)
        assert len(got.stdout.splitlines()) == len(want.stdout.splitlines()), (argv, got.stderr)
        assert _errors(got.stderr) == [ln.replace(b"tcpdump: ", b"ptcap: ") for ln in _errors(want.stderr)]
        assert got.returncode == want.returncode


@pytest.mark.parametrize("snaplen", [2, 20, 60])
def test_a_file_with_processes_and_a_small_snapshot_length(tmp_path, snaplen):
    """A pcapng with process comments whose snapshot length is below a marker's: its packets
    printed with their processes ('heapoverflow-ppp_hdlc_if_print', snapshot length 2, printed
    nothing: the child refused ptcap's marker, 'invalid packet capture length 32, bigger than
    snaplen of 2', 'tcpdump (the decoder) exited with status 1')."""
    comment = "PID: 4242\nCmd: /usr/bin/sender\n"
    data = bytearray(pcapng_bytes(packets=[(1_700_000_000_000_000 + i, PKT[:snaplen], 2, [comment]) for i in range(5)]))
    shb_end = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, shb_end + 12, snaplen)     # the interface's snapshot length
    path = tmp_path / "small.pcapng"
    path.write_bytes(bytes(data))
    want = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True)
    got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", "-r", str(path)], capture_output=True)
    assert (got.returncode, _errors(got.stderr)) == (want.returncode, _errors(want.stderr)) == (0, [])
    lines, theirs = got.stdout.decode().splitlines(), want.stdout.decode().splitlines()
    assert len(lines) == len(theirs) == 5
    for ours, line in zip(lines, theirs):
        ts, _, rest = line.partition(" ")
        assert ours == f"{ts} eth0 sender.4242 Out {rest}"


@pytest.mark.parametrize("name, data", [
    ("short", b"\x0a\x0d\x0d\x0a\x1c\x00"),
    ("minor-4096", _blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 4096, -1)) + _idb()),
    ("minor-1", _blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 1, -1)) + _idb()),
    ("minor-2", _blk(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 2, -1)) + _idb()),
    ("bad-trailer", struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 99) + _idb()),
    ("length-30", struct.pack("<IIIHHq", 0x0A0D0D0A, 30, 0x1A2B3C4D, 1, 0, -1) + b"\0\0" + struct.pack("<I", 30)
     + _idb()),
])
def test_a_section_header_is_judged_as_libpcap_judges_it(tmp_path, name, data):
    """libpcap reads pcapng 1.0 and 1.2 only ('unsupported pcapng savefile version 1.4096'; a
    file with processes said 'tcpdump (the decoder) exited', from stdin ptcap printed every
    packet) and calls a file too short for a section header 'unknown file format'. It checks
    neither the first header's trailer nor that its length is a multiple of 4: ptcap refused
    such files."""
    packet = pcapng_bytes(packets=[(1_700_000_000_000_000, PKT, 2, ["PID: 4242\nCmd: /usr/bin/sender\n"])])
    data += packet[64:] if len(data) > 8 else b""      # its packet block (after its SHB and IDB), after ours
    assert len(data) < 8 or struct.unpack_from("<I", data, struct.unpack_from("<I", data, 4)[0] + 20)[0] == 6
    path = tmp_path / f"{name}.pcapng"
    path.write_bytes(data)
    for argv, stdin in ((["-r", str(path)], None), (["-r", "-"], data)):
        want = subprocess.run(["tcpdump", "-n", *argv], input=stdin, capture_output=True)
        got = subprocess.run([sys.executable, "-m", "ptcap.cli", "-n", *argv], input=stdin, capture_output=True)
        assert _errors(got.stderr) == [ln.replace(b"tcpdump: ", b"ptcap: ") for ln in _errors(want.stderr)]
        assert (len(got.stdout.splitlines()), got.returncode) == (len(want.stdout.splitlines()), want.returncode)
        assert len(want.stdout.splitlines()) == (1 if name in ("minor-2", "bad-trailer", "length-30") else 0)


@pytest.mark.parametrize("comments", [True, False])
@pytest.mark.parametrize("flags", [[], ["-l"], ["-v", "udp"]])
def test_a_pipe_is_printed_as_its_packets_come(comments, flags):
    """`... | ptcap -r -`: the packets that came are printed while the pipe stays open, as
    tcpdump -r - prints them; ptcap waited for a MiB of input or its end (one whole read),
    then for a group of 512 packets."""
    import select
    import time
    comment = ["PID: 4242\nCmd: /usr/bin/sender\n"] if comments else []
    data = pcapng_bytes(packets=[(1_700_000_000_000_000 + i, PKT, 2, comment) for i in range(5)])
    proc = subprocess.Popen([sys.executable, "-m", "ptcap.cli", "-n", *flags, "-r", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
        lines, deadline = b"", time.monotonic() + 10
        while lines.count(b"UDP, length 5\n") < 5 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                lines += os.read(proc.stdout.fileno(), 65536)
        assert lines.count(b"UDP, length 5\n") == 5 and proc.poll() is None, lines
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0

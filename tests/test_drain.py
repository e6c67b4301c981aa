"""The native drain (bpf/drain.c) writes what the Python writer writes, block for block.

Two captures run at once on the same loopback traffic, one through the native drain (the
default for a single -w file) and one through the Python path (PTCAP_NATIVE=0); their files
must hold the same blocks: the same packets with the same options (process comments,
direction flags), every byte equal except the time stamps, which each capture's own
programs take."""
from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest

from conftest import free_port, tshark_fields, wait_for
from ptcap.pipeline import drain

pytestmark = pytest.mark.skipif(drain.library() is None, reason="bpf/build/libptcapdrain.so not built")


def blocks(path: Path) -> list[tuple[int, bytes]]:
    """A pcapng file's blocks as (type, body), Enhanced Packet Blocks without their time stamp."""
    data = path.read_bytes()
    out, at = [], 0
    while at + 12 <= len(data):
        kind, total = struct.unpack_from("<II", data, at)
        assert total >= 12 and at + total <= len(data), f"block cut short at {at}"
        body = data[at + 8:at + total - 4]
        if kind == 6:
            body = body[:4] + body[12:]        # interface id, then caplen, len, data, options
        out.append((kind, body))
        at += total
    assert at == len(data), "trailing bytes after the last block"
    return out


def packets_of(path: Path) -> list[bytes]:
    return [body for kind, body in blocks(path) if kind == 6]


def test_native_and_python_writers_agree(peers, capture, tmp_path):
    port = free_port()
    server = peers("udp-server", str(port), "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", str(port))
    expr = f"udp port {port}"
    native, python = tmp_path / "native.pcapng", tmp_path / "python.pcapng"
    env = dict(os.environ, PTCAP_NATIVE="0")
    # every padding; packets copied and packets written from the ring where they lie (>= 1 KiB)
    sizes = [*range(1, 21), 1000, 1023, 1024, 1025, 1499, 4000, 40000, 65000]
    n = 2 * len(sizes)                  # requests and replies
    a = capture("-i", "lo", "-w", str(native), "-c", str(n), expr)
    b = capture("-i", "lo", "-w", str(python), "-c", str(n), expr, env=env)
    for size in sizes:
        client.say(f"send {size}")
    _, err_a = a.finish()
    _, err_b = b.finish()
    assert f"{n} packets captured" in err_a and f"{n} packets captured" in err_b, err_a + err_b
    got, want = packets_of(native), packets_of(python)
    assert len(got) == len(want) == n
    assert got == want
    # and the packets carry their processes (the comparison is not of two empty files)
    rows = tshark_fields(native, "ptcap.pid")
    pids = {int(p) for row in rows for p in row[0].replace("|", ",").split(",") if p}
    assert {server.pid, client.pid} <= pids


def test_classic_pcap_through_the_drain_matches_python(peers, capture, tmp_path):
    port = free_port()
    peers("udp-server", str(port), "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", str(port))
    expr = f"udp port {port}"
    files = {}
    caps = {}
    for name, env in (("native", None), ("python", dict(os.environ, PTCAP_NATIVE="0"))):
        files[name] = tmp_path / f"{name}.pcap"
        caps[name] = capture("-i", "lo", "-w", str(files[name]), "-c", "10", expr, env=env)
    for size in (1, 2, 3, 1500, 30000):
        client.say(f"send {size}")
    for c in caps.values():
        c.finish()

    def records(path: Path) -> list[bytes]:
        data = path.read_bytes()
        assert data[:4] == struct.pack("<I", 0xA1B2C3D4)
        out, at = [], 24
        while at < len(data):
            _sec, usec, caplen, length = struct.unpack_from("<IIII", data, at)
            assert usec < 1_000_000
            out.append(struct.pack("<II", caplen, length) + data[at + 16:at + 16 + caplen])
            at += 16 + caplen
        return out

    assert records(files["native"]) == records(files["python"])
    assert len(records(files["native"])) == 10


def test_rotation_by_size_keeps_every_packet(peers, capture, tmp_path):
    """-C through the drain: each file ends after the block that takes it past the size, and
    the files together hold every packet, in order, each a readable pcapng file."""
    port = free_port()
    peers("udp-server", str(port), "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", str(port))
    out = tmp_path / "rot.pcapng"
    cap = capture("-i", "lo", "-C", "0.01", "-w", str(out), f"udp port {port}")   # 10 kB files
    for _ in range(30):
        client.say("send 900")
    wait_for(lambda: sum(len(packets_of(p)) for p in tmp_path.glob("rot.pcapng*")
                         if p.stat().st_size) >= 60, what="60 packets in the rotated files")
    cap.stop()
    names = sorted(tmp_path.glob("rot.pcapng*"), key=lambda p: (len(p.name), p.name))
    assert len(names) >= 5
    total = 0
    for path in names:
        got = packets_of(path)
        total += len(got)
        size = path.stat().st_size
        if path != names[-1]:
            # past 10 kB only by its last block
            last = blocks(path)[-1]
            assert size > 10_000 and size - (len(last[1]) + 12 + 8) <= 10_000, (path, size)
    assert total == 60


def test_printed_lines_native_and_python_agree(peers, capture):
    """Live printing through the drain (pcap records for the tcpdump child, described in runs
    of one key) prints the lines the Python path prints: each packet with its own process,
    across runs cut at their size (a flood of one socket) and at every change of key."""
    port = free_port()
    server = peers("udp-server", str(port), "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", str(port))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # takes the flood, answers nothing
    sink.bind(("127.0.0.1", 0))
    flood = peers("udp-flood", "127.0.0.1", str(sink.getsockname()[1]), "1500")
    n = 1500 + 2 * 20
    expr = f"udp port {port} or udp port {sink.getsockname()[1]}"
    caps = {name: capture("-n", "-i", "lo", "-c", str(n), expr, env=env)
            for name, env in (("native", None), ("python", dict(os.environ, PTCAP_NATIVE="0")))}
    for size in range(10):
        client.say(f"send {size}")
    flood.say("go")
    for size in range(10, 20):
        client.say(f"send {size}")
    lines = {}
    for name, cap in caps.items():
        out, err = cap.finish()
        assert f"{n} packets captured" in err, err
        lines[name] = [line.split(" ", 1)[1] for line in out.decode().splitlines()]
    sink.close()
    assert len(lines["native"]) == n
    assert lines["native"] == lines["python"]
    for pid in (server.pid, flood.pid, client.pid):
        assert any(f".{pid} Out " in line for line in lines["native"]), pid


def test_scanned_blocks_match_the_python_scan(tmp_path, monkeypatch):
    """'ptcap -r' of a pcapng: the C scan of its packet blocks (runs of one interface and
    options) gives what the Python scan gives, across processes, directions, packets without
    options, a second interface, and more blocks than a run takes."""
    import io
    from ptcap.formats import pcapng_scan
    from ptcap.formats.pcapng import PacketWriter
    from ptcap.formats.reader import CaptureReader
    from ptcap.meta.context import ProcessContext
    from ptcap.pipeline.packet import Direction, Packet
    ctxs = [ProcessContext(pid=10 + i, cmd=f"/bin/c{i}", args=f"c{i}") for i in range(3)] + [None]
    buf = io.BytesIO()
    writer = PacketWriter(buf, False, 1)
    for i in range(1500):
        ctx = ctxs[(i // 100) % 4] if i % 7 else ctxs[i % 3]
        writer.write(Packet(1_700_000_000_000_000_000 + i, bytes(14 + i % 61), 14 + i % 61, 1,
                            "eth1" if i % 500 > 480 else "eth0",
                            (Direction.IN, Direction.OUT, Direction.UNKNOWN)[i % 11 % 3], ctx))
    writer.flush()
    data = buf.getvalue()

    def scan() -> list:
        reader = CaptureReader(io.BytesIO(data), "x")
        return [(start, end, ifid, known, ts) for _buf, start, end, ifid, known, ts in reader.raw_blocks(512)]

    native = scan()
    monkeypatch.setattr(pcapng_scan, "scanner", lambda: None)
    python = scan()
    assert native == python
    runs = [m for _s, _e, ifid, known, _t in native if ifid == -2 for m in known]
    assert sum(n for _i, _k, n in runs) == 1500
    assert {i for i, _k, _n in runs} == {0, 1} and len(runs) > 100

"""Process events (exec, fork, exit) share the ring with packets: packets leave them room,
a loss is counted in the kernel and said at exit, and packets say their details may be
stale after one. The caches behind contexts stay bounded however many processes come and go."""
from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess

import pytest

from conftest import comments, file_packets, free_port, tshark_fields, wait_clean, wait_for
from ptcap.kernel import records, ringroom
from ptcap.meta import processes
from ptcap.meta.join import MAX_KEYS, Joiner
from ptcap.meta.processes import MAX_CONTEXTS, MAX_PROCESSES, ProcessTable
from ptcap.pipeline.decoder import MARKS

RING = 1 << 20          # -B 1024
EXEC_BYTES = records.EXEC.size + 8       # in the ring, with its header
FORK_BYTES = records.FORK.size + 8       # a fork, an exit


def _counts(err: str) -> dict[str, int]:
    out = {}
    for line in err.splitlines():
        m = re.match(r"(\d+) (packets?|process events?) (.*)", line)
        if m:
            out[m.group(3)] = int(m.group(1))
    return out


def _flood_while_stopped(cap, flood, then=None):
    """With the reader stopped, fill the ring with packets (they are dropped once they reach
    the room kept for process events), run `then`, let the reader go again."""
    cap.send(signal.SIGSTOP)
    try:
        flood.say("go")
        if then is not None:
            then()
    finally:
        cap.send(signal.SIGCONT)


def _packets_of(out, port: int) -> list[dict[str, str]]:
    rows = tshark_fields(out, "frame.comment", display_filter=f"udp.srcport == {port}")
    return [comments(row[0]) for row in rows]


@pytest.mark.root
def test_lost_process_events_are_counted_reported_and_marked(peers, capture, tmp_path):
    """A stopped reader, a ring full of packets and 600 new processes: the events that did
    not fit are counted (at least as many as the room cannot hold), said at exit, and the
    packets after the loss say their process details may be stale."""
    port = free_port()
    peers("udp-server", str(port), "127.0.0.1")
    flood = peers("udp-flood", "127.0.0.1", str(port), "20000")
    out = tmp_path / "out.pcapng"
    cap = capture("-i", "lo", "-Q", "out", "-B", "1024", "-w", str(out), f"udp port {port}")
    n = 600

    def many_processes():
        for _ in range(n):
            subprocess.run(["/bin/true"], check=True)

    _flood_while_stopped(cap, flood, many_processes)
    client = peers("udp-client", "127.0.0.1", str(port))
    wait_for(lambda: _sent_and_written(client, out), what="the client's packet in the file")
    _, err = cap.stop()
    counts = _counts(err)
    assert counts["dropped by kernel"] > 0, err
    # what our processes queued, less the room packets left (and less than one packet
    # record's worth they may have left over), in exec records at most
    room = ringroom.headroom(RING) + 264
    at_least = (n * (EXEC_BYTES + 2 * FORK_BYTES) - room) // EXEC_BYTES
    assert counts.get("lost", 0) >= at_least, err
    assert re.search(r"^\d+ process events lost$", err, re.M), err
    after = _packets_of(out, client_port(client))
    assert after and all(c.get("MayBeStale") == "yes" for c in after), after
    assert "udp-client" in after[0]["Args"]
    assert wait_clean() == []


def client_port(client) -> int:
    return int(client.ready.split()[2])


def _sent_and_written(client, out) -> list:
    """Send a datagram; the client's packets in the file so far, as ptcap's reader sees them
    (packets are refused while the ring drains: the caller sends until one is kept)."""
    client.say("send 10")
    return [p for p in file_packets(out) if p.context is not None and p.context.pid == client.pid]


@pytest.mark.root
def test_room_kept_for_process_events_while_packets_are_dropped(peers, capture, tmp_path):
    """A program started while packets fill the ring (and are dropped) is still known by its
    exec: its packets name its own command, with nothing lost and nothing marked stale."""
    port, other = free_port(), free_port()
    peers("udp-server", str(port), "127.0.0.1")
    peers("udp-server", str(other), "127.0.0.1")
    # a 16 MiB ring keeps 512 KiB for process events: room for the client's and for what the
    # rest of the host starts meanwhile (~390 execs); 100,000 packets of 264 bytes in the ring
    # fill the rest
    assert ringroom.headroom(16 << 20) == 512 << 10
    flood = peers("udp-flood", "127.0.0.1", str(port), "100000")
    out = tmp_path / "out.pcapng"
    cap = capture("-i", "lo", "-Q", "out", "-B", "16384", "-w", str(out),
                  f"udp port {port} or udp port {other}")
    started = []
    _flood_while_stopped(cap, flood, lambda: started.append(peers("udp-client", "127.0.0.1", str(other))))
    client = started[0]
    wait_for(lambda: _sent_and_written(client, out), timeout=60, what="the client's packet in the file")
    _, err = cap.stop()
    counts = _counts(err)
    assert counts["dropped by kernel"] > 0, err
    assert "lost" not in counts, err
    mine = _packets_of(out, client_port(client))
    for c in mine:
        assert c["PID"] == str(client.pid)
        assert f"udp-client 127.0.0.1 {other}" in c["Args"], c
        assert "MayBeStale" not in c
    assert wait_clean() == []


def _owner(pid: int, start: int, comm: bytes = b"x") -> bytes:
    return records.OWNER.struct.pack(pid, pid, 0, 0, start, 0, 0, 1, comm, comm)


# pids above the kernel's largest pid_max (4194304): never a live process in /proc
FAKE = 5_000_000


def test_process_table_stays_bounded_when_exits_go_unseen(monkeypatch):
    """Execs without their exits (as when the kernel lost them): at most MAX_PROCESSES
    processes and MAX_CONTEXTS contexts are kept, the newest (bounds made small here)."""
    monkeypatch.setattr(processes, "MAX_PROCESSES", 500)
    monkeypatch.setattr(processes, "MAX_CONTEXTS", 800)
    table = ProcessTable()
    extra = 100
    for i in range(500 + extra):
        table.learn_exec(FAKE + i, 1, i + 1, "/bin/true", ["true"])
    assert len(table._procs) == 500
    assert len(table._latest) <= 500
    assert table.process(FAKE + 500 + extra - 1, 500 + extra).cmd == "/bin/true"
    for i in range(800 + extra):
        table.context(_owner(FAKE + i, i + 1))
    assert len(table._contexts) <= 800
    assert sum(len(keys) for keys in table._owners.values()) <= 800
    assert MAX_PROCESSES >= 10 * 1000 and MAX_CONTEXTS >= MAX_PROCESSES     # the real bounds: a busy host's minute


def test_a_long_lived_end_does_not_collect_its_peers(monkeypatch):
    """A server that answers 10,000 short-lived clients: once each client is gone, neither
    the table nor the join keeps anything of their conversations."""
    monkeypatch.setattr(processes, "EXIT_GRACE", -1.0)      # an exit is let go at the next one
    table = ProcessTable()
    joiner = Joiner(table)
    server = _owner(FAKE, 7, b"server")
    no_info = bytes(12)
    for i in range(10_000):
        client = _owner(FAKE + 1 + i, i + 1, b"client")
        joiner.context(server + no_info + MARKS.pack(4) + client + bytes(4))      # a record's key
        table.learn_exit(FAKE + 1 + i, i + 1)
    assert len(joiner._contexts) <= 2
    assert len(joiner._keys.get(server, ())) <= 2
    assert len(table._owners.get((FAKE, 7), ())) <= 3
    assert len(table._contexts) <= 4
    assert len(joiner._contexts) < MAX_KEYS


def _record(key: bytes, direction: int = 2) -> bytes:
    """A kernel packet record (bpf/ptcap.h struct ptcap_packet) with 4 bytes of data; `key`
    is its bytes from owner to the padding before the pcapng body (KEY_AT:KEY_END)."""
    owner, info, marks, peer = key[:72], key[72:84], key[84:88], key[88:160]
    location, reason = struct.unpack("<QI", info)
    return records.PACKET.struct.pack(1, records.EventKind.PACKET, 0, direction, owner, location, reason,
                                      MARKS.unpack(marks)[0], peer, 0, 0, 0, 4, 4) + b"abcd"


def test_pcapng_writer_keeps_options_of_live_keys_only():
    """The writer's encoded options (a dozen copies per key) stay within _CACHE_BYTES when
    10,000 short-lived clients each talk to one server: the keys the join let go are dropped
    first, the live ones stay cached."""
    from ptcap.formats import pcapng
    from ptcap.meta.context import ProcessContext
    from ptcap.pipeline.packet import Batch

    writer = pcapng.PcapngWriter(io.BytesIO())
    live: dict[bytes, ProcessContext] = {}
    server = _owner(FAKE, 7, b"server")
    kept = server + bytes(16) + bytes(72) + bytes(4)
    live[kept] = ProcessContext(pid=FAKE, cmd="/usr/sbin/server", args="server " + "x" * 500)
    for i in range(10_000):
        key = server + bytes(12) + MARKS.pack(4) + _owner(FAKE + 1 + i, i + 1, b"client") + bytes(4)
        live[key] = ProcessContext(pid=FAKE, cmd="/usr/sbin/server", args="server " + "y" * 500)
        buf = _record(kept) + _record(key)
        writer.write_batch(Batch(buf, [0, len(buf) // 2], live, live.get, [(1, "lo", 1)]))
        del live[key]           # the client exited: the join forgot its key
        assert writer._opts_bytes <= pcapng._CACHE_BYTES + 65536      # one key's over at most
    assert len(writer._opts) < 10_000 // 2
    assert kept in writer._opts and writer._opts[kept][0] is live[kept]


def test_arguments_stay_one_line():
    """An argument with a newline, return or tab cannot break a comment's 'Key: value' lines
    (the common case, none of them, is joined as it is)."""
    assert processes.join_args(["sh", "-c", "echo a\nrm b\r\tc"]) == "sh -c echo a rm b  c"
    assert processes.join_args(["curl", "-s", "http://127.0.0.1/"]) == "curl -s http://127.0.0.1/"


def test_a_process_exited_but_not_reaped_keeps_what_the_start_saw():
    """An exited process not yet reaped (a zombie) still has /proc/PID/stat but no command
    line: its packets keep the arguments read at start, not "[comm]"."""
    child = subprocess.Popen(["sleep", "60", "0.5"])
    try:
        table = ProcessTable()
        table.snapshot()
        os.kill(child.pid, signal.SIGKILL)     # Popen.send_signal would reap it
        wait_for(lambda: open(f"/proc/{child.pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[0] == b"Z",
                 what="the child a zombie")
        assert processes.read_process(child.pid) is None
        info = table.process(child.pid)
        assert info is not None and info.args == "sleep 60 0.5"
    finally:
        child.kill()
        child.wait()


def test_the_reader_is_woken_once_per_a_32nd_of_the_ring():
    """The kernel side wakes the reader once per 2^wake_shift bytes queued (bpf/ring.h), set in
    the objects' .rodata: a 32nd of the ring, between 16 KiB and 1 MiB; the packed config is
    what struct ptcap_ring_config holds (test_records checks the layout against the BTF)."""
    from ptcap.kernel.records import RING_CONFIG
    assert [ringroom.wake_shift(n) for n in (64 << 20, 32 << 20, 4 << 20, 1 << 20, 256 << 10)] == [20, 20, 17, 15, 14]
    limit, shift = RING_CONFIG.struct.unpack(ringroom.ring_config(64 << 20))
    assert (limit, shift) == ((64 << 20) - ringroom.headroom(64 << 20), 20)

"""A pcap filter on a live capture keeps exactly what tcpdump keeps with the same filter."""
from __future__ import annotations

import signal
import subprocess

from conftest import counters, counters_map, file_packets, tcp_settled, wait_clean, wait_for
from test_filter_diff import read_pcap

import pytest

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons


def start_tcpdump(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen(["tcpdump", "-U", "--immediate-mode", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline().decode()
    assert "listening on" in line, line
    return proc


def test_tcp_port_8080_captures_what_tcpdump_captures(veth, peers, capture, tmp_path):
    peers("tcp-server", "8080", netns=veth.ns)
    peers("tcp-server", "9090", netns=veth.ns)
    peers("udp-server", "8080", netns=veth.ns)
    ours, theirs = tmp_path / "ptcap.pcap", tmp_path / "tcpdump.pcap"
    dump = start_tcpdump("-i", veth.host_if, "-w", str(theirs), "tcp port 8080")
    try:
        cap = capture("-i", veth.host_if, "-w", str(ours), "tcp port 8080")
        wanted = peers("tcp-client", veth.peer_ip, "8080")
        other = peers("tcp-client", veth.peer_ip, "9090")
        udp = peers("udp-client", veth.peer_ip, "8080")
        for n in (10, 1000, 3000):
            wanted.say(f"send {n}")
            other.say(f"send {n}")
            udp.say(f"send {n}")
        wanted.say("close")
        other.say("close")
        for port in (8080, 9090):
            wait_for(lambda: tcp_settled(port) and tcp_settled(port, veth.ns), what=f"port {port}'s connection over")
        seen = counters(counters_map(cap.proc.pid))[0]          # all of it, in ptcap's kernel counter
        wait_for(lambda: len(file_packets(theirs)) >= seen, what=f"tcpdump's file with {seen} packets")
        _, err = cap.stop()
    finally:
        dump.send_signal(signal.SIGINT)
        summary = dump.communicate(timeout=10)[1].decode()
    assert "packets captured" in err

    mine = [data for data, _ in read_pcap(ours)]
    reference = [data for data, _ in read_pcap(theirs)]
    assert len(reference) >= 10, (summary, len(mine))                      # handshake, data, echoes, acks, fins
    assert all(f[12:14] == b"\x08\x00" and f[23] == 6 for f in reference)
    assert len(mine) == len(reference)
    assert sorted(mine) == sorted(reference)          # same packets, byte for byte
    assert wait_clean() == []

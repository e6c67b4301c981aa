"""Capture anywhere: the cgroup-skb backend, other network namespaces, interfaces that come
and go, and tcpdump's file rotation."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from conftest import (PYTHON, comments, file_packets, free_port, free_subnet, programs_of, ptcap_argv, run,
                      tshark_fields, wait_clean, wait_for)

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

SEND_UDP = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b'h' * int(sys.argv[4]), (sys.argv[1], int(sys.argv[2])))
    if i % 200 == 199:
        time.sleep(0.01)     # let lo's backlog drain: nothing lost before the capture
"""


def send_udp(addr: str, port: int, count: int = 1, netns: str | None = None, size: int = 5) -> int:
    argv = [PYTHON, "-c", SEND_UDP, addr, str(port), str(count), str(size)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(argv, check=True, timeout=20)
    return proc.returncode


def encap(path) -> set[str]:
    return {row[0] for row in tshark_fields(path, "frame.encap_type")}


@pytest.mark.parametrize("backend", ["tc", "cgroup-skb"])
def test_both_backends_attribute_udp_on_loopback(backend, peers, capture, tmp_path):
    port = str(free_port())
    server = peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "o.pcapng"
    cap = capture("--backend", backend, "-i", "lo", "-w", str(out), "-c", "2", f"udp port {port}")
    client.say("send 9")
    cap.finish()
    rows = tshark_fields(out, "frame.comment", "udp.srcport", "frame.packet_flags_direction", "udp.length")
    assert len(rows) == 2         # each loopback packet once, leaving, with both ends
    sport = client.ready.split()[2]
    for comment, src, direction, length in rows:
        assert int(length) == 8 + 9 and int(direction, 16) == 2
        sender, receiver = (client, server) if src == sport else (server, client)
        ctx = comments(comment)
        assert (ctx["PID"], ctx["ReceiverPID"]) == (str(sender.pid), str(receiver.pid)), comment
    # cgroup_skb sees packets from the IP header: raw IP (encapsulation 7 in tshark)
    assert encap(out) == ({"7"} if backend == "cgroup-skb" else {"1"})
    assert wait_clean() == []


def test_raw_ip_file_of_several_interfaces_reads_in_tcpdump(veth, capture, tmp_path):
    """A cgroup-skb capture of two interfaces is two raw-IP interface blocks: tcpdump (whose
    libpcap refuses a second LINKTYPE_RAW block), tshark and ptcap -r all read it."""
    out = tmp_path / "o.pcapng"
    port = str(free_port())
    cap = capture("--backend", "cgroup-skb", "-i", "lo", "-i", veth.host_if, "-w", str(out), "-c", "2",
                  f"udp port {port}")
    send_udp("127.0.0.1", int(port), count=2)
    cap.finish()
    res = run(["tcpdump", "-n", "-r", str(out)], check=False)
    assert res.returncode == 0, res.stderr
    assert len([l for l in res.stdout.splitlines() if f"127.0.0.1.{port}: UDP" in l]) == 2, res.stdout
    assert encap(out) == {"7"}
    assert len(run(ptcap_argv("-n", "-r", str(out))).stdout.splitlines()) == 2
    assert wait_clean() == []


def test_cgroup_skb_rejects_link_layer_filters():
    res = subprocess.run(ptcap_argv("--backend", "cgroup-skb", "-i", "lo", "ether host 00:00:00:00:00:01"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stderr.startswith("ptcap: ") and res.stderr.count("\n") == 1


@pytest.mark.parametrize("backend", ["tc", "cgroup-skb"])
def test_capture_inside_another_namespace(backend, veth, capture, tmp_path):
    """--netns NAME -i any: the namespace's own interfaces, named after it in the file."""
    out = tmp_path / "o.pcapng"
    port = free_port()
    cap = capture("--backend", backend, "--netns", veth.ns, "-i", "any", "-w", str(out), "-c", "1",
                  f"udp port {port}")
    server = subprocess.Popen(veth.exec(PYTHON, "-c", """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', int(sys.argv[1])))
print('ready', flush=True); s.recvfrom(100)
""", str(port)), stdout=subprocess.PIPE, text=True)
    server.stdout.readline()
    send_udp("127.0.0.1", port, netns=veth.ns)
    server.wait(timeout=10)
    cap.finish()
    rows = tshark_fields(out, "frame.interface_name", "frame.comment")
    assert [r[0] for r in rows] == [f"lo@{veth.ns}"]
    assert comments(rows[0][1])["ReceiverPID"] == str(server.pid)     # for the server
    assert wait_clean() == []


def test_list_interfaces_of_a_namespace(veth):
    """--netns: that namespace's interfaces, named after it, in libpcap's order with tcpdump's
    flags; 'any' is left out (with --netns it means every interface of each namespace)."""
    res = subprocess.run(ptcap_argv("-D", "--netns", veth.ns), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    assert res.stdout.splitlines() == [f"1.{veth.peer_if}@{veth.ns} [Up, Running, Connected]",
                                       f"2.lo@{veth.ns} [Up, Running, Loopback]"]
    mine = subprocess.run(ptcap_argv("-D"), capture_output=True, text=True, timeout=30).stdout
    assert f".{veth.host_if} [Up, Running, Connected]\n" in mine and ".lo [Up, Running, Loopback]\n" in mine


def test_missing_namespace_is_one_line():
    res = subprocess.run(ptcap_argv("--netns", "no-such-ns-xyz", "-c", "1"), capture_output=True, text=True,
                         timeout=30)
    assert (res.returncode, res.stderr) == (1, "ptcap: --netns no-such-ns-xyz: No such file or directory\n")
    assert wait_clean() == []


def test_interface_that_appears_and_disappears(capture, tmp_path):
    """-i any: a veth created while capturing is taken; deleting it ends only its part."""
    out = tmp_path / "o.pcapng"
    port = free_port()
    cap = capture("-i", "any", "-w", str(out), f"udp port {port}")
    filters_before = programs_of(cap.proc.pid, "ptcap_filter_")
    tag = f"{os.getpid() % 10000}"
    a, b = f"pta{tag}", f"ptb{tag}"
    net = free_subnet()
    try:
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        run(["ip", "addr", "add", f"{net}.1/24", "dev", a])
        run(["ip", "link", "set", a, "up"])
        run(["ip", "link", "set", b, "up"])
        mac = open(f"/sys/class/net/{b}/address").read().strip()
        run(["ip", "neigh", "add", f"{net}.2", "lladdr", mac, "dev", a])   # no ARP wait
        wait_for(lambda: len(programs_of(cap.proc.pid, "ptcap_filter_")) > len(filters_before),
                 what=f"ptcap to attach to {a}")
        send_udp(f"{net}.2", port, count=3)     # leaves through the new veth
        wait_for(lambda: [p.ifname for p in file_packets(out)].count(a) >= 3, what=f"3 packets on {a}")
    finally:
        run(["ip", "link", "del", a], check=False)
    # the gone veth's programs went with it, and nothing else of the capture's did
    wait_for(lambda: programs_of(cap.proc.pid, "ptcap_filter_") == filters_before, what="the veth's filters to go")
    send_udp("127.0.0.1", port)                   # the rest of the capture goes on
    wait_for(lambda: "lo" in [p.ifname for p in file_packets(out)], what="a packet on lo")
    _, err = cap.stop()
    assert cap.proc.returncode == 0, err
    names = [r[0] for r in tshark_fields(out, "frame.interface_name")]
    assert names.count(a) == 3
    assert "lo" in names
    assert wait_clean() == []


def test_a_new_interface_ends_an_idle_wait_at_once():
    """-i any writing a file sleeps up to a second per idle poll; a container's veth that
    appears meanwhile must be tapped at once, not after the wait (its first packets, the
    handshake, would be missed). The namespace's link notifications end the ring's wait: a
    wait of a minute returns when the veth is made, and the next look takes it."""
    import time

    from ptcap.kernel.session import CaptureConfig, Session
    tag = f"{os.getpid() % 10000}"
    a, b = f"ptw{tag}", f"ptx{tag}"
    session = Session(CaptureConfig(interfaces=["any"])).open()
    try:
        session.refresh()
        t0 = time.monotonic()
        maker = subprocess.Popen(["sh", "-c", f"sleep 0.3; ip link add {a} type veth peer name {b}"])
        session.ring.wait(60)
        waited = time.monotonic() - t0
        assert waited < 30, waited
        assert maker.wait(timeout=20) == 0
        taken = {i.name for i in session.refresh()}
        assert {a, b} <= taken, taken
    finally:
        run(["ip", "link", "del", a], check=False)
        session.close()
    assert wait_clean() == []


def _rotate_names(tool: list[str], d, *flags: str, packets: int = 2500) -> list[str]:
    d.mkdir()
    port = free_port()
    proc = subprocess.Popen([*tool, "-i", "lo", *flags, "-w", str(d / "cap.pcap"), f"udp port {port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        line = proc.stderr.readline()
        assert line, f"{tool[0]} ended before listening"
        if b"listening on" in line:
            break
    send_udp("127.0.0.1", port, count=packets, size=1000)     # about 2.6 MB
    send_udp("127.0.0.1", port, size=_LAST)                   # once a file holds it, all are written
    wait_for(lambda: _holds_the_last(d), what=f"{tool[0]}'s last datagram in its files")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    return sorted(os.listdir(d))


_LAST = 7       # the size of the datagram sent last


def _holds_the_last(d) -> bool:
    for name in os.listdir(d):
        packets = file_packets(d / name)
        if packets and packets[-1].orig_len == 14 + 20 + 8 + _LAST:
            return True
    return False


def test_rotation_sizes_use_tcpdumps_units():
    from ptcap.sinks.rotation import parse_size
    from ptcap.errors import PtcapError
    assert parse_size("1") == 1_000_000          # millions of bytes
    assert parse_size("2k") == 2048 and parse_size("1m") == 1 << 20 and parse_size("1G") == 1 << 30
    # ptcpdump's units too: its e2e tests rotate with `-C 1kb`
    assert parse_size("1kb") == 1024 and parse_size("2MB") == 2 << 20 and parse_size("1gb") == 1 << 30
    for bad in ("0", "1b", "kb", "1kk"):
        with pytest.raises(PtcapError, match="invalid file size"):
            parse_size(bad)


@pytest.mark.parametrize("flags", [("-C", "1"), ("-C", "1", "-W", "2"), ("-C", "1", "-W", "12")])
def test_rotation_names_files_like_tcpdump(flags, tmp_path):
    """Same traffic, same flags: the same file names as the real tcpdump, each readable."""
    mine = _rotate_names(ptcap_argv("-Q", "in"), tmp_path / "ptcap", *flags)
    # -Z root: tcpdump drops to its own user before opening rotated files; -U: each packet written at once
    theirs = _rotate_names(["tcpdump", "-U", "-Z", "root", "-Q", "in"], tmp_path / "tcpdump", *flags)
    assert mine == theirs, (mine, theirs)
    for name in mine:
        assert run(["tshark", "-r", str(tmp_path / "ptcap" / name)]).returncode == 0


def test_time_rotation_stops_after_w_files(tmp_path):
    pattern = str(tmp_path / "t-%s.pcapng")
    port = str(free_port())
    proc = subprocess.run(ptcap_argv("-i", "lo", "-G", "1", "-W", "2", "-w", pattern, f"udp port {port}"),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2 and all(f.startswith("t-") for f in files)
    for f in files:
        assert run(["tshark", "-r", str(tmp_path / f)]).returncode == 0

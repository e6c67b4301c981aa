"""Capture inside the kernel (--hook): where a packet was dropped and why, which path it
took, with real namespaces, real nftables rules, real tshark."""
from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import time

import pytest

from ptcap.kernel import btf
from conftest import (PYTHON, WAIT_TIMEOUT, comments, file_packets, free_port, ptcap_argv, run, tshark_fields,
                      wait_clean, wait_for, wait_received)

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

PORT = 22400        # ports in the veth fixture's own namespace (nothing else listens there)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(dst: str, count: int, ident: int = 0x5054) -> None:
    """ICMP echo requests from a raw socket (no ping binary needed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        for seq in range(count):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ptcap-drop-test"
            body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
            s.sendto(body, (dst, 0))
            time.sleep(0.05)
    finally:
        s.close()


def udp(dst: str, port: int, count: int = 1) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(count):
            s.sendto(b"nobody listens", (dst, port))
    finally:
        s.close()


@pytest.fixture
def dropping(veth):
    """The veth peer's namespace drops ICMP echo requests and TCP to PORT+50 coming in, and
    UDP to PORT+51 going out (nftables)."""
    run(veth.exec("nft", "add", "table", "inet", "ptcap_test"))
    run(veth.exec("nft", "add", "chain", "inet", "ptcap_test", "in",
                  "{ type filter hook input priority 0; }"))
    run(veth.exec("nft", "add", "rule", "inet", "ptcap_test", "in", "icmp", "type", "echo-request", "counter", "drop"))
    run(veth.exec("nft", "add", "rule", "inet", "ptcap_test", "in", "tcp", "dport", str(PORT + 50), "drop"))
    run(veth.exec("nft", "add", "chain", "inet", "ptcap_test", "out",
                  "{ type filter hook output priority 0; }"))
    run(veth.exec("nft", "add", "rule", "inet", "ptcap_test", "out", "udp", "dport", str(PORT + 51), "drop"))
    try:
        yield veth
    finally:
        run(veth.exec("nft", "delete", "table", "inet", "ptcap_test"), check=False)


def _nft_dropped(veth) -> int:
    """Echo requests the namespace's nftables rule has dropped so far."""
    listing = run(veth.exec("nft", "list", "chain", "inet", "ptcap_test", "in")).stdout
    return int(re.search(r"echo-request counter packets (\d+)", listing).group(1))


def _lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def _location(text: str) -> tuple[str, int]:
    """A drop location's function and offset, as the kernel prints its addresses:
    "nft_do_chain+0x3e8 [nf_tables]" where nf_tables is a module (Debian's kernels),
    "nft_do_chain+0x3e8" where it is built in."""
    m = re.fullmatch(r"([A-Za-z0-9_.]+)\+0x([0-9a-f]+)( \[[A-Za-z0-9_]+\])?", text)
    assert m, text
    return m.group(1), int(m.group(2), 16)


def test_a_location_in_a_module_reads_as_the_kernel_prints_it(tmp_path):
    """kallsyms names a module's function "nft_do_chain [nf_tables]": the location is
    "nft_do_chain+0x3e8 [nf_tables]" (the kernel's %pS without the length), not
    "nft_do_chain [nf_tables]+0x3e8"."""
    from ptcap.kernel.kallsyms import KernelSymbols
    listing = tmp_path / "kallsyms"
    listing.write_text("ffffffff81000000 T _stext\n"
                       "ffffffff81c2e040 T nf_hook_slow\n"
                       "ffffffff81c2e140 T nf_hook_slow_list\n"
                       "ffffffffc0a21000 t nft_do_chain\t[nf_tables]\n"
                       "ffffffffc0a22000 t nft_rule_expr\t[nf_tables]\n")
    symbols = KernelSymbols(str(listing))
    assert symbols.name(0xffffffffc0a213e8) == "nft_do_chain+0x3e8 [nf_tables]"
    assert _location(symbols.name(0xffffffffc0a213e8)) == ("nft_do_chain", 0x3e8)
    assert symbols.name(0xffffffff81c2e0e1) == "nf_hook_slow+0xa1"
    assert symbols.name(0x1000) == "0x1000"


def _kernel_has(symbol: str) -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.split()[2] == symbol for line in f if len(line.split()) >= 3)


def test_netfilter_drop_has_reason_location_and_comments(dropping, capture, tmp_path):
    """ICMP dropped by an nftables rule: each echo request is seen at kfree_skb with reason
    NETFILTER_DROP and the netfilter function that freed it, on screen and in the file."""
    out = tmp_path / "drops.pcapng"
    cap = capture("--hook", "kfree_skb", "-n", "--print", "-w", str(out), f"icmp and host {dropping.peer_ip}")
    ping(dropping.peer_ip, 3)
    wait_for(lambda: len(file_packets(out)) >= 3, what="the 3 dropped echo requests in the file")
    printed, err = cap.stop()
    lines = [l for l in _lines(printed) if "ICMP echo request" in l]
    assert len(lines) == 3, printed.decode() + err
    for line in lines:
        assert line.split()[1] == "kfree_skb"
        assert f"{dropping.host_ip} > {dropping.peer_ip}" in line
        assert ", Drop [NETFILTER_DROP at n" in line       # nf_hook_slow (x_tables) or nft_do_chain
    assert "3 packets captured" in err

    rows = tshark_fields(out, "frame.comment", "frame.interface_name", "icmp.type", "ip.dst")
    assert len(rows) == 3
    for comment, ifname, icmp_type, dst in rows:
        ctx = comments(comment)
        assert ctx["DropReason"] == "NETFILTER_DROP"
        func, off = _location(ctx["DropLocation"])
        assert func in ("nf_hook_slow", "nft_do_chain") and off > 0
        assert (ifname, icmp_type, dst) == ("kfree_skb", "8", dropping.peer_ip)
    # ptcap reads its own file back, drop included
    back = run(ptcap_argv("-r", str(out), "-n")).stdout
    assert back.count("Drop [NETFILTER_DROP at ") == 3
    assert wait_clean() == []


def test_locally_sent_drop_is_raw_ip_with_its_process(dropping, capture, tmp_path):
    """A datagram dropped on its way out, before it has a link-layer header: captured from
    its IP header, on the hook's raw-IP interface, with the process that sent it."""
    out = tmp_path / "raw.pcapng"
    cap = capture("--hook", "kfree_skb", "-w", str(out), f"udp port {PORT + 51}")
    sender = subprocess.run(["ip", "netns", "exec", dropping.ns, PYTHON, "-c", (
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"try: s.sendto(b'out', ('{dropping.host_ip}', {PORT + 51}))\nexcept OSError as e: print(e)")],
        capture_output=True, text=True)
    assert "not permitted" in sender.stdout
    wait_for(lambda: len(file_packets(out)) >= 1, what="the dropped datagram in the file")
    cap.stop()
    rows = tshark_fields(out, "frame.interface_name", "frame.interface_description", "frame.encap_type",
                         "ip.src", "udp.dstport", "frame.comment")
    assert len(rows) == 1
    ifname, description, encap, src, dport, comment = rows[0]
    assert (ifname, encap, src, dport) == ("kfree_skb", "7", dropping.peer_ip, str(PORT + 51))  # 7: raw IP
    assert "from the IP header" in description
    ctx = comments(comment)
    assert ctx["DropReason"] == "NETFILTER_DROP"
    assert ctx["PID"].isdigit() and ctx["ThreadName"].startswith("python")


def test_full_receive_buffer_names_the_receiving_process(veth, capture):
    """A UDP server that never reads: once its receive buffer is full, the datagrams are
    dropped (SOCKET_RCVBUFF) for its socket, and the drops name it."""
    server = subprocess.Popen(["ip", "netns", "exec", veth.ns, PYTHON, "-c", (
        "import signal, socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)\n"
        f"s.bind(('0.0.0.0', {PORT + 6}))\nprint('ready', flush=True)\nsignal.pause()")],   # until killed
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().startswith("ready")
        cap = capture("--hook", "kfree_skb", "-n", f"udp port {PORT + 6}")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            s.sendto(b"x" * 1000, (veth.peer_ip, PORT + 6))
        s.close()
        cap.wait_received(40)
        printed, err = cap.stop()
        # `ip netns exec` execs python: the server's pid is the one Popen started
        lines = _lines(printed)
        assert len(lines) >= 40, printed.decode() + err
        # kfree_skb names the socket it drops a packet for from 6.11 on (rx_sk); before, a
        # received packet that never reached a socket has no owner to name
        names_receiver = btf.vmlinux().tracepoint_args("kfree_skb") >= 4
        for line in lines:
            assert "Drop [SOCKET_RCVBUFF at " in line
            if names_receiver:
                assert line.split()[2].endswith(f".{server.pid}"), line
            else:
                assert line.split()[2] == "IP", line
    finally:
        server.kill()
        server.wait()


def test_consume_skb_sees_freed_replies(veth, capture):
    """The ICMP port-unreachable a closed port sends back is freed normally: consume_skb."""
    cap = capture("--hook", "consume_skb", "-n", f"icmp and host {veth.peer_ip}")
    udp(veth.peer_ip, PORT + 5)
    cap.wait_received(1)
    printed, err = cap.stop()
    lines = _lines(printed)
    assert lines, err
    assert all(l.split()[1] == "consume_skb" for l in lines)
    assert any(f"ICMP {veth.peer_ip} udp port {PORT + 5} unreachable" in l for l in lines), printed.decode()


def test_udp_to_closed_port_is_no_socket(veth, capture):
    cap = capture("--hook", "kfree_skb", "-n", f"udp and host {veth.peer_ip}")
    udp(veth.peer_ip, PORT + 1, 2)
    cap.wait_received(2)
    printed, err = cap.stop()
    lines = _lines(printed)
    assert len(lines) == 2, printed.decode() + err
    for line in lines:
        assert f"> {veth.peer_ip}.{PORT + 1}: UDP, length 14" in line
        assert "Drop [NO_SOCKET at __udp4_lib_rcv+0x" in line


def test_ipv6_udp_to_closed_port(capture):
    port = free_port()        # closed again once free_port returns it
    cap = capture("--hook", "kfree_skb", "-n", f"ip6 and udp port {port}")
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"six", ("::1", port))
    s.close()
    cap.wait_received(1)
    printed, err = cap.stop()
    lines = _lines(printed)
    assert len(lines) == 1, printed.decode() + err
    assert f"IP6 ::1." in lines[0] and f"> ::1.{port}: UDP, length 3" in lines[0]
    assert "Drop [NO_SOCKET at __udp6_lib_rcv+0x" in lines[0]


def test_protochain_filter_at_a_hook(capture):
    """A filter that follows IPv6 extension headers (protochain: a loop in the kernel, bounded
    without may_goto before 6.9) finds the UDP behind a hop-by-hop header of a dropped packet."""
    port = free_port()
    cap = capture("--hook", "kfree_skb", "-n", "ip6 proto 0 and ip6 protochain 17")
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))  # PadN
        s.sendto(b"hop", ("::1", port))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, b"")
        s.sendto(b"plain", ("::1", port))      # no extension header: the filter leaves it out
    finally:
        s.close()
    cap.wait_received(1)
    printed, err = cap.stop()
    lines = _lines(printed)
    assert len(lines) == 1, printed.decode() + err
    assert f"IP6 ::1 > ::1: HBH " in lines[0] and f" > {port}: UDP, length 3" in lines[0], lines[0]
    assert "Drop [NO_SOCKET at __udp6_lib_rcv+0x" in lines[0]


def test_killed_capture_leaves_no_hook_behind(capture):
    cap = capture("--hook", "kfree_skb", "--hook", "net_dev_queue", "udp")
    cap.send(9)
    cap.proc.wait()
    assert wait_clean() == []


def test_filter_in_kernel_excludes_drops(dropping, capture):
    """A filter that excludes the dropped packets: nothing reaches the ring at all."""
    cap = capture("--hook", "kfree_skb", "-n", f"udp and host {dropping.peer_ip}")
    ping(dropping.peer_ip, 3)
    wait_for(lambda: _nft_dropped(dropping) >= 3, what="the namespace's 3 dropped pings")
    printed, err = cap.stop()
    assert printed == b""
    assert "0 packets captured" in err and "0 packets received by filter" in err


def test_backtrace_counts_stacks_through_netfilter(dropping):
    proc = subprocess.Popen(ptcap_argv("backtrace", "--hook", "kfree_skb", "-c", "4",
                                       f"icmp and host {dropping.peer_ip}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert line.removeprefix("ptcap: ").startswith("listening on kfree_skb"), line
    ping(dropping.peer_ip, 4)
    out, err = proc.communicate(timeout=WAIT_TIMEOUT)
    assert proc.returncode == 0, err
    assert "4 packets matched" in err
    blocks = [b for b in out.strip().split("\n\n") if b]
    assert blocks
    total = 0
    for block in blocks:
        head, *frames = block.splitlines()
        total += int(head.split()[0])
        assert head.endswith(":")
        assert all(f.startswith("    ") and "+0x" in f for f in frames)
        names = [f.strip().split("+")[0] for f in frames]
        assert "nf_hook_slow" in names, block
        assert not names[0].startswith(("bpf_", "__bpf_trace", "__traceiter_"))
    assert total == 4
    assert wait_clean() == []


def test_udp_drop_backtrace_until_sigint(veth):
    proc = subprocess.Popen(ptcap_argv("backtrace", "--hook", "kfree_skb", f"udp port {PORT + 2}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().removeprefix("ptcap: ").startswith("listening on")
    udp(veth.peer_ip, PORT + 2, 3)
    wait_received(proc.pid, 3)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=WAIT_TIMEOUT)
    assert proc.returncode == 0, err
    # the first datagram may wait for ARP (a stack of its own)
    blocks = [b.splitlines() for b in out.strip().split("\n\n")]
    assert sum(int(b[0].split()[0]) for b in blocks) == 3, out
    # the function that fires the tracepoint: sk_skb_reason_drop from 6.11 on, kfree_skb_reason before
    dropper = "sk_skb_reason_drop" if _kernel_has("sk_skb_reason_drop") else "kfree_skb_reason"
    for block in blocks:
        assert block[1].strip().startswith(f"{dropper}+0x"), out
        assert block[2].strip().startswith("__udp4_lib_rcv+0x"), out
    assert wait_clean() == []


def test_transmit_and_receive_hooks_with_process(dropping, capture):
    """A TCP connection attempt to a closed port of the namespace: the SYN is seen queued,
    handed to the driver and received, attributed to the connecting process; the reset
    answers it (tcp_send_reset shows the SYN that caused it)."""
    cap = capture("--hook", "net_dev_queue", "--hook", "net_dev_start_xmit", "--hook", "netif_receive_skb",
                  "--hook", "tcp_send_reset", "-n", f"tcp port {PORT + 3}")
    client = subprocess.run([PYTHON, "-c", (
        "import socket,sys\ns=socket.socket(); s.settimeout(2)\n"
        f"try: s.connect(('{dropping.peer_ip}', {PORT + 3}))\nexcept OSError as e: print(e)")],
        capture_output=True, text=True)
    assert "refused" in client.stdout
    cap.wait_received(6)      # the SYN at its four hooks, the reset at two at least
    printed, err = cap.stop()
    lines = _lines(printed)
    syn = [l for l in lines if "Flags [S]" in l]
    rst = [l for l in lines if "Flags [R.]" in l]
    hooks = [l.split()[1] for l in syn]
    assert hooks.count("net_dev_queue") == 1 and hooks.count("net_dev_start_xmit") == 1
    assert hooks.count("netif_receive_skb") == 1 and hooks.count("tcp_send_reset") == 1, printed.decode()
    for line in syn:
        if line.split()[1] != "tcp_send_reset":
            assert line.split()[2] == "python3" or line.split()[2].startswith("python"), line
    assert {l.split()[1] for l in rst} >= {"net_dev_queue", "netif_receive_skb"}
    assert any(" Out IP " in l for l in syn) and any(" In IP " in l for l in syn)


def test_direct_transmit_is_seen_where_it_arrives(veth, capture):
    """A packet socket with PACKET_QDISC_BYPASS hands frames straight to the driver
    (__dev_direct_xmit, as AF_XDP's copy mode does). On this kernel that path fires neither
    net_dev_queue nor net_dev_start_xmit (the tracepoint sits in xmit_one, which it skips), and
    tc never sees it either; on a veth the frame shows up at the peer's netif_receive_skb."""
    cap = capture("--hook", "net_dev_queue", "--hook", "net_dev_start_xmit", "--hook", "netif_receive_skb",
                  "-n", f"udp port {PORT + 8}")
    mac = bytes.fromhex(open(f"/sys/class/net/{veth.host_if}/address").read().strip().replace(":", ""))
    src, dst = socket.inet_aton(veth.host_ip), socket.inet_aton(veth.peer_ip)
    udp_part = struct.pack("!HHHH", 40000, PORT + 8, 8 + 6, 0) + b"direct"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp_part), 1, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    frame = b"\xff" * 6 + mac + b"\x08\x00" + ip + udp_part
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.setsockopt(263, 20, 1)            # SOL_PACKET, PACKET_QDISC_BYPASS
        s.bind((veth.host_if, 0))
        s.send(frame)
    finally:
        s.close()
    cap.wait_received(1)
    printed, err = cap.stop()
    lines = _lines(printed)
    assert [l.split()[1] for l in lines] == ["netif_receive_skb"], printed.decode() + err
    assert f"{veth.host_ip}.40000 > {veth.peer_ip}.{PORT + 8}: UDP, length 6" in lines[0]


def test_tcp_retransmit_shows_the_segment(dropping, capture):
    """SYNs to a port whose packets the namespace drops are retransmitted; the hook sees
    them with their headers (found where the transmitted clone pushed them)."""
    cap = capture("--hook", "tcp_retransmit_skb", "-n", f"tcp port {PORT + 50}")
    subprocess.run([PYTHON, "-c", (
        "import socket\ns=socket.socket(); s.settimeout(1.6)\n"
        f"try: s.connect(('{dropping.peer_ip}', {PORT + 50}))\nexcept OSError: pass")])
    cap.wait_received(1)
    printed, err = cap.stop()
    lines = _lines(printed)
    assert lines, err
    for line in lines:
        assert line.split()[1] == "tcp_retransmit_skb"
        assert f"{dropping.host_ip}." in line and f"> {dropping.peer_ip}.{PORT + 50}: Flags [S]" in line


def test_rate_limit_counts_what_it_holds_back(veth, capture):
    cap = capture("--hook", "kfree_skb", "--hook-rate", "5", "-n", f"udp port {PORT + 4}")
    udp(veth.peer_ip, PORT + 4, 40)
    wait_received(cap.proc.pid, 40, limited=True)
    printed, err = cap.stop()
    captured = len(_lines(printed))
    assert 5 <= captured <= 10, err      # one or two one-second windows
    limited = next(int(l.split()[0]) for l in err.splitlines() if "over --hook-rate 5/s" in l)
    assert captured + limited == 40


def test_list_hooks():
    res = run(ptcap_argv("--list-hooks"))
    rows = {l.split()[0]: l.split()[1] for l in res.stdout.splitlines()}
    assert list(rows) == ["kfree_skb", "consume_skb", "net_dev_queue", "net_dev_start_xmit",
                          "netif_receive_skb", "tcp_retransmit_skb", "tcp_send_reset", "dev_direct_xmit"]
    assert {rows[h] for h in list(rows)[:-1]} == {"supported"}
    # the fentry hook is there exactly when this kernel loads fentry programs at all
    assert rows["dev_direct_xmit"] == ("supported" if _fentry_loads() else "unsupported"), res.stdout
    if rows["dev_direct_xmit"] == "unsupported":
        assert f"failed on Linux {os.uname().release}: " in res.stdout
    assert wait_clean() == []


def _fentry_loads() -> bool:
    """Does the kernel take the smallest fentry program (return 0) on __dev_direct_xmit?"""
    from ptcap.kernel import bpf, btf
    func = btf.vmlinux().type_id(btf.KIND_FUNC, "__dev_direct_xmit")
    try:
        fd = bpf.prog_load(bpf.ProgType.TRACING, bytes.fromhex("b7000000000000009500000000000000"),
                           name="ptcap_t_fentry", expected_attach_type=bpf.AttachType.TRACE_FENTRY,
                           attach_btf_id=func)
    except bpf.BPFError:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("args, message", [
    (["--hook", "kfree"], "--hook kfree: unknown hook"),
    (["--hook", "kfree_skb", "-i", "lo"], "-i does not apply to --hook captures"),
    (["--hook-rate", "10"], "--hook-rate limits --hook captures: give --hook"),
    (["--hook", "kfree_skb", "ether["], "syntax error"),
    (["--hook", "kfree_skb", "-w", "/tmp/ptcap-never-written.pcap"], "write pcapng instead"),
])
def test_bad_hook_arguments(args, message):
    res = run(ptcap_argv(*args), check=False)
    assert res.returncode == 1
    assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_backtrace_needs_a_hook():
    res = run(ptcap_argv("backtrace", "icmp"), check=False)
    assert res.returncode == 1 and "backtrace needs --hook" in res.stderr


def test_wireshark_drops_interface_filters_by_reason(dropping, tmp_path):
    """tshark -i ptcap-drops: the extcap captures drops live (capture filter in the kernel)
    and the dissector's ptcap.drop.* fields select them by reason."""
    from test_extcap import Tshark, installed
    installed.__wrapped__()       # the extcap and dissector of this tree are installed
    peer = dropping.peer_ip
    t = Tshark(tmp_path, "-f", f"host {peer}", "-Y", 'ptcap.drop.reason == "NETFILTER_DROP"',
               "-T", "fields", "-e", "ptcap.drop.reason", "-e", "ptcap.drop.location", "-e", "icmp.type",
               interface="ptcap-drops", duration=5)
    try:
        t.wait_listening()
        ping(peer, 3)                   # dropped by the nftables rule: NETFILTER_DROP
        udp(peer, PORT + 60, count=2)   # nobody listens there: NO_SOCKET, filtered out by -Y
        out, err = t.finish()
    finally:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.communicate()
    rows = [line.split("\t") for line in out.splitlines() if line]
    assert len(rows) == 3, out + err
    for reason, location, icmp_type in rows:
        assert reason == "NETFILTER_DROP" and icmp_type == "8"
        func, off = _location(location)
        assert func in ("nf_hook_slow", "nft_do_chain") and off > 0, location
    assert wait_clean() == []

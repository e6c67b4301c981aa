"""The kernel smoke checks of selectors, namespaces, files and hooks (run by .ci/kernel_smoke.py).

Each starts a real capture, makes traffic once ptcap says it listens (or, where ptcap must
first find something new, until it has taken what it waits for: bounded), and checks what it
printed or wrote; every capture's normal exit is checked for leftovers (smoke_lib.Capture).
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from smoke_lib import (HOST_IF, HOST_IP, NS, NS_IP, ROOT, SENDER_PYTHON, START_TIMEOUT, TMP, Capture,
                       Sender, free_port, sh)
from ptcap.kernel.cgroup import v2_mount

NOBODY = 65534


def check_pname_follows_children() -> None:
    """--pname k19par -f: the named process's packets and those of a child it forks after the
    start (exec'd under another name, so only following can select it); not another's."""
    parent = Sender("k19par", "127.0.0.1")
    other = Sender("k19stranger", "127.0.0.1")
    port = free_port()
    cap = Capture("-i", "lo", "-n", "-c", "2", "--pname", "k19par", "-f", f"udp and dst port {port}")
    try:
        cap.wait_listening()
        other.send(port, "127.0.0.1")
        parent.send(port, "127.0.0.1")
        other.send(port, "127.0.0.1")
        child = parent.spawn("k19kid", port, "127.0.0.1")
        lines = cap.finish()
    finally:
        parent.stop()
        other.stop()
    assert len(lines) == 2, lines
    assert f"k19par.{parent.pid} " in lines[0] and f"k19kid.{child} " in lines[1], lines


def _tshark_home() -> dict[str, str]:
    """tshark's environment: a home of its own, with the tree's dissector unless one is
    installed for everyone (two would clash)."""
    home = TMP / "home-r"
    if not list(Path("/usr/lib").glob("*/wireshark/plugins/**/ptcap.lua")):
        (home / ".local/lib/wireshark/plugins").mkdir(parents=True, exist_ok=True)
        (home / ".local/lib/wireshark/plugins/ptcap.lua").write_bytes((ROOT / "lua" / "ptcap.lua").read_bytes())
    home.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home)}


def check_uid_written_file_read_by_tshark() -> None:
    """--uid 65534 -w FILE: a datagram of nobody's kept, root's not; tshark reads the pcapng
    back with the dissector's fields (ptcap.pid, .uid, .comm, .user)."""
    mine = Sender("k19nobody", "127.0.0.1", user=NOBODY)
    roots = Sender("k19root", "127.0.0.1")
    closed = free_port()
    out = TMP / "uid.pcapng"
    cap = Capture("-i", "lo", "-c", "2", "--uid", str(NOBODY), "-w", str(out),
                  f"udp and (dst port {mine.port} or dst port {closed})")
    try:
        cap.wait_listening()
        for _ in range(2):
            roots.send(closed, "127.0.0.1")
            mine.send(mine.port, "127.0.0.1")
        cap.finish()
    finally:
        mine.stop()
        roots.stop()
    res = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-E", "separator=;", "-e", "ptcap.pid",
                          "-e", "ptcap.uid", "-e", "ptcap.comm", "-e", "ptcap.user", "-e", "udp.dstport"],
                         capture_output=True, text=True, timeout=120, env=_tshark_home())
    rows = [r.split(";") for r in res.stdout.splitlines()]
    # one loopback copy names both its ends: here the same process twice
    want = [f"{mine.pid},{mine.pid}", f"{NOBODY},{NOBODY}", "k19nobody,k19nobody", "nobody,nobody", str(mine.port)]
    assert rows == [want, want], (rows, res.stderr)


def check_container_selector() -> None:
    """--container-id PREFIX with no runtime: a cgroup v2 directory made after the start and
    named as Docker names a container's (docker-<id>.scope) is admitted in the kernel at its
    mkdir (tp_btf/cgroup_mkdir), so a process started in it is selected from its first packet;
    one in a sibling container's directory is not. (A container runtime in the VM would test
    the runtimes' protocols, which do not depend on the kernel, at the cost of minutes.)"""
    root = v2_mount()
    assert root, "no cgroup v2 here"
    cid, other_id = os.urandom(32).hex(), os.urandom(32).hex()
    dirs = [Path(root) / f"docker-{i}.scope" for i in (cid, other_id)]
    nowhere = f"unix://{TMP}/nowhere.sock"
    port = free_port()
    cap = Capture("-i", "lo", "-n", "-c", "2", "--container-id", cid[:12], "--docker-address", nowhere,
                  "--containerd-address", str(TMP / "nowhere.sock"), "--cri-runtime-address",
                  str(TMP / "nowhere.sock"), f"udp and dst port {port}")
    senders = []
    try:
        cap.wait_listening()
        for d in dirs:
            d.mkdir()
        senders = [Sender("k19ctr", "127.0.0.1", cgroup=str(dirs[0])),
                   Sender("k19sibling", "127.0.0.1", cgroup=str(dirs[1]))]
        for _ in range(2):
            senders[1].send(port, "127.0.0.1")
            senders[0].send(port, "127.0.0.1")
        lines = cap.finish()
    finally:
        for s in senders:
            s.stop()
        for d in dirs:
            if d.exists():
                d.rmdir()
    assert len(lines) == 2, lines
    assert all(f"k19ctr.{senders[0].pid} " in l and f"Container [{cid[:12]}]" in l for l in lines), lines


def check_netns_by_name() -> None:
    """--netns NAME (no -i): the namespace's own interfaces, named IFACE@NAME."""
    sender = Sender("k19inns", NS_IP, NS)
    port = free_port()
    cap = Capture("--netns", NS, "-n", "-c", "2", f"udp and dst port {port}")
    try:
        cap.wait_listening()
        for _ in range(2):
            sender.send(port, HOST_IP)
        lines = cap.finish()
    finally:
        sender.stop()
    assert len(lines) == 2, lines
    assert all(f" k19n@{NS} k19inns.{sender.pid} Out " in l for l in lines), lines


def _new_namespace_followed(name: str, *args: str) -> None:
    """ptcap ARGS -c 1: a namespace made after the start, with a sender on its lo sending
    until ptcap has taken one (ptcap looks for new namespaces five times a second)."""
    port = free_port()
    cap = Capture(*args, "-n", "-c", "1", f"udp and dst port {port}")
    sender = None
    try:
        cap.wait_listening()
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sender = Sender("k19newns", "127.0.0.1", name)
        deadline = time.monotonic() + 60
        while cap.proc.poll() is None:
            assert time.monotonic() < deadline, "nothing of the new namespace was captured"
            sender.send(port, "127.0.0.1")
            time.sleep(0.2)
        lines = cap.finish()
    finally:
        if sender:
            sender.stop()
        sh("ip", "netns", "del", name, check=False)
    assert len(lines) == 1 and f" lo@{name} k19newns.{sender.pid} " in lines[0], lines


def check_netns_newly_tc() -> None:
    _new_namespace_followed("k19newly", "--netns", "newly")


def check_netns_any_cgroup_skb() -> None:
    _new_namespace_followed("k19any", "--netns", "any", "--backend", "cgroup-skb")


HOOKS = ["kfree_skb", "consume_skb", "net_dev_queue", "net_dev_start_xmit", "netif_receive_skb",
         "tcp_retransmit_skb", "tcp_send_reset"]
SILENT = "10.219.79.9"        # routed on the veth, never answered: SYNs to it are retransmitted
SILENT_MAC = "02:00:00:19:79:09"  # its neighbour entry: sent (a SYN still queued is not retransmitted)


def _direct_frame(port: int) -> bytes:
    import struct
    mac = bytes.fromhex(Path(f"/sys/class/net/{HOST_IF}/address").read_text().strip().replace(":", ""))
    udp = struct.pack("!HHHH", 40000, port, 8 + 6, 0) + b"direct"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(HOST_IP), socket.inet_aton(NS_IP))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


def _bare_ack(dst: str, port: int) -> None:
    """A TCP ACK out of nowhere (a raw socket; the kernel adds the IP header)."""
    import struct
    src = HOST_IP
    tcp = struct.pack("!HHIIBBHHH", 40001, port, 1, 1, 5 << 4, 0x10, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        s.sendto(tcp, (dst, 0))
    finally:
        s.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


LISTENER = "import socket, sys\ns = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\n" \
           "print(s.getsockname()[1], flush=True); sys.stdin.read()"


def _connect(host: str, port: int, timeout: float) -> None:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        pass
    finally:
        s.close()


def check_every_hook() -> None:
    """Every hook of --list-hooks in one capture: a datagram from the namespace to a closed
    port here (net_dev_queue with its sender in the namespace; kfree_skb NO_SOCKET here; the
    ICMP error it makes, consume_skb there), a SYN to a closed port there (net_dev_queue,
    net_dev_start_xmit here, netif_receive_skb there; the reset, tcp_send_reset, as the reset a
    listener sends for an ACK), a SYN nobody answers (tcp_retransmit_skb), and a PACKET_QDISC_BYPASS frame, which passes no tracepoint
    (dev_direct_xmit: fentry on __dev_direct_xmit, where the kernel has BPF trampolines;
    where it has not, ptcap says so, naming the kernel, and the rest is checked)."""
    udp_port, rst_port, silent_port = free_port(), free_port(), free_port()
    expr = f"port {udp_port} or port {rst_port} or port {silent_port} or port 40001 or (icmp and host {NS_IP})"
    hooks = [a for h in HOOKS for a in ("--hook", h)]
    cap = Capture(*hooks, "--hook", "dev_direct_xmit", "-n", expr)
    deadline = time.monotonic() + START_TIMEOUT
    while "listening on" not in cap.err.read_text() and cap.proc.poll() is None:
        assert time.monotonic() < deadline, "ptcap did not start"
        time.sleep(0.2)
    direct = cap.proc.poll() is None
    if not direct:
        err = cap.err.read_text()
        assert "--hook dev_direct_xmit: loading program" in err and f"on Linux {os.uname().release}" in err, err
        print(f"  (no fentry here: {err.splitlines()[0]})")
        cap = Capture(*hooks, "-n", expr)
        cap.wait_listening()
    sh("ip", "route", "add", f"{SILENT}/32", "dev", HOST_IF)
    sh("ip", "neigh", "add", SILENT, "lladdr", SILENT_MAC, "dev", HOST_IF, "nud", "permanent")
    sender = Sender("k19hook", NS_IP, NS)
    listener = subprocess.Popen(["ip", "netns", "exec", NS, SENDER_PYTHON, "-c", LISTENER, NS_IP],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        listening = int(listener.stdout.readline())
        sender.send(udp_port, HOST_IP)
        _connect(NS_IP, rst_port, 5)
        _connect("::1", rst_port, 5)             # the IPv6 reset (tcp_v6_send_reset)
        _bare_ack(NS_IP, listening)              # a listener answers an ACK with a reset
        _connect(SILENT, silent_port, 1.6)       # the SYN again after about 1 s
        if direct:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            try:
                s.setsockopt(263, 20, 1)            # SOL_PACKET, PACKET_QDISC_BYPASS
                s.bind((HOST_IF, 0))
                s.send(_direct_frame(udp_port))
            finally:
                s.close()
    finally:
        sender.stop()
        listener.communicate(timeout=30)
        sh("ip", "neigh", "del", SILENT, "dev", HOST_IF, check=False)
        sh("ip", "route", "del", f"{SILENT}/32", "dev", HOST_IF, check=False)
    cap.proc.send_signal(2)                      # SIGINT: what was seen is printed, then exit 0
    lines = cap.finish()
    at = {h: [l for l in lines if l.split()[1] == h] for h in [*HOOKS, "dev_direct_xmit"]}
    report = "\n".join(lines) + "\n(stderr) " + cap.err.read_text()
    assert any("k19hook" in l and f".{udp_port}: UDP" in l for l in at["net_dev_queue"]), report
    assert any(f"> {HOST_IP}.{udp_port}: UDP" in l and "Drop [NO_SOCKET at " in l for l in at["kfree_skb"]), report
    assert any(f"udp port {udp_port} unreachable" in l for l in at["consume_skb"]), report
    syn = f"> {NS_IP}.{rst_port}: Flags [S]"
    for hook in ("net_dev_queue", "net_dev_start_xmit", "netif_receive_skb"):
        assert any(syn in l for l in at[hook]), (hook, report)
    assert any(f"{HOST_IP}.40001 > {NS_IP}." in l and "Flags [.]" in l for l in at["tcp_send_reset"]), report
    # a reset for a packet no socket took: the tracepoint fires for those from 6.10 on, before
    # ptcap takes fentry on tcp_v4_send_reset/tcp_v6_send_reset instead
    assert any(syn in l for l in at["tcp_send_reset"]), report
    assert any(f"> ::1.{rst_port}: Flags [S]" in l for l in at["tcp_send_reset"]), report
    assert any(f"> {SILENT}.{silent_port}: Flags [S]" in l for l in at["tcp_retransmit_skb"]), report
    if direct:
        assert any(f"{HOST_IP}.40000 > {NS_IP}.{udp_port}: UDP, length 6" in l for l in at["dev_direct_xmit"]), report


CHECKS = [check_pname_follows_children, check_uid_written_file_read_by_tshark, check_container_selector,
          check_netns_by_name, check_netns_newly_tc, check_netns_any_cgroup_skb, check_every_hook]

"""Local conversations: each packet once on loopback (as tcpdump -i lo shows it), naming both
local ends, its sender and its receiver; the same across veth pairs to another namespace."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (PYTHON, ROOT, comments, counters, counters_map, file_packets, free_port, free_subnet, run,
                      tcp_settled, tshark_fields, wait_clean, wait_for)
from ptcap.kernel import tcattach

LUA = ROOT / "lua" / "ptcap.lua"
CURLS = 50


def _http_server(*prefix: str, addr: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    """python's http.server on an ephemeral port (HTTP/1.0: it closes after each answer)."""
    proc = subprocess.Popen([*prefix, PYTHON, "-u", "-m", "http.server", "0", "--bind", addr],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd="/")
    line = proc.stdout.readline()
    m = re.search(r"port (\d+)", line)
    assert m, line
    return proc, int(m.group(1))


def _start(argv: list[str], stdout=subprocess.DEVNULL) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        if "listening on" in line:       # tcpdump's starts with "tcpdump: "
            return proc
    proc.kill()
    raise AssertionError(f"{argv[0]} did not start: {proc.communicate()[1].decode()}")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=30)[1].decode()


def _expert_tcp_problems(path) -> list[str]:
    res = run(["tshark", "-r", str(path), "-q", "-z", "expert"])
    return [l for l in res.stdout.splitlines() if re.search(r"retransmission|dup(licate)? ack", l, re.I)]


def _installed_dissectors() -> list[str]:
    """ptcap.lua files tshark loads by itself (a global install): they would clash with the
    tree's (Wireshark refuses a second protocol of the same name)."""
    res = run(["tshark", "-G", "folders"])
    dirs = [line.split("\t", 1)[1].strip() for line in res.stdout.splitlines()
            if line.lower().startswith(("global lua plugins", "personal lua plugins"))]
    return [os.path.join(d, "ptcap.lua") for d in dirs if os.path.exists(os.path.join(d, "ptcap.lua"))]


def _dissector(path, *args: str, home) -> list[str]:
    """tshark with this tree's lua/ptcap.lua, any installed one hidden (in a private mount
    namespace: what is tested is the file in the tree, whatever is installed)."""
    env = dict(os.environ, HOME=str(home))
    hide = "".join(f"mount --bind /dev/null '{p}' && " for p in _installed_dissectors())
    res = subprocess.run(["unshare", "-m", "sh", "-c", hide + 'exec tshark "$@"', "sh",
                          "-X", f"lua_script:{LUA}", "-r", str(path), *args],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "Lua: Error" not in res.stderr, res.stderr
    return res.stdout.splitlines()


def test_fifty_curls_once_each_with_both_ends(tmp_path):
    """50 curls to a local HTTP server: `ptcap -i lo` and `ptcap -i any` capture exactly the
    packets `tcpdump -i lo` does, with no retransmission or duplicate ACK in tshark's expert
    info (as tcpdump's file), each naming the curl and the server."""
    server, port = _http_server()
    expr = f"tcp port {port}"
    files = {"tcpdump": tmp_path / "tcpdump.pcap", "lo": tmp_path / "lo.pcapng", "any": tmp_path / "any.pcapng"}
    caps = []
    try:
        caps.append(_start(["tcpdump", "-U", "-i", "lo", "-w", str(files["tcpdump"]), expr]))
        caps.append(_start([PYTHON, "-m", "ptcap.cli", "-i", "lo", "-w", str(files["lo"]), expr]))
        caps.append(_start([PYTHON, "-m", "ptcap.cli", "-i", "any", "-w", str(files["any"]), expr]))
        curls = []
        for _ in range(CURLS):
            curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"])
            curl.wait(timeout=20)
            assert curl.returncode == 0
            curls.append(curl.pid)
        wait_for(lambda: tcp_settled(port), what="the curls' connections closed")
        # all of it in ptcap's kernel counter now; tcpdump writes it out after its buffer timeout
        seen = counters(counters_map(caps[1].pid))[0]
        wait_for(lambda: len(file_packets(files["tcpdump"])) >= seen, what=f"tcpdump's file with {seen} packets")
    finally:
        errs = [_stop(c) for c in caps]
        server.kill()
        server.wait()
    counts = {name: len(tshark_fields(path, "frame.number")) for name, path in files.items()}
    assert counts["tcpdump"] >= CURLS * 8, (counts, errs)
    assert counts["lo"] == counts["tcpdump"] and counts["any"] == counts["tcpdump"], (counts, errs)
    assert _expert_tcp_problems(files["tcpdump"]) == []          # the reference
    for name in ("lo", "any"):
        assert _expert_tcp_problems(files[name]) == [], name
    # each packet names its sender and its receiver: a curl and the server
    curl_pids = {str(p) for p in curls}
    for name in ("lo", "any"):
        for comment, sport in tshark_fields(files[name], "frame.comment", "tcp.srcport"):
            ctx = comments(comment)
            sender, receiver = ctx.get("PID"), ctx.get("ReceiverPID")
            if int(sport) == port:
                assert sender == str(server.pid) and receiver in curl_pids, comment
            else:
                # the SYN and the first ACK reach the listener, also the server's
                assert sender in curl_pids and receiver == str(server.pid), comment
    assert wait_clean() == []


def test_dissector_fields_of_both_ends(tmp_path):
    """ptcap.pid matches either end (a process's whole conversation), ptcap.sender.pid and
    ptcap.receiver.pid say which end; the printed line names both."""
    server, port = _http_server()
    out = tmp_path / "o.pcapng"
    cap = _start([PYTHON, "-m", "ptcap.cli", "-i", "lo", "-w", str(out), "--print", f"tcp port {port}"],
                 stdout=subprocess.PIPE)
    try:
        curl = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"], timeout=20)
        assert curl.returncode == 0
        wait_for(lambda: tcp_settled(port), what="curl's connection closed")
    finally:
        cap.send_signal(signal.SIGINT)
        lines, _ = cap.communicate(timeout=30)
        server.kill()
        server.wait()
    home = tmp_path / "home"
    home.mkdir()
    every = _dissector(out, "-T", "fields", "-e", "frame.number", home=home)
    of_server = _dissector(out, "-Y", f"ptcap.pid == {server.pid}", "-T", "fields", "-e", "frame.number", home=home)
    assert len(every) >= 8 and of_server == every       # the server is at one end of each
    sent = _dissector(out, "-Y", f"ptcap.sender.pid == {server.pid}", "-T", "fields",
                      "-e", "tcp.srcport", "-e", "ptcap.receiver.pid", "-e", "ptcap.receiver.comm", home=home)
    assert sent and all(row.split("\t")[0] == str(port) and row.split("\t")[2] == "curl" for row in sent)
    received = _dissector(out, "-Y", f"ptcap.receiver.pid == {server.pid}", "-T", "fields",
                          "-e", "tcp.dstport", "-e", "ptcap.sender.comm", home=home)
    assert received and all(row == f"{port}\tcurl" for row in received)
    assert len(sent) + len(received) == len(every)
    # the printed line: the sender after the interface, the receiver at the end
    printed = [l for l in lines.decode().splitlines() if f".{port}" in l]
    assert printed and all(re.search(r" lo curl\.\d+ .*, Receiver \[python3?[\w.]*\.%d\]" % server.pid, l) or
                           re.search(r" lo python3?[\w.]*\.%d .*, Receiver \[curl\.\d+\]" % server.pid, l)
                           for l in printed), printed


def _ends(comment: str) -> dict[str, str]:
    """PID of the packet's own process and of the peer, by role, from one packet's comments."""
    ctx = comments(comment)
    return {k: ctx[k] for k in ("PID", "ReceiverPID", "SenderPID") if k in ctx}


def test_veth_copies_name_both_ends(veth, tmp_path):
    """A host process talking to a server in another namespace: each copy on the host's
    veth and on the namespace's names the curl and the server."""
    server, port = _http_server(*veth.exec(), addr=veth.peer_ip)
    expr = f"tcp port {port}"
    host_file, ns_file = tmp_path / "host.pcapng", tmp_path / "ns.pcapng"
    caps = [_start([PYTHON, "-m", "ptcap.cli", "-i", veth.host_if, "-w", str(host_file), expr]),
            _start([PYTHON, "-m", "ptcap.cli", "--netns", veth.ns, "-i", veth.peer_if, "-w", str(ns_file), expr])]
    try:
        curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", f"http://{veth.peer_ip}:{port}/"])
        assert curl.wait(timeout=20) == 0
        wait_for(lambda: tcp_settled(port, veth.ns) and tcp_settled(port), what="curl's connection closed")
    finally:
        for c in caps:
            _stop(c)
        server.kill()
        server.wait()
    # the server runs under `ip netns exec`, which execs it: same pid
    for path in (host_file, ns_file):
        rows = tshark_fields(path, "frame.comment", "tcp.srcport", "frame.packet_flags_direction")
        assert len(rows) >= 8, path
        for comment, sport, direction in rows:
            ends = _ends(comment)
            from_server = int(sport) == port
            sender, receiver = (server.pid, curl.pid) if from_server else (curl.pid, server.pid)
            outbound = int(direction, 16) == 2
            own, peer, role = ((sender, receiver, "ReceiverPID") if outbound else (receiver, sender, "SenderPID"))
            if ends.get("PID") == str(own) and ends.get(role) == str(peer):
                continue
            # the SYN and the first ACK reach the listener (the server's too)
            raise AssertionError(f"{path.name}: {ends} for {sender} -> {receiver} ({'out' if outbound else 'in'})")
    assert wait_clean() == []


def _nat_topology(tag: str) -> dict[str, str]:
    """client namespace C -- router R (forwarding, nftables masquerade) -- server namespace S."""
    from conftest import free_subnet
    a, b = free_subnet(), free_subnet()
    while b == a:
        b = free_subnet()
    n = {"C": f"{tag}C", "R": f"{tag}R", "S": f"{tag}S", "rc": f"{tag}rc", "rs": f"{tag}rs",
         "client_ip": f"{a}.2", "server_ip": f"{b}.2", "masq_ip": f"{b}.1"}
    for ns in ("C", "R", "S"):
        run(["ip", "netns", "add", n[ns]])
        run(["ip", "-n", n[ns], "link", "set", "lo", "up"])
    run(["ip", "link", "add", f"{tag}c", "netns", n["C"], "type", "veth", "peer", "name", n["rc"], "netns", n["R"]])
    run(["ip", "link", "add", f"{tag}s", "netns", n["S"], "type", "veth", "peer", "name", n["rs"], "netns", n["R"]])
    for ns, dev, addr in (("C", f"{tag}c", f"{a}.2"), ("R", n["rc"], f"{a}.1"), ("R", n["rs"], f"{b}.1"),
                          ("S", f"{tag}s", f"{b}.2")):
        run(["ip", "-n", n[ns], "addr", "add", f"{addr}/24", "dev", dev])
        run(["ip", "-n", n[ns], "link", "set", dev, "up"])
    run(["ip", "-n", n["C"], "route", "add", "default", "via", f"{a}.1"])
    run(["ip", "netns", "exec", n["R"], "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    # S has no route back to C: only the masquerade makes the replies come back
    subprocess.run(["ip", "netns", "exec", n["R"], "nft", "-f", "-"], check=True, text=True, input=(
        f"table ip {tag} {{\n chain post {{\n  type nat hook postrouting priority 100;\n"
        f"  oifname \"{n['rs']}\" masquerade\n }}\n}}\n"))
    return n


def test_nat_and_forwarding_carry_the_process(tmp_path):
    """A client in a namespace behind a router that masquerades it, talking to a server in a
    third namespace: on both of the router's interfaces, before and after NAT, both ways,
    every packet of the connection names the client (and, once known, the server)."""
    tag = f"ptatn{os.getpid() % 10000}"
    n = {"C": f"{tag}C", "R": f"{tag}R", "S": f"{tag}S"}      # removed even if set-up fails
    try:
        n = _nat_topology(tag)
        server, port = _http_server("ip", "netns", "exec", n["S"], addr=n["server_ip"])
        out = tmp_path / "o.pcapng"
        cap = _start([PYTHON, "-m", "ptcap.cli", "--netns", n["R"], "-i", "any", "-w", str(out), f"tcp port {port}"])
        try:
            curl = subprocess.Popen(["ip", "netns", "exec", n["C"], "curl", "-s", "-o", "/dev/null",
                                     f"http://{n['server_ip']}:{port}/"])
            assert curl.wait(timeout=20) == 0
            wait_for(lambda: tcp_settled(port, n["C"], n["S"]), what="curl's connection closed")
        finally:
            _stop(cap)
            server.kill()
            server.wait()
        rows = tshark_fields(out, "frame.interface_name", "ip.src", "ip.dst", "frame.comment")
        seen = {(iface, src, dst) for iface, src, dst, _ in rows}
        rc, rs = f"{n['rc']}@{n['R']}", f"{n['rs']}@{n['R']}"
        # before NAT (client's side) and after (masqueraded), requests and replies
        assert seen == {(rc, n["client_ip"], n["server_ip"]), (rc, n["server_ip"], n["client_ip"]),
                        (rs, n["masq_ip"], n["server_ip"]), (rs, n["server_ip"], n["masq_ip"])}, seen
        for iface, src, dst, comment in rows:
            ends = _ends(comment)
            assert str(curl.pid) in ends.values(), (iface, src, dst, comment)
            if iface == rs:       # the client's packets there have no socket of it: conntrack
                ctx = comments(comment)
                assert "yes" in (ctx.get("Forwarded"), ctx.get("ReceiverForwarded"), ctx.get("SenderForwarded"))
        # the server is named too, on each interface, once its flow is known
        for iface in (rc, rs):
            assert any(str(server.pid) in _ends(c).values() for i, _, _, c in rows if i == iface)
    finally:
        for ns in ("C", "R", "S"):
            run(["ip", "netns", "del", n[ns]], check=False)
    assert wait_clean() == []


def test_bridge_between_namespaces_names_both_ends(tmp_path):
    """Two namespaces on a bridge (two containers on Docker's bridge): once the connection is
    established, each copy on each namespace's veth names the client and the server."""
    from conftest import free_subnet
    tag = f"ptatb{os.getpid() % 10000}"
    net = free_subnet()
    br = f"{tag}br"
    try:
        run(["ip", "link", "add", br, "type", "bridge"])
        run(["ip", "link", "set", br, "up"])
        for n, addr in (("A", f"{net}.2"), ("B", f"{net}.3")):
            run(["ip", "netns", "add", f"{tag}{n}"])
            run(["ip", "-n", f"{tag}{n}", "link", "set", "lo", "up"])
            run(["ip", "link", "add", f"{tag}h{n}", "type", "veth", "peer", "name", f"{tag}c{n}",
                 "netns", f"{tag}{n}"])
            run(["ip", "link", "set", f"{tag}h{n}", "master", br])
            run(["ip", "link", "set", f"{tag}h{n}", "up"])
            run(["ip", "-n", f"{tag}{n}", "addr", "add", f"{addr}/24", "dev", f"{tag}c{n}"])
            run(["ip", "-n", f"{tag}{n}", "link", "set", f"{tag}c{n}", "up"])
        server, port = _http_server("ip", "netns", "exec", f"{tag}B", addr=f"{net}.3")
        out = tmp_path / "o.pcapng"
        cap = _start([PYTHON, "-m", "ptcap.cli", "-i", f"{tag}hA", "-i", f"{tag}hB", "-w", str(out),
                      f"tcp port {port}"])
        try:
            curl = subprocess.Popen(["ip", "netns", "exec", f"{tag}A", "curl", "-s", "-o", "/dev/null",
                                     f"http://{net}.3:{port}/"])
            assert curl.wait(timeout=20) == 0
            wait_for(lambda: tcp_settled(port, f"{tag}A", f"{tag}B"), what="curl's connection closed")
        finally:
            _stop(cap)
            server.kill()
            server.wait()
        rows = tshark_fields(out, "frame.interface_name", "tcp.flags.str", "tcp.srcport", "frame.comment")
        assert {r[0] for r in rows} == {f"{tag}hA", f"{tag}hB"}
        established = False           # from the server's answer on, both ends are known
        for iface, flags, sport, comment in rows:
            established = established or ("P" in flags and int(sport) == port)
            if established:
                assert set(_ends(comment).values()) == {str(curl.pid), str(server.pid)}, (iface, flags, comment)
            else:
                assert str(curl.pid) in _ends(comment).values(), (iface, flags, comment)
    finally:
        run(["ip", "link", "del", br], check=False)
        for n in ("A", "B"):
            run(["ip", "link", "del", f"{tag}h{n}"], check=False)
            run(["ip", "netns", "del", f"{tag}{n}"], check=False)
    assert wait_clean() == []


def test_arriving_packet_to_a_closed_port_names_its_sender(capture, tmp_path):
    """-Q in on lo, datagrams to a port nobody listens on: the one local end, the sender,
    is the packet's process (as it is of the leaving copy)."""
    from conftest import free_port
    port = free_port()
    out = tmp_path / "in.pcapng"
    cap = capture("-i", "lo", "-Q", "in", "-w", str(out), "-c", "3", f"udp dst port {port}")
    sender = subprocess.Popen([PYTHON, "-c", f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(200):
    s.sendto(b"x", ("127.0.0.1", {port}))
    time.sleep(0.05)
"""])
    try:
        cap.finish(timeout=30)
    finally:
        sender.kill()
        sender.wait()
    rows = tshark_fields(out, "frame.comment")
    assert len(rows) == 3
    for (comment,) in rows:
        assert int(comments(comment)["PID"]) == sender.pid, comment


def _taps_on(pid: int, ifname: str) -> set[str]:
    """The capture programs process `pid` runs on an interface of the root namespace: its TCX
    links' programs there, or (before TCX) the tc filters' programs on it."""
    ifindex = int(open(f"/sys/class/net/{ifname}/ifindex").read())
    if not tcattach.use_tcx():
        out = run(["tc", "filter", "show", "dev", ifname, "egress"], check=False).stdout
        return set(re.findall(r"\bid (\d+)", out))
    progs = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        if re.search(rf"^ifindex:\s*{ifindex}$", text, re.M) and "attach_type:\t47" in text:
            progs.update(re.findall(r"^prog_id:\s*(\d+)", text, re.M))
    return progs


@pytest.mark.parametrize("attach", ["default", "netlink"])
def test_veth_whose_peer_moves_after_it_was_tapped(tmp_path, monkeypatch, attach):
    """-i any taps a new veth pair while both ends are here; then one end goes into another
    namespace (Docker makes a container's veth so): the host end is tapped again to look
    there, and what it delivers into the namespace names its receiver, the server there.
    Also with tc filters (kernels without TCX, such as Debian 12's 6.1): the new filters
    are added, then the old ones taken off, and the qdisc stays for the new ones."""
    if attach == "netlink":
        monkeypatch.setenv("PTCAP_TC_ATTACH", "netlink")
    tag = f"{os.getpid() % 10000}m"
    net, ns, host_if, peer_if = free_subnet(), f"ptt{tag}", f"pth{tag}", f"ptp{tag}"
    port = free_port(socket.SOCK_STREAM)
    out = tmp_path / "o.pcapng"
    run(["ip", "netns", "add", ns])
    cap = server = None
    try:
        cap = _start([PYTHON, "-m", "ptcap.cli", "-i", "any", "-w", str(out), f"tcp port {port}"])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if])
        wait_for(lambda: _taps_on(cap.pid, host_if), what=f"ptcap tapped {host_if}")
        first = _taps_on(cap.pid, host_if)
        run(["ip", "link", "set", peer_if, "netns", ns])
        run(["ip", "addr", "add", f"{net}.1/24", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        for cmd in (["addr", "add", f"{net}.2/24", "dev", peer_if], ["link", "set", peer_if, "up"],
                    ["link", "set", "lo", "up"]):
            run(["ip", "netns", "exec", ns, "ip", *cmd])
        wait_for(lambda: _taps_on(cap.pid, host_if) not in (set(), first),
                 what=f"ptcap tapped {host_if} again once its peer was in {ns}")
        server = subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-m", "http.server", str(port), "--bind",
                                   f"{net}.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        wait_for(lambda: run(["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{port}"]).stdout.strip(),
                 what="the server listening")
        curl = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://{net}.2:{port}/"], timeout=20)
        assert curl.returncode == 0
        wait_for(lambda: tcp_settled(port, ns) and tcp_settled(port), what="curl's connection closed")
    finally:
        if cap is not None:
            _stop(cap)
        if server is not None:
            server.kill()
            server.wait()
        run(["ip", "link", "del", host_if], check=False)
        run(["ip", "netns", "del", ns], check=False)
    rows = tshark_fields(out, "frame.comment", "frame.interface_name", "frame.packet_flags_direction",
                         display_filter=f"tcp.dstport == {port}")
    sent = [comments(c) for c, iface, direction in rows if iface == host_if and int(direction, 16) == 2]
    assert len(sent) >= 4, rows
    assert {c.get("ReceiverPID") for c in sent} == {str(server.pid)}, sent
    assert wait_clean() == []

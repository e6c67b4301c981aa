"""A namespace behind a bridge of the host that has an address of its own (a container on
Docker's default bridge talking to a host process): every copy of the connection, on the
bridge and on the host's veth, names both processes, from the first SYN on."""
from __future__ import annotations

import os
import re
import signal
import subprocess

from conftest import PYTHON, comments, free_subnet, run, tcp_settled, tshark_fields, wait_clean, wait_for
from test_local_ends import _http_server, _start, _stop

from ptcap.kernel import tcattach


def _ends(comment: str) -> set[str]:
    ctx = comments(comment)
    return {ctx[k] for k in ("PID", "ReceiverPID", "SenderPID") if k in ctx}


def test_bridge_copies_name_the_namespaces_process_and_the_hosts(tmp_path):
    tag = f"ptbr{os.getpid() % 10000}"
    net, br, host_if, ns = free_subnet(), f"{tag}b", f"{tag}h", f"{tag}n"
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "link", "add", br, "type", "bridge"])
        run(["ip", "addr", "add", f"{net}.1/24", "dev", br])
        run(["ip", "link", "set", br, "up"])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", host_if, "master", br])
        run(["ip", "link", "set", host_if, "up"])
        for cmd in (["addr", "add", f"{net}.2/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                    ["link", "set", "lo", "up"]):
            run(["ip", "-n", ns, *cmd])
        server, port = _http_server(addr=f"{net}.1")
        out = tmp_path / "o.pcapng"
        cap = _start([PYTHON, "-m", "ptcap.cli", "-i", br, "-i", host_if, "-w", str(out), f"tcp port {port}"])
        try:
            curl = subprocess.Popen(["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null",
                                     f"http://{net}.1:{port}/"])
            assert curl.wait(timeout=20) == 0
            wait_for(lambda: tcp_settled(port, ns) and tcp_settled(port), what="curl's connection closed")
        finally:
            _stop(cap)
            server.kill()
            server.wait()
        rows = tshark_fields(out, "frame.interface_name", "tcp.flags.str", "frame.comment")
        assert {r[0] for r in rows} == {br, host_if}, rows
        assert sum(r[0] == br for r in rows) >= 8
        for iface, flags, comment in rows:
            assert _ends(comment) == {str(curl.pid), str(server.pid)}, (iface, flags, comment)
    finally:
        run(["ip", "link", "del", host_if], check=False)
        run(["ip", "link", "del", br], check=False)
        run(["ip", "netns", "del", ns], check=False)
    assert wait_clean() == []


def test_a_taken_veth_end_moved_into_a_namespace_is_not_captured_there(tmp_path):
    """-i any takes both ends of a new veth pair; one end goes into another namespace before
    ptcap looks again (here: ptcap is stopped meanwhile; a `docker run --rm` is that quick):
    that end's packets are the namespace's own, not an interface of ours, and are not
    captured (each packet was there once more, under the end's old host name)."""
    tag = f"ptmv{os.getpid() % 10000}"
    net, ns, host_if, peer_if = free_subnet(), f"{tag}n", f"{tag}h", f"{tag}p"
    out = tmp_path / "o.pcapng"
    run(["ip", "netns", "add", ns])
    cap = None
    try:
        cap = _start([PYTHON, "-m", "ptcap.cli", "-i", "any", "-w", str(out), f"icmp and host {net}.2"])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if])
        wait_for(lambda: {host_if, peer_if} <= _taken(cap.pid), what="ptcap took both ends")
        cap.send_signal(signal.SIGSTOP)
        try:
            run(["ip", "link", "set", peer_if, "netns", ns])
            run(["ip", "addr", "add", f"{net}.1/24", "dev", host_if])
            run(["ip", "link", "set", host_if, "up"])
            for cmd in (["addr", "add", f"{net}.2/24", "dev", peer_if], ["link", "set", peer_if, "up"]):
                run(["ip", "-n", ns, *cmd])
            run(["busybox", "ping", "-c", "3", "-W", "2", f"{net}.2"])
        finally:
            cap.send_signal(signal.SIGCONT)
    finally:
        if cap is not None:
            _stop(cap)
        run(["ip", "link", "del", host_if], check=False)
        run(["ip", "netns", "del", ns], check=False)
    ifaces = [r[0] for r in tshark_fields(out, "frame.interface_name")]
    assert ifaces.count(host_if) == 6, ifaces       # 3 requests, 3 replies
    assert set(ifaces) == {host_if}, ifaces


def _taken(pid: int) -> set[str]:
    """The interfaces of the root namespace a capture has tapped (TCX links, or tc filters)."""
    names = {}
    for name in os.listdir("/sys/class/net"):
        try:
            names[int(open(f"/sys/class/net/{name}/ifindex").read())] = name
        except OSError:
            continue
    if not tcattach.use_tcx():
        return {n for n in names.values()
                if "ptcap" in run(["tc", "filter", "show", "dev", n, "ingress"], check=False).stdout}
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            m = re.search(r"^ifindex:\s*(\d+)$", open(f"/proc/{pid}/fdinfo/{fd}").read(), re.M)
        except OSError:
            continue
        if m and int(m.group(1)) in names:
            found.add(names[int(m.group(1))])
    return found


def test_the_other_ends_container_is_printed_when_it_is_not_the_packets_own():
    """A host server's packet from a container's client (a bridge's copy): its line names the
    sender's container and pod, its -v blocks describe them; the same container twice is
    said once."""
    import dataclasses

    from ptcap.meta.context import ProcessContext
    from ptcap.pipeline.packet import Direction
    from test_lines import CTX, SYN, TS, decode
    server = ProcessContext(pid=500, cmd="/usr/sbin/nginx", args="nginx", tid=500, tname="nginx", uid=0)
    ctx = dataclasses.replace(server, peer=CTX, peer_role="Sender")
    line = decode([(TS, 101, SYN, "br0", Direction.IN, ctx)], "-n")
    assert line.rstrip("\n").endswith(", Sender [curl.4242, container web, pod web-0.default]"), line
    blocks = decode([(TS, 101, SYN, "br0", Direction.IN, ctx)], "-n", "-v")
    assert f"    Sender Container (name web, id {'3f' * 32}, image nginx:1, labels {{}})\n" in blocks, blocks
    assert "    Sender Pod (name web-0, namespace default, UID u-1, labels {}, annotations {})\n" in blocks
    same = dataclasses.replace(CTX, peer=dataclasses.replace(CTX, pid=4300), peer_role="Receiver")
    line = decode([(TS, 101, SYN, "lo", Direction.OUT, same)], "-n")
    assert ", Receiver [curl.4300], ParentProc [bash.100], Container [web], Pod [web-0.default]" in line, line


def test_a_veth_first_seen_without_its_kind_is_tapped_again_as_a_veth(tmp_path):
    """A veth made while ptcap lists the links may be seen once without its kind (nor its
    peer). The next look that tells it must tap it again as a veth: its packets then note
    their flows for the bridge beyond, or a container's handshake on the bridge names nobody
    (seen with 10 `docker run --rm` at once on a bridge)."""
    import dataclasses

    from ptcap.kernel import interfaces
    from ptcap.kernel.session import CaptureConfig, Session
    tag = f"ptk{os.getpid() % 10000}"
    a, b = f"{tag}a", f"{tag}b"
    session = Session(CaptureConfig(interfaces=["any"])).open()
    try:
        session.refresh()
        run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        root = session.namespaces[0]
        seen = {i.name: i for i in interfaces.in_namespace(root)}
        assert seen[a].bridging
        for name in (a, b):         # as a look between the two dumps saw them
            assert session._take(dataclasses.replace(seen[name], bridging=False, peer=None))
        run(["ip", "link", "set", a, "up"])
        wait_for(lambda: session.refresh() is not None and
                 all(i.bridging for i in session.ifaces if i.name in (a, b)), what="the veth retapped as one")
        assert {i.name for i in session.ifaces if i.name in (a, b)} == {a, b}
    finally:
        run(["ip", "link", "del", a], check=False)
        session.close()
    assert wait_clean() == []

"""A real Docker container on Docker's default bridge, masqueraded by Docker's own rules,
talking to a server in a namespace of the test: every packet of the connection, on the
container's veth, on docker0, on the outgoing interface after the masquerade, and the
replies before and after de-NAT, carries the container's process and its container.

The engine is a private containerd and dockerd (tests/engines.py) whose dockerd runs as a
stock engine (docker0, iptables, masquerade, forwarding) in a network namespace of the test,
D, standing for the host: Docker's rules and forwarding stay in D and go with it. The server
is in a second namespace, S, reached from D over a veth; S has no route to Docker's subnet,
so only the masquerade brings the replies back.
"""
from __future__ import annotations

import os

import pytest

from conftest import PYTHON, comments, free_subnet, run, tshark_fields, wait_clean
from engines import IMAGE, PrivateEngines
from test_local_ends import _ends, _http_server, _start, _stop

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons


@pytest.fixture
def docker_behind_nat():
    tag = f"{os.getpid() % 10000}"
    d, s, out_if, srv_if = f"ptdkD{tag}", f"ptdkS{tag}", f"ptdko{tag}", f"ptdks{tag}"
    net = free_subnet()
    engines = None
    try:
        for ns in (d, s):
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "add", out_if, "netns", d, "type", "veth", "peer", "name", srv_if, "netns", s])
        for ns, dev, addr in ((d, out_if, f"{net}.1"), (s, srv_if, f"{net}.2")):
            run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        engines = PrivateEngines(f"dk{tag}", netns=d)
        engines.start()
        engines.import_image()
        yield {"D": d, "S": s, "out": out_if, "server_ip": f"{net}.2", "masq_ip": f"{net}.1", "engines": engines}
    finally:
        if engines is not None:
            engines.stop()
        for ns in (d, s):
            run(["ip", "netns", "del", ns], check=False)


def test_docker_bridge_container_behind_dockers_masquerade_carries_its_process(docker_behind_nat, tmp_path,
                                                                                monkeypatch):
    n = docker_behind_nat
    engines: PrivateEngines = n["engines"]
    d = n["D"]
    # Docker's own masquerade of its default bridge, in D
    nat = run(["ip", "netns", "exec", d, "iptables", "-t", "nat", "-S", "POSTROUTING"]).stdout
    assert "! -o docker0 -j MASQUERADE" in nat, nat
    server, port = _http_server("ip", "netns", "exec", n["S"], addr=n["server_ip"])
    try:
        # the container's first process becomes wget (exec) once told to: its PID is known first
        cid = engines.docker("run", "-d", "--network", "bridge", IMAGE, "sh", "-c",
                             "until [ -e /tmp/go ]; do sleep 0.1; done; "
                             f"exec wget -q -O /dev/null http://{n['server_ip']}:{port}/")
        pid = int(engines.docker("inspect", "-f", "{{.State.Pid}}", cid))
        container_ip = engines.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", cid)
        veth = _host_veth_of(d)
        out = tmp_path / "o.pcapng"
        monkeypatch.setenv("DOCKER_HOST", engines.address)        # the engine ptcap asks about containers
        cap = _start([PYTHON, "-m", "ptcap.cli", "--netns", d, "-i", "any", "-w", str(out), f"tcp port {port}"])
        try:
            engines.docker("exec", cid, "sh", "-c", ": > /tmp/go")
            status = engines.docker("wait", cid, timeout=30)
            assert status == "0", engines.docker("logs", cid)
        finally:
            _stop(cap)
    finally:
        server.kill()
        server.wait()
    rows = tshark_fields(out, "frame.interface_name", "ip.src", "ip.dst", "tcp.flags.str", "frame.comment")
    seen = {(iface, src, dst) for iface, src, dst, _, _ in rows}
    cv, br, up = f"{veth}@{d}", f"docker0@{d}", f"{n['out']}@{d}"
    server_ip, masq_ip = n["server_ip"], n["masq_ip"]
    # the container's veth and docker0 before the masquerade and after de-NAT, the outgoing
    # interface after the masquerade and before de-NAT; both directions on each
    assert seen == {(cv, container_ip, server_ip), (cv, server_ip, container_ip),
                    (br, container_ip, server_ip), (br, server_ip, container_ip),
                    (up, masq_ip, server_ip), (up, server_ip, masq_ip)}, seen
    for iface, src, dst, flags, comment in rows:
        ctx = comments(comment)
        where = (iface, src, dst, flags, comment)
        assert str(pid) in _ends(comment).values(), where
        # the container's process is this packet's own or the peer's block: its container too
        role = next(r for r in ("", "Sender", "Receiver") if ctx.get(f"{r}PID") == str(pid))
        assert ctx.get(f"{role}ContainerId") == cid, where
        assert ctx.get(f"{role}ContainerImage") == IMAGE, where
    # every packet of the connection is in the file: the handshake, data, the end, both ways
    flags = [f for _, _, _, f, _ in rows]
    assert any("S" in f and "A" not in f for f in flags)
    assert any("F" in f for f in flags)
    # the dissector's fields, read back with tshark: ptcap.pid and ptcap.comm name wget on every packet
    fields = tshark_fields(out, "ptcap.pid", "ptcap.comm")
    assert fields and all(str(pid) in p.split("|") and "wget" in c.split("|") for p, c in fields), fields[:5]
    assert wait_clean() == []


def _host_veth_of(netns: str) -> str:
    """The host end of the one container's veth: the one port of docker0 in netns."""
    ports = run(["ip", "-n", netns, "-o", "link", "show", "master", "docker0"]).stdout.splitlines()
    assert len(ports) == 1, ports
    return ports[0].split(":")[1].strip().split("@")[0]


def test_cgroup_of_the_start_is_named_after_it_is_gone():
    """A container whose only process is short-lived is often gone, cgroup and all, before
    its first packet is looked at: a cgroup that existed at the start keeps its path."""
    from ptcap.meta.containers import CgroupPaths, v2_mount
    root = v2_mount()
    if root is None:
        pytest.fail("no cgroup v2 mount")
    path = f"{root}/ptcap-desk-{os.getpid()}"
    os.mkdir(path)
    try:
        cgroup_id = os.stat(path).st_ino
        paths = CgroupPaths()
    finally:
        os.rmdir(path)
    assert paths.path(cgroup_id) == f"/ptcap-desk-{os.getpid()}"

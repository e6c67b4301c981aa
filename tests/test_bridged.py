"""A namespace behind a bridge of the host that has an address of its own (a container on
Docker's default bridge talking to a host process): every copy of the connection, on the
bridge and on the host's veth, names both processes, from the first SYN on."""
from __future__ import annotations

import os
import subprocess

from conftest import PYTHON, comments, free_subnet, run, tcp_settled, tshark_fields, wait_clean, wait_for
from test_local_ends import _http_server, _start, _stop


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

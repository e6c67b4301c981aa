"""--netns any / --netns newly: every network namespace, also those created while capturing."""
from __future__ import annotations

import os
import subprocess
import time

from conftest import PYTHON, comments, free_port, run, wait_clean

# Sends a datagram to 127.0.0.1:PORT every 50 ms (its own namespace's loopback) until its
# stdin closes; says "ready INODE" first (its network namespace).
BEACON = """
import os, select, socket, sys
port = int(sys.argv[1])
print("ready", os.stat("/proc/self/ns/net").st_ino, flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
while not select.select([sys.stdin], [], [], 0.05)[0]:
    s.sendto(b"beacon", ("127.0.0.1", port))
"""


def _beacon(prefix: list[str], port: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(prefix + [PYTHON, "-c", BEACON, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    word, inode = proc.stdout.readline().split()
    assert word == "ready"
    return proc, int(inode)


def _names_seen(path) -> dict[str, list[str]]:
    """interface name → the PIDs of its packets (the file is still being written)."""
    res = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t",
                          "-e", "frame.interface_name", "-e", "frame.comment"],
                         capture_output=True, text=True)
    seen: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        name, _, comment = line.partition("\t")
        seen.setdefault(name, []).append(comments(comment).get("PID", ""))
    return seen


def _wait_for(path, names: set[str], timeout: float = 20) -> dict[str, list[str]]:
    deadline = time.time() + timeout
    seen = {}
    while time.time() < deadline:
        seen = _names_seen(path)
        if names <= set(seen):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"never saw {names}: saw {sorted(seen)}")


def _held_namespaces(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return {h for h in held if h.startswith("net:[")}


def _ip_netns(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


UNSHARED = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def _check_newly(capture, tmp_path, mode: str, backend: str = "tc") -> None:
    port = free_port()
    tag = f"ptattrib{os.getpid() % 100000}{mode[0]}"
    before = f"{tag}old"
    _ip_netns(before)               # exists at the start: taken with any, not with newly
    beacons = []
    try:
        old, _ = _beacon(["ip", "netns", "exec", before], port)
        beacons.append(old)
        host, _ = _beacon([], port)
        beacons.append(host)
        out = tmp_path / "o.pcapng"
        cap = capture("-i", "lo", "--netns", mode, "--backend", backend, "-w", str(out), f"udp dst port {port}")
        _ip_netns(tag)
        named, _ = _beacon(["ip", "netns", "exec", tag], port)            # with ip netns
        beacons.append(named)
        unnamed, inode = _beacon(UNSHARED, port)                          # without it
        beacons.append(unnamed)
        wanted = {f"lo@{tag}", f"lo@{inode}"} | ({f"lo@{before}", "lo"} if mode == "any" else set())
        seen = _wait_for(out, wanted)
        assert str(named.pid) in seen[f"lo@{tag}"] and str(unnamed.pid) in seen[f"lo@{inode}"]
        if mode == "newly":
            assert set(seen) == wanted, seen      # not the host's, not the one made before
        # a namespace that goes away is let go (holding it open would keep it alive)
        unnamed.stdin.close()
        unnamed.wait(timeout=10)
        deadline = time.time() + 10
        while f"net:[{inode}]" in _held_namespaces(cap.proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert f"net:[{inode}]" not in _held_namespaces(cap.proc.pid)
        _, err = cap.stop()
        assert "packets dropped by kernel" in err
    finally:
        for b in beacons:
            if b.poll() is None:
                b.stdin.close()
                b.wait(timeout=10)
        run(["ip", "netns", "del", before], check=False)
        run(["ip", "netns", "del", tag], check=False)
    assert wait_clean() == []


def test_netns_newly_takes_namespaces_created_while_capturing(capture, tmp_path):
    _check_newly(capture, tmp_path, "newly")


def test_netns_any_takes_every_namespace_and_new_ones(capture, tmp_path):
    _check_newly(capture, tmp_path, "any")


def test_netns_any_with_the_cgroup_skb_backend(capture, tmp_path):
    _check_newly(capture, tmp_path, "any", backend="cgroup-skb")


def test_netns_any_is_alone():
    res = subprocess.run([PYTHON, "-m", "ptcap.cli", "--netns", "any", "--netns", "x", "-c", "1"],
                         capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (1, "ptcap: --netns any takes every namespace: give no other --netns\n")

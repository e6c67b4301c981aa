"""Who a packet names when its sender changes under the same socket: the same thread renamed,
a new user after setuid, a new program after exec. What the kernel hands out for a socket is
the task as it is when it sends, not as it was at its first send."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import PEERS, PYTHON, comments, free_port, ptcap_argv, tshark_fields

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

# Every payload says what its packet's comments must say: "UID THREADNAME WORD".
CHANGES = r"""
import ctypes, fcntl, os, socket, struct, sys, time
port = int(sys.argv[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("127.0.0.1", port))
t = socket.create_connection(("127.0.0.1", port))
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def acked(s):       # SIOCOUTQ: nothing sent is unacknowledged, so the next send is a segment of its own
    return struct.unpack("i", fcntl.ioctl(s, 0x5411, bytes(4)))[0] == 0
def say(word):
    name = open("/proc/thread-self/comm").read().strip()
    for s, kind in ((u, "udp"), (t, "tcp")):
        s.send(f"{os.getuid()} {name} {kind}-{word}".encode())
    while not acked(t):
        time.sleep(0.005)
say("first")
ctypes.CDLL(None).prctl(15, b"renamed", 0, 0, 0)        # PR_SET_NAME: this very thread
say("renamed")
os.setgid(65534)
os.setuid(65534)
say("nobody")
os.dup2(u.fileno(), 5)
os.dup2(t.fileno(), 6)
os.execv("/bin/bash", ["bash", "-c", "printf '65534 bash udp-exec' >&5; printf '65534 bash tcp-exec' >&6"])
"""
WORDS = ["first", "renamed", "nobody", "exec"]


def _servers(port: int) -> list[subprocess.Popen]:
    servers = [subprocess.Popen([PYTHON, str(PEERS), kind, str(port), "127.0.0.1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for kind in ("udp-server", "tcp-server")]
    for s in servers:
        assert s.stdout.readline().startswith("ready")
    return servers


def _data(out) -> list[tuple[str, str, dict[str, str]]]:
    """(the claimed uid and thread name, the word, the packet's comments) of every data packet."""
    got = []
    for payload, text in tshark_fields(out, "data.data", "frame.comment"):
        if payload:
            uid, name, word = bytes.fromhex(payload).decode().split(" ", 2)
            got.append((f"{uid} {name}", word, comments(text)))
    return got


def _script(tmp_path) -> str:
    script = tmp_path / "changes.py"
    script.write_text(CHANGES)
    script.chmod(0o644)
    return str(script)


def test_same_thread_renamed_setuid_and_exec_are_named_as_they_are(tmp_path):
    port = free_port()
    servers = _servers(port)
    out = tmp_path / "o.pcapng"
    try:
        proc = subprocess.run(ptcap_argv("-i", "lo", "-w", str(out), "-Q", "out", f"dst port {port}",
                                         "--", PYTHON, _script(tmp_path), str(port)),
                              capture_output=True, text=True, timeout=60)
    finally:
        for s in servers:
            s.kill()
            s.wait()
    assert proc.returncode == 0, proc.stderr
    got = _data(out)
    assert sorted(w for _, w, _ in got) == sorted(f"{k}-{w}" for k in ("udp", "tcp") for w in WORDS), got
    for claimed, word, c in got:
        assert f"{c['UserId']} {c['ThreadName']}" == claimed, (word, c)
        if word.endswith("exec"):
            assert c["Cmd"].endswith("/bash"), (word, c)
    assert {c["PID"] for _, _, c in got} == {got[0][2]["PID"]}     # one process throughout


@pytest.mark.parametrize("selector, words", [
    (("--uid", "65534"), ["nobody", "exec"]),       # the packets sent after setuid, only those
    (("--pname", "bash"), ["exec"]),                # the program exec'd, on sockets it inherited
])
def test_selectors_judge_the_sender_as_it_is_now(capture, tmp_path, selector, words):
    port = free_port()
    servers = _servers(port)
    out = tmp_path / "o.pcapng"
    try:
        cap = capture("-i", "lo", "-w", str(out), "-Q", "out", *selector, f"dst port {port}")
        subprocess.run([PYTHON, _script(tmp_path), str(port)], check=True, timeout=30, cwd="/")
        # every data packet wanted, and the ACKs and FINs that follow them
        cap.wait_received(2 * len(words))
        _, err = cap.stop()
    finally:
        for s in servers:
            s.kill()
            s.wait()
    got = _data(out)
    assert sorted(w for _, w, _ in got) == sorted(f"{k}-{w}" for k in ("udp", "tcp") for w in words), (got, err)


# An ICMP echo from a ping socket (SOCK_DGRAM, IPPROTO_ICMP: what ping uses where
# net.ipv4.ping_group_range allows it) or a raw socket; prints the pinger's pid.
PINGER = r"""
import os, socket, struct, sys
kind, addr = sys.argv[1], sys.argv[2]
v6 = ":" in addr
if kind == "raw":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    words = struct.unpack("!5H", struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"ab")
    total = sum(words)
    total = (total >> 16) + (total & 0xffff)
    echo = struct.pack("!BBHHH", 8, 0, ~total & 0xffff, 0x4242, 1) + b"ab"
else:
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
                      socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    echo = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0, 1) + b"ab"
s.settimeout(5)
s.sendto(echo, (addr, 0))
s.recv(100)
print(os.getpid(), flush=True)
"""


@pytest.mark.parametrize("kind, where", [
    ("raw", "lo"),              # 127.0.0.1, a raw socket
    ("dgram", "lo"),            # a ping socket, in the namespace (where the test may allow them)
    ("dgram6", "lo"),           # the same on ::1
    ("dgram", "veth"),          # from the namespace to the host, captured on the host's end
])
def test_echo_replies_name_their_pinger(veth, tmp_path, kind, where):
    """The kernel answers an echo; the reply is for the pinger's socket, which no socket
    lookup finds: it is named as the reply's receiver, so `-- CMD` keeps it too."""
    script = tmp_path / "pinger.py"
    script.write_text(PINGER)
    if kind == "raw":
        capture, netns, addr = ["-i", "lo"], [], "127.0.0.1"
    else:
        netns = ["ip", "netns", "exec", veth.ns]
        subprocess.run(netns + ["sysctl", "-qw", "net.ipv4.ping_group_range=0 0"], check=True)
        capture = ["--netns", veth.ns, "-i", "lo"] if where == "lo" else ["-i", veth.host_if]
        addr = {"dgram6": "::1", "dgram": "127.0.0.1" if where == "lo" else veth.host_ip}[kind]
    out = tmp_path / "o.pcapng"
    proc = subprocess.run(ptcap_argv(*capture, "-w", str(out), "icmp or icmp6", "--",
                                     *netns, PYTHON, str(script), kind.removesuffix("6"), addr),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid = proc.stdout.split()[-1]
    rows = [(info.split(" id=")[0].strip(), comments(c)) for info, c in tshark_fields(out, "_ws.col.Info", "frame.comment")]
    assert [info for info, _ in rows] == ["Echo (ping) request", "Echo (ping) reply"], (rows, proc.stderr)
    request, reply = rows[0][1], rows[1][1]
    assert request["PID"] == pid, request
    # leaving on lo or the veth toward it, the reply's own process is nobody (the kernel sent
    # it) and its receiver the pinger; arriving, the pinger is its own
    assert reply.get("ReceiverPID", reply.get("PID")) == pid, reply


def _selected_once_told(capture, code: str, port: int, out, packets: int, expression: str) -> int:
    """Run `code` (it prints "ready", then waits for a line on stdin), capture what it sends
    with `--pid` into `out`, tell it to go and stop once `packets` are in; its pid."""
    proc = subprocess.Popen([PYTHON, "-c", code, str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        cap = capture("-i", "lo", "-w", str(out), "--pid", str(proc.pid), "-Q", "out", expression)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=20) == 0
        cap.wait_received(packets)
        cap.stop()
    finally:
        proc.kill()
        proc.wait()
    return proc.pid


# The main thread leaves by pthread_exit when told (stdin); a worker sends once it is gone.
LEADER_LEAVES = r"""
import ctypes, os, socket, sys, threading, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.send(b"before")
def worker():
    leader = f"/proc/self/task/{os.getpid()}/stat"
    while open(leader).read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.02)
    for i in range(3):
        s.send(b"after %d" % i)
    os._exit(0)
threading.Thread(target=worker).start()
print("ready", flush=True)
sys.stdin.readline()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_pid_outlives_its_main_thread(peers, capture, tmp_path):
    """`--pid P` of a process whose main thread ends (pthread_exit) while another thread goes
    on: the process is still there, and so is its selection."""
    port = free_port()
    peers("udp-server", str(port), "127.0.0.1")
    out = tmp_path / "o.pcapng"
    pid = _selected_once_told(capture, LEADER_LEAVES, port, out, 3, f"udp dst port {port}")
    rows = tshark_fields(out, "data.data", "frame.comment")
    assert [bytes.fromhex(d).decode() for d, _ in rows] == ["after 0", "after 1", "after 2"], rows
    assert {comments(c)["PID"] for _, c in rows} == {str(pid)}


# Sockets made before the capture and not used yet (no socket table holds them, so the walk of
# existing sockets cannot name them): used once told (stdin).
MADE_BEFORE = r"""
import socket, sys
port = int(sys.argv[1])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
print("ready", flush=True)
sys.stdin.readline()
u.sendto(b"first datagram", ("127.0.0.1", port))
t.connect(("::1", port))
t.sendall(b"first segment")
t.recv(100)
"""


def test_first_packets_of_sockets_made_before_the_start(peers, capture, tmp_path):
    port = free_port(socket.SOCK_STREAM)
    peers("udp-server", str(port), "127.0.0.1")
    peers("tcp-server", str(port), "::1")
    out = tmp_path / "o.pcapng"
    pid = _selected_once_told(capture, MADE_BEFORE, port, out, 4,       # the datagram, SYN, ACK, segment
                              f"dst port {port}")
    rows = [r for r in tshark_fields(out, "_ws.col.Protocol", "tcp.flags.str", "data.data", "frame.comment",
                                     display_filter="udp or tcp.flags.syn == 1 or tcp.len > 0")]
    seen = [(proto, flags.replace("·", ""), bytes.fromhex(data).decode() if data else "")
            for proto, flags, data, _ in rows]
    assert seen == [("UDP", "", "first datagram"), ("TCP", "S", ""), ("TCP", "AP", "first segment")], rows
    assert {comments(c)["PID"] for *_, c in rows} == {str(pid)}


# The main thread leaves at once (pthread_exit); a worker sends when told (stdin).
LEADER_GONE = r"""
import ctypes, socket, sys, threading
def worker():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    sys.stdin.readline()
    s.send(b"from a worker")
threading.Thread(target=worker).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_command_of_a_process_whose_main_thread_is_gone(peers, capture, tmp_path):
    """A process running before the start whose main thread had left (pthread_exit): its
    command and arguments, which /proc/PID no longer shows, are read from another thread."""
    port = free_port()
    peers("udp-server", str(port), "127.0.0.1")
    proc = subprocess.Popen([PYTHON, "-c", LEADER_GONE, str(port), "leader-gone-marker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        out = tmp_path / "o.pcapng"
        cap = capture("-i", "lo", "-w", str(out), "-Q", "out", f"udp dst port {port}")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=20) == 0
        cap.wait_received(1)
        cap.stop()
    finally:
        proc.kill()
        proc.wait()
    (text,), = tshark_fields(out, "frame.comment")
    c = comments(text)
    assert c["PID"] == str(proc.pid)
    assert c["Cmd"] == os.path.realpath(PYTHON) and c["Args"].endswith(f"{port} leader-gone-marker"), c

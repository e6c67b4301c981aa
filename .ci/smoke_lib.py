"""What the kernel smoke checks share (.ci/kernel_smoke.py, .ci/smoke_more.py): the senders,
the capture, the namespace of the veth, and what a capture may leave behind."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptcap.kernel import bpf  # noqa: E402  (the tree's, for the TCX query)
PY = str(ROOT / ".venv" / "bin" / "python")
PTCAP = [PY, "-m", "ptcap.cli"]
NS, HOST_IF, NS_IF = "k19smoke", "k19h", "k19n"
HOST_IP, NS_IP = "10.219.77.1", "10.219.77.2"
START_TIMEOUT = 240           # ptcap's start under TCG (loading and verifying the objects)
TMP = Path(tempfile.mkdtemp(prefix="ptcap-smoke-"))

TMP.chmod(0o755)              # the senders' names (symlinks here) run as nobody too

# A sender with a name of its own: opens its UDP socket at once (before the capture), says
# its port, then sends one datagram per line it reads ("PORT HOST"), says "sent" after each;
# "spawn EXE PORT HOST" makes a child (fork, then exec of EXE) send one and says its pid.
# Sent to its own port, a datagram is its own both ways (sender and receiver).
SENDER = r"""
import socket, subprocess, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print("ready", s.getsockname()[1], flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "spawn":
        child = subprocess.run([words[1], "-c", sys.argv[2], *words[2:]], capture_output=True, text=True)
        print("spawned", child.stdout.strip(), flush=True)
        continue
    s.sendto(b"smoke", (words[1], int(words[0])))
    print("sent", flush=True)
"""
CHILD = r"""
import os, socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"child", (sys.argv[2], int(sys.argv[1])))
print(os.getpid())
"""
# Starts a command in a cgroup (the directory "$0"): it joins before it execs, as a container's.
IN_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def sh(*args: str, check: bool = True, timeout: float = 60) -> str:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


# the system's python where there is one (another user may run it: a pyenv's in /root not)
SENDER_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def named(name: str) -> str:
    """A python whose comm is `name` (the name the program is started by)."""
    exe = TMP / name
    if not exe.exists():
        exe.symlink_to(os.path.realpath(SENDER_PYTHON))
    return str(exe)


class Sender:
    """A named sender (see SENDER): in another network namespace, as another user, or in a
    cgroup of its own from its start. Its pid is the process's (`ip netns exec` and the
    cgroup's shell exec the command)."""

    def __init__(self, name: str, bind: str, netns: str | None = None, user: int | None = None,
                 cgroup: str | None = None) -> None:
        argv = [named(name), "-c", SENDER, bind, CHILD]
        if cgroup:
            argv = ["sh", "-c", IN_CGROUP, cgroup, *argv]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, user=user)
        word, port = self.proc.stdout.readline().split()
        assert word == "ready"
        self.port = int(port)
        self.pid = self.proc.pid
        self.name = name

    def send(self, port: int, host: str) -> None:
        self.proc.stdin.write(f"{port} {host}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "sent"

    def spawn(self, name: str, port: int, host: str) -> int:
        """A child named `name` sends one datagram; its pid."""
        self.proc.stdin.write(f"spawn {named(name)} {port} {host}\n")
        self.proc.stdin.flush()
        word, pid = self.proc.stdout.readline().split()
        assert word == "spawned"
        return int(pid)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Capture:
    """ptcap with its stderr watched for "listening on"."""

    def __init__(self, *args: str) -> None:
        self.err = TMP / f"ptcap-{time.monotonic_ns()}.err"
        self.proc = subprocess.Popen([*PTCAP, *args], stdout=subprocess.PIPE, stderr=open(self.err, "w"),
                                     text=True)

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if "listening on" in self.err.read_text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"ptcap exited ({self.proc.returncode}): {self.err.read_text().strip()}")
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError("ptcap did not start listening")

    def finish(self, timeout: float = 120) -> list[str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"ptcap did not stop: {self.err.read_text().strip()}")
        if self.proc.returncode:
            raise AssertionError(f"ptcap exit {self.proc.returncode}: {self.err.read_text().strip()}")
        left = wait_clean()
        assert not left, f"left after a normal exit: {left}"
        return out.splitlines()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers() -> list[str]:
    """What a capture on the veth left in the kernel. In a booted VM (PTCAP_SMOKE_ALONE=1)
    nothing else runs, so every ptcap program, link and watchdog counts; on a shared host
    only what is on this check's own interface."""
    out = []
    alone = os.environ.get("PTCAP_SMOKE_ALONE") == "1"
    for dev in (HOST_IF, "lo") if alone else (HOST_IF,):
        if "clsact" in sh("tc", "qdisc", "show", "dev", dev):
            out.append(f"clsact qdisc on {dev}")
        for side in ("ingress", "egress"):
            if sh("tc", "filter", "show", "dev", dev, side, check=False).strip():
                out.append(f"tc {side} filter on {dev}")
    ifindex = socket.if_nametoindex(HOST_IF)
    for attach in (bpf.AttachType.TCX_INGRESS, bpf.AttachType.TCX_EGRESS):
        try:
            if bpf.attached(ifindex, attach):
                out.append(f"a TCX program on {HOST_IF} ({attach.name})")
        except bpf.BPFError:
            pass                  # no TCX in this kernel
    links = sh("bpftool", "link", "show")
    if alone:
        out += [l.strip() for l in sh("bpftool", "prog", "show").splitlines() if "name ptcap_" in l]
        if links.strip():
            out.append("bpf links: " + links.strip().replace("\n", "; "))
        if sh("pgrep", "-f", "ptcap.kernel.tcwatch", check=False).strip():
            out.append("tc watchdog still running")
    return out


def wait_clean(timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left

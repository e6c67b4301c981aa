"""The kernel matrix's smoke suite, run inside a booted kernel by .ci/kernels (or by hand, on
any kernel: `.venv/bin/python .ci/kernel_smoke.py`). Each check starts a real capture, makes
traffic once ptcap says it listens, and checks what it printed; every wait is bounded.

Checks: capture and attribution on lo (a socket opened before ptcap started, a pcap filter),
on a veth into a network namespace with a process selector, the cgroup-skb backend, a hook,
SIGKILL leaving nothing attached, and the extcap through tshark (every capture's normal exit is checked for
leftovers too). Prints one line per check
and `smoke: N passed, M failed on Linux RELEASE`; exits 1 if any failed.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
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

# A sender with a name of its own: opens its UDP socket at once (before the capture), says
# its port, then sends one datagram per line it reads ("PORT HOST"), says "sent" after each.
# Sent to its own port, a datagram is its own both ways (sender and receiver).
SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
print("ready", s.getsockname()[1], flush=True)
for line in sys.stdin:
    port, host = line.split()
    s.sendto(b"smoke", (host, int(port)))
    print("sent", flush=True)
"""


def sh(*args: str, check: bool = True, timeout: float = 60) -> str:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


class Sender:
    def __init__(self, name: str, bind: str, netns: str | None = None) -> None:
        exe = TMP / name                       # comm is the name the program was started by
        if not exe.exists():
            exe.symlink_to(os.path.realpath(sys.executable))
        argv = [str(exe), "-c", SENDER, bind]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        word, port = self.proc.stdout.readline().split()
        assert word == "ready"
        self.port = int(port)
        self.pid = self.proc.pid if not netns else _child_pid(self.proc.pid)
        self.name = name

    def send(self, port: int, host: str) -> None:
        self.proc.stdin.write(f"{port} {host}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "sent"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _child_pid(pid: int) -> int:
    """`ip netns exec` execs the command: same pid."""
    return pid


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
                raise AssertionError(f"ptcap exited: {self.err.read_text().strip()}")
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
        left = _wait_clean()
        assert not left, f"left after a normal exit: {left}"
        return out.splitlines()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_lo_filter_and_preexisting_socket() -> None:
    """tc on lo: `udp and dst port P1` keeps P1 only; leaving, the packets name their sender,
    arriving, the receiver, whose socket existed before ptcap started and which never
    touches it after (only the walk of existing sockets can know it)."""
    receiver = Sender("k19rcv", "127.0.0.1")
    sender = Sender("k19lo", "127.0.0.1")
    p1, p2 = receiver.port, free_port()
    # both copies of each loopback packet: the leaving one (sender), the arriving one (receiver)
    cap = Capture("-i", "lo", "--loopback-twice", "-n", "-c", "4", f"udp and dst port {p1}")
    try:
        cap.wait_listening()
        for _ in range(2):
            sender.send(p2, "127.0.0.1")
            sender.send(p1, "127.0.0.1")
        lines = cap.finish()
    finally:
        sender.stop()
        receiver.stop()
    assert len(lines) == 4, lines
    assert all(f".{p1}:" in l and f".{p2}:" not in l for l in lines), lines
    out = [l for l in lines if " Out " in l]
    into = [l for l in lines if " In " in l]
    assert len(out) == 2 and all(f"k19lo.{sender.pid}" in l for l in out), lines
    assert len(into) == 2 and all(f"k19rcv.{receiver.pid}" in l for l in into), lines


def check_veth_with_process_selector() -> None:
    """tc on a veth whose peer is in a namespace: --pid keeps one of two senders there."""
    mine = Sender("k19mine", NS_IP, NS)
    other = Sender("k19other", NS_IP, NS)
    port = free_port()
    cap = Capture("-i", HOST_IF, "-n", "-c", "3", "--pid", str(mine.pid), "udp")
    try:
        cap.wait_listening()
        for _ in range(3):
            other.send(port, HOST_IP)
            mine.send(port, HOST_IP)
        lines = cap.finish()
    finally:
        mine.stop()
        other.stop()
    assert len(lines) == 3, lines
    assert all(f"k19mine.{mine.pid}" in l for l in lines), lines


def check_cgroup_skb_backend() -> None:
    sender = Sender("k19cg", "127.0.0.1")
    port = sender.port
    cap = Capture("--backend", "cgroup-skb", "-i", "lo", "-n", "-c", "2", f"udp and dst port {port}")
    try:
        cap.wait_listening()
        for _ in range(2):
            sender.send(port, "127.0.0.1")
        lines = cap.finish()
    finally:
        sender.stop()
    assert len(lines) == 2 and all(f"k19cg.{sender.pid}" in l for l in lines), lines


def _direct_frame(port: int) -> bytes:
    import struct
    mac = bytes.fromhex(Path(f"/sys/class/net/{HOST_IF}/address").read_text().strip().replace(":", ""))
    udp = struct.pack("!HHHH", 40000, port, 8 + 6, 0) + b"direct"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(HOST_IP), socket.inet_aton(NS_IP))
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


def check_hooks() -> None:
    """--hook net_dev_queue sees a datagram leave by the veth, with its sender; --hook
    dev_direct_xmit (fentry on __dev_direct_xmit) a PACKET_QDISC_BYPASS frame, which passes
    no tracepoint, where the kernel has BPF trampolines; where it has not, ptcap says so,
    naming the kernel, and the tracepoint hook alone is checked."""
    port = free_port()
    expr = f"udp and dst port {port}"
    cap = Capture("--hook", "net_dev_queue", "--hook", "dev_direct_xmit", "-n", "-c", "2", expr)
    deadline = time.monotonic() + START_TIMEOUT
    while "listening on" not in cap.err.read_text() and cap.proc.poll() is None:
        assert time.monotonic() < deadline, "ptcap did not start"
        time.sleep(0.2)
    direct = cap.proc.poll() is None
    if not direct:
        err = cap.err.read_text()
        assert "--hook dev_direct_xmit: loading program" in err and f"on Linux {os.uname().release}" in err, err
        print(f"  (no fentry here: {err.splitlines()[0]})")
        cap = Capture("--hook", "net_dev_queue", "-n", "-c", "1", expr)
        cap.wait_listening()
    sender = Sender("k19hook", NS_IP, NS)
    try:
        sender.send(port, HOST_IP)
    finally:
        sender.stop()
    if direct:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.setsockopt(263, 20, 1)            # SOL_PACKET, PACKET_QDISC_BYPASS
            s.bind((HOST_IF, 0))
            s.send(_direct_frame(port))
        finally:
            s.close()
    lines = cap.finish()
    queued = [l for l in lines if l.split()[1] == "net_dev_queue"]
    assert len(queued) == 1 and "k19hook" in queued[0], lines
    if direct:
        sent = [l for l in lines if l.split()[1] == "dev_direct_xmit"]
        assert len(sent) == 1 and f"{HOST_IP}.40000 > {NS_IP}.{port}: UDP, length 6" in sent[0], lines


def _leftovers() -> list[str]:
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


def _wait_clean(timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def check_sigkill_leaves_nothing() -> None:
    cap = Capture("-i", HOST_IF, "-n", "udp")
    cap.wait_listening()
    assert _leftovers(), "the capture attached nothing"
    cap.proc.send_signal(signal.SIGKILL)
    cap.proc.wait()
    left = _wait_clean()
    assert not left, left


def check_extcap_through_tshark() -> None:
    """tshark -i ptcap, with the extcap and dissector of this tree in a home of its own (not
    install-wireshark.sh: that installs for root, for everyone on the machine)."""
    home = TMP / "home"
    launcher = f"#!/bin/sh\nPTCAP_PYTHON={PY}\nexport PTCAP_PYTHON\n" + \
        "".join(l for l in (ROOT / "extcap" / "ptcap").read_text().splitlines(True) if l.startswith("exec "))
    for d in (".config/wireshark/extcap", ".local/lib/wireshark/extcap"):
        (home / d).mkdir(parents=True, exist_ok=True)
        (home / d / "ptcap").write_text(launcher)
        (home / d / "ptcap").chmod(0o755)
    if not list(Path("/usr/lib").glob("*/wireshark/plugins/**/ptcap.lua")):   # one installed for all
        (home / ".local/lib/wireshark/plugins").mkdir(parents=True, exist_ok=True)
        (home / ".local/lib/wireshark/plugins/ptcap.lua").write_bytes((ROOT / "lua" / "ptcap.lua").read_bytes())
    sender = Sender("k19ws", "127.0.0.1")
    port = sender.port
    log = TMP / "extcap.log"
    proc = subprocess.Popen(["tshark", "-i", "ptcap", "-o", "extcap.ptcap.interfaces:lo",
                             "-o", "extcap.ptcap.loglevel:info", "-o", f"extcap.ptcap.logfile:{log}",
                             "-f", f"udp and dst port {port}", "-c", "2",
                             "-T", "fields", "-e", "ptcap.pid", "-e", "ptcap.comm", "-e", "udp.dstport"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": str(home)})
    try:
        deadline = time.monotonic() + 2 * START_TIMEOUT     # tshark asks every extcap first
        while not (log.exists() and "listening on" in log.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                raise AssertionError(f"extcap did not start: {err.strip()} / log: "
                                     f"{log.read_text().strip() if log.exists() else 'none'}")
            time.sleep(0.2)
        for _ in range(2):
            sender.send(port, "127.0.0.1")
        out, err = proc.communicate(timeout=120)
    finally:
        sender.stop()
        if proc.poll() is None:
            proc.kill()
    rows = [l.split("\t") for l in out.splitlines() if l.strip()]
    # one copy per loopback packet, with both its ends (here one process)
    assert [r[0].split(",")[0] for r in rows] == [str(sender.pid)] * 2, (rows, err)
    assert [r[1].split(",")[0] for r in rows] == ["k19ws"] * 2 and {r[2] for r in rows} == {str(port)}, rows


CHECKS = [check_lo_filter_and_preexisting_socket, check_veth_with_process_selector,
          check_cgroup_skb_backend, check_hooks, check_sigkill_leaves_nothing,
          check_extcap_through_tshark]


def setup_netns() -> None:
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")


def teardown_netns() -> None:
    sh("ip", "link", "del", HOST_IF, check=False)
    sh("ip", "netns", "del", NS, check=False)


def main() -> int:
    release = os.uname().release
    only = sys.argv[1:]
    t0 = time.monotonic()
    print(sh(*PTCAP, "--version", timeout=START_TIMEOUT).rstrip(), flush=True)
    print(f"smoke: ptcap --version took {time.monotonic() - t0:.0f} s", flush=True)
    setup_netns()
    passed = failed = 0
    try:
        for check in CHECKS:
            if only and check.__name__ not in only:
                continue
            t = time.monotonic()
            try:
                check()
                passed += 1
                print(f"PASS {check.__name__} ({time.monotonic() - t:.0f} s)", flush=True)
            except Exception as e:
                failed += 1
                detail = str(e) or traceback.format_exc()
                print(f"FAIL {check.__name__} ({time.monotonic() - t:.0f} s): {detail}", flush=True)
    finally:
        teardown_netns()
    print(f"smoke: {passed} passed, {failed} failed on Linux {release} "
          f"in {time.monotonic() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

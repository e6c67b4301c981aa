"""Shared test fixtures: real network namespaces, real peers, a real ptcap process."""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers.py"
PYTHON = sys.executable
_counter = itertools.count(1)
# Upper bounds only (each wait ends as soon as its condition holds): generous enough for a
# kernel booted under TCG (.ci/kernels, /tmp/vmtest.sh), where loading the BPF objects alone
# takes tens of seconds
START_TIMEOUT = 120     # until ptcap says "listening on"
WAIT_TIMEOUT = 60       # for a condition, or for ptcap to exit once stopped


def run(cmd: list[str] | str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    if isinstance(cmd, str):
        cmd = cmd.split()
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


@dataclass
class VethPair:
    """A network namespace joined to the root namespace by a veth pair.

    host (root ns) has host_ip; the namespace side has peer_ip."""

    ns: str
    host_if: str
    peer_if: str
    host_ip: str
    peer_ip: str

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]


def free_subnet() -> str:
    """A 10.x.y.0/24 no interface of the root namespace uses (test runs may overlap)."""
    used = run(["ip", "-4", "-o", "addr", "show"]).stdout
    for _ in range(1000):
        net = f"10.{random.randint(200, 250)}.{random.randint(1, 254)}"
        if f" {net}." not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 for a test namespace")


@pytest.fixture
def veth():
    n = next(_counter)
    tag = f"{os.getpid() % 10000}{n}"
    net = free_subnet()
    pair = VethPair(ns=f"ptt{tag}", host_if=f"pth{tag}", peer_if=f"ptp{tag}",
                    host_ip=f"{net}.1", peer_ip=f"{net}.2")
    run(["ip", "netns", "add", pair.ns])
    try:
        run(["ip", "link", "add", pair.host_if, "type", "veth", "peer", "name", pair.peer_if])
        run(["ip", "link", "set", pair.peer_if, "netns", pair.ns])
        run(["ip", "addr", "add", f"{pair.host_ip}/24", "dev", pair.host_if])
        run(["ip", "link", "set", pair.host_if, "up"])
        run(pair.exec("ip", "addr", "add", f"{pair.peer_ip}/24", "dev", pair.peer_if))
        run(pair.exec("ip", "link", "set", pair.peer_if, "up"))
        run(pair.exec("ip", "link", "set", "lo", "up"))
        yield pair
    finally:
        run(["ip", "link", "del", pair.host_if], check=False)
        run(["ip", "netns", "del", pair.ns], check=False)


class Peer:
    """A real client or server process from tests/peers.py, driven over stdin/stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready = self.expect("ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, word: str, timeout: float = 10) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"peer exited before saying {word!r}")
            if line.startswith(word):
                return line.strip()
        raise AssertionError(f"peer did not say {word!r}")

    def say(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.expect("done")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def peer(*args: str, netns: str | None = None) -> Peer:
    argv = [PYTHON, str(PEERS), *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return Peer(argv)


@pytest.fixture
def peers():
    started: list[Peer] = []

    def start(*args: str, netns: str | None = None) -> Peer:
        p = peer(*args, netns=netns)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def ptcap_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "ptcap.cli", *args]


class Capture:
    """A running `ptcap` process; waits until it is listening."""

    def __init__(self, *args: str, stdout=None, env=None) -> None:
        self.proc = subprocess.Popen(ptcap_argv(*args), stdout=stdout or subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=ROOT, env=env)
        self._stderr: list[str] = []
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            line = self.proc.stderr.readline().decode()
            if not line:
                break
            self._stderr.append(line)
            if line.removeprefix("ptcap: ").startswith("listening on"):
                return
        self.proc.kill()
        out = self.proc.communicate()
        raise AssertionError("ptcap did not start: " + "".join(self._stderr) + out[1].decode())

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = WAIT_TIMEOUT) -> tuple[bytes, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return out or b"", "".join(self._stderr) + err.decode()

    def stop(self, sig: int = signal.SIGINT) -> tuple[bytes, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.finish()

    def wait_received(self, n: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Until the kernel side has let `n` packets through the filters (ptcap's own counter,
        "received by filter"): stopping then drains them all from the ring."""
        wait_received(self.proc.pid, n, timeout)


@pytest.fixture
def capture():
    running: list[Capture] = []

    def start(*args: str, **kw) -> Capture:
        c = Capture(*args, **kw)
        running.append(c)
        return c

    yield start
    for c in running:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def tshark_fields(path: Path, *fields: str, display_filter: str | None = None) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
           "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    if display_filter:
        cmd += ["-Y", display_filter]
    res = run(cmd)
    return [line.split("\t") for line in res.stdout.splitlines()]


def comments(text: str) -> dict[str, str]:
    """tshark's frame.comment field (aggregated with '|', newlines as \\n) → {key: value}."""
    out = {}
    for comment in text.split("|"):
        for line in comment.replace("\\n", "\n").splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                out[key] = value
    return out


def leftovers() -> list[str]:
    """Anything of ptcap's still in the kernel: programs, links, clsact qdiscs, pins.

    A program or link held open by a live process outside this test run (another capture
    on the machine) is not ours to judge; one held by nobody, or by anything this run
    started (orphans included: pytest is their subreaper), is a leftover."""
    # listed before and after the look at who holds what: one that another process loads or
    # frees meanwhile is not taken for a leftover
    before = _bpf_objects()
    foreign = _held_by_others()
    after = _bpf_objects()
    found = [line for key, line in after.items() if key in before and key not in foreign]
    for dev in os.listdir("/sys/class/net"):
        q = run(["tc", "qdisc", "show", "dev", dev], check=False).stdout
        if "clsact" in q:
            found.append(f"clsact qdisc on {dev}")
        for kind in ("ingress", "egress"):
            f = run(["tc", "filter", "show", "dev", dev, kind], check=False).stdout
            if f.strip():
                found.append(f"tc {kind} filter on {dev}: {f.strip()}")
    if os.path.isdir("/sys/fs/bpf"):
        found += [f"pinned: {p}" for p in os.listdir("/sys/fs/bpf") if "ptcap" in p]
    return found


def _bpf_objects() -> dict[tuple[str, int], str]:
    """ptcap's programs and every link in the kernel now, by ("prog"|"link", id)."""
    out = {}
    for line in run(["bpftool", "prog", "show"], check=False).stdout.splitlines():
        if re.search(r"name ptcap", line):
            out["prog", int(line.split(":")[0])] = line
    for line in run(["bpftool", "link", "show"], check=False).stdout.splitlines():
        if re.match(r"^\d+:", line):
            out["link", int(line.split(":")[0])] = f"link: {line}"
    return out


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _held_by_others() -> set[tuple[str, int]]:
    """("prog"|"link", id) of BPF objects that live processes outside this run hold open."""
    ours = _descendants(os.getpid())
    held = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                text = open(f"/proc/{entry}/fdinfo/{fd}").read()
            except OSError:
                continue
            for kind in ("link", "prog"):
                m = re.search(rf"^{kind}_id:\s*(\d+)", text, re.M)
                if m:
                    held.add((kind, int(m.group(1))))
    return held


def wait_for(condition, timeout: float = WAIT_TIMEOUT, what: str = "") -> None:
    """Poll `condition` until true; fail naming `what` (or the condition) after `timeout` s."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


def tcp_settled(port: int, *netns: str) -> bool:
    """No TCP packet of `port` is on its way in these namespaces (names from `ip netns`, or
    paths like /proc/PID/ns/net; the root one if none): every
    socket is listening, in TIME-WAIT, or idle (nothing unread, nothing unacknowledged, no FIN
    waiting for its ACK), so each packet sent so far has been sent and received."""
    idle = ("ESTAB", "CLOSE-WAIT", "FIN-WAIT-2")
    for ns in netns or (None,):
        cmd = ["ss", "-Htan", f"( sport = :{port} or dport = :{port} )"]
        listing = run(["nsenter", f"--net={ns if '/' in ns else '/run/netns/' + ns}", *cmd] if ns else cmd).stdout
        for state, recv_q, send_q, *_ in (line.split() for line in listing.splitlines() if line.strip()):
            if state in ("LISTEN", "TIME-WAIT"):
                continue
            if state not in idle or recv_q != "0" or send_q != "0":
                return False
    return True


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port the kernel hands out now (ephemeral): no two test runs share it."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def file_packets(path) -> list:
    """The packets a capture has written to `path` so far (a block cut short by a write in
    progress ends the list)."""
    from ptcap.formats.reader import open_capture
    out = []
    try:
        reader, f = open_capture(str(path))
    except Exception:       # noqa: BLE001 (not even the header yet)
        return out
    try:
        for pkt in reader:
            out.append(pkt)
    except Exception:       # noqa: BLE001
        pass
    finally:
        f.close()
    return out


def programs_of(pid: int, prefix: str = "ptcap") -> list[str]:
    """Names of the BPF programs one process holds (by program or link fd): what a capture
    under test has loaded, whatever else runs on the machine."""
    ids = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return []
    for fd in fds:
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        ids.update(int(m) for m in re.findall(r"^prog_id:\s*(\d+)", text, re.M))
    names = {p["id"]: p.get("name", "") for p in json.loads(run(["bpftool", "-j", "prog", "show"]).stdout or "[]")}
    return sorted(names[i] for i in ids if names.get(i, "").startswith(prefix))


def counters_map(pid: int) -> int | None:
    """Id of the counters map (ptcap_counters) a running capture holds, None before it has one."""
    held = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return None
    for fd in fds:
        try:
            m = re.search(r"^map_id:\s*(\d+)", open(f"/proc/{pid}/fdinfo/{fd}").read(), re.M)
        except OSError:
            continue
        if m:
            held.add(int(m.group(1)))
    maps = json.loads(run(["bpftool", "-j", "map", "show"]).stdout or "[]")
    return next((m["id"] for m in maps if m["id"] in held and m.get("name") == "ptcap_counters"), None)


def counters(map_id: int) -> tuple[int, ...]:
    """(received by filter, dropped by kernel, over --hook-rate) of one counters map, summed over CPUs."""
    dump = json.loads(run(["bpftool", "-j", "map", "dump", "id", str(map_id)], check=False).stdout or "[]")
    by_key = {e["formatted"]["key"]: sum(v["value"] for v in e["formatted"]["values"]) for e in dump}
    return tuple(by_key.get(k, 0) for k in range(3))


def wait_received(pid: int, n: int, timeout: float = WAIT_TIMEOUT, limited: bool = False) -> None:
    """Until the capture `pid` has counted `n` packets through its filters in the kernel (with
    `limited`, those held back by --hook-rate too)."""
    found: list[int] = []

    def enough() -> bool:
        if not found:
            map_id = counters_map(pid)
            if map_id is None:
                return False
            found.append(map_id)
        c = counters(found[0])
        return c[0] + (c[2] if limited else 0) >= n

    wait_for(enough, timeout, f"{n} packets received by filter")


def wait_clean(timeout: float = 5) -> list[str]:
    """Leftovers after giving the kernel a moment to release a dead process's links."""
    deadline = time.time() + timeout
    while True:
        left = leftovers()
        if not left or time.time() > deadline:
            return left
        time.sleep(0.1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `root` load BPF, make namespaces or run daemons; as any other user they
    are skipped and the rest run."""
    if os.geteuid() == 0:
        return
    needs_root = pytest.mark.skip(reason="needs root (marked root)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(needs_root)


def engine_unavailable(reason: str) -> None:
    """A container engine that cannot start here: a skip, except in CI (CI=true), where the
    machine is meant to have it and a skip would hide that the tests did not run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the engine cannot start: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _root_and_tools():
    if os.geteuid() != 0:
        return      # only unmarked tests run (see pytest_collection_modifyitems)
    # orphans of what the tests start stay our descendants, so leftovers() still judges them
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    for tool in ("tshark", "tcpdump", "bpftool", "tc", "ip"):
        if shutil.which(tool) is None:
            pytest.exit(f"{tool} is missing: run ./install.sh", returncode=1)


@pytest.fixture(autouse=True)
def _no_ptcap_outlives_its_test():
    """A test that fails half-way must not leave a capture running into the next tests
    (pytest is the subreaper of what they start, so orphans are found too)."""
    yield
    for pid in _descendants(os.getpid()) - {os.getpid()}:
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"ptcap.cli" in cmdline or b"ptcap.cli.extcap" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- the host's own container engines: the suite must leave them as they were ---------------
_HOST_ENGINES: dict = {}


def pytest_sessionstart(session):
    from engines import host_engines
    _HOST_ENGINES["before"] = host_engines()


def pytest_sessionfinish(session, exitstatus):
    """The host's docker0 and its engines' running containers, as at the start (the tests'
    private engines must not touch them): a change fails the run."""
    from engines import host_engines
    before = _HOST_ENGINES.get("before")
    after = host_engines()
    if before is not None and after != before:
        sys.stderr.write(f"\nthe host's container engines changed during the tests:\n  before {before}\n"
                         f"  after  {after}\n")
        session.exitstatus = 1

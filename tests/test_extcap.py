"""The ptcap extcap: Wireshark's protocol spoken by extcap/ptcap, and real tshark captures
through the installed interface."""
from __future__ import annotations

import os
import re
import select
import signal
import struct
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, comments, free_port, run, tshark_fields, wait_clean

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

EXTCAP = ROOT / "extcap" / "ptcap"
LUA = ROOT / "lua" / "ptcap.lua"
PREFIX = Path("/opt/ptcap")


def _ports():
    """Ports the kernel hands out now (ephemeral), never the same one twice in a run."""
    seen = set()
    while True:
        port = free_port()
        if port not in seen:
            seen.add(port)
            yield port


PORTS = _ports()


def _folder(name: str) -> Path:
    for line in run(["tshark", "-G", "folders"]).stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return Path(value.strip())
    raise AssertionError(f"tshark -G folders has no {name!r}")


def extcap(*args: str) -> subprocess.CompletedProcess:
    return run([str(EXTCAP), *args], check=False)


# -- the protocol --------------------------------------------------------------------------
def test_interfaces_lists_ptcap_and_drops():
    res = extcap("--extcap-interfaces", "--extcap-version=4.0")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("extcap {version=")
    assert "interface {value=ptcap}{display=ptcap-processes}" in lines
    assert any(l.startswith("interface {value=ptcap-drops}") for l in lines)


def test_listing_calls_import_no_bpf_layer():
    code = ("import sys; from ptcap.cli import extcap\n"
            "extcap.main(['--extcap-interfaces'])\n"
            "extcap.main(['--extcap-interface', 'ptcap', '--extcap-dlts'])\n"
            "extcap.main(['--extcap-interface', 'ptcap', '--extcap-config'])\n"
            "print('MODULES', *sorted(m for m in sys.modules if m.startswith('ptcap') or m == 'ctypes'))")
    res = run([PYTHON, "-c", code])
    modules = res.stdout.split("MODULES", 1)[1].split()
    assert [m for m in modules if not m.startswith("ptcap.cli.extcap")] == ["ptcap", "ptcap.cli"]
    assert "ptcap.cli.extcap" in modules


def test_dlts():
    res = extcap("--extcap-interface", "ptcap", "--extcap-dlts")
    assert res.returncode == 0
    assert res.stdout.startswith("dlt {number=1}{name=EN10MB}")


def _config() -> dict[str, dict]:
    res = extcap("--extcap-interface", "ptcap", "--extcap-config")
    assert res.returncode == 0, res.stderr
    args: dict[str, dict] = {}
    by_number = {}
    for line in res.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(part.split("=", 1) for part in rest.strip("{}").split("}{"))
        if kind == "arg":
            fields["values"] = []
            args[fields["call"]] = by_number[fields["number"]] = fields
        elif kind == "value":
            by_number[fields["arg"]]["values"].append(fields)
    return args


def test_config_groups_and_validation():
    args = _config()
    groups = {call: a["group"] for call, a in args.items()}
    assert groups == {
        "--interfaces": "Capture", "--backend": "Capture", "--snaplen": "Capture",
        "--direction": "Capture", "--netns": "Capture",
        "--pid": "Filter", "--follow-forks": "Filter", "--pname": "Filter", "--uid": "Filter",
        "--container": "Filter", "--pod": "Filter", "--embed-keylog-to-pcapng": "TLS",
        "--log-level": "Debug", "--log-file": "Debug",
    }
    assert args["--interfaces"]["type"] == "multicheck"
    ifaces = [v["value"] for v in args["--interfaces"]["values"]]
    assert ifaces[0] == "any" and "lo" in ifaces
    assert args["--interfaces"]["values"][0]["default"] == "true"
    assert [v["value"] for v in args["--backend"]["values"]] == ["tc", "cgroup-skb"]
    assert [v["value"] for v in args["--direction"]["values"]] == ["inout", "in", "out"]
    assert args["--snaplen"]["range"] == "0,262144"
    assert args["--pid"]["validation"] and args["--uid"]["validation"]
    assert [v["value"] for v in args["--log-level"]["values"]] == ["message", "info", "debug", "noisy"]
    assert args["--log-file"]["type"] == "fileselect"


def test_capture_filter_validation_answers_as_wireshark_expects():
    ok = extcap("--extcap-capture-filter", "tcp port 80 and host 10.1.2.3", "--extcap-interface", "ptcap")
    assert (ok.returncode, ok.stdout) == (0, "")
    # the reason on stdout, exit 0: Wireshark reads nothing from an extcap that fails
    bad = extcap("--extcap-capture-filter", "tcp portx 80", "--extcap-interface", "ptcap")
    assert (bad.returncode, bad.stdout) == (0, "ptcap: can't parse filter expression: syntax error\n")
    # on the L3 backend, link-layer filters cannot work: said at once
    l3 = extcap("--extcap-capture-filter", "ether host 1:2:3:4:5:6", "--extcap-interface", "ptcap",
                "--backend", "cgroup-skb")
    assert l3.returncode == 0 and l3.stdout.startswith("ptcap: ")


def test_unknown_interface_is_one_line():
    res = extcap("--extcap-interface", "nope", "--extcap-config")
    assert res.returncode == 1
    assert res.stderr.strip().startswith("ptcap: unknown interface") and res.stderr.count("\n") == 1


def _listening(log: Path, proc: subprocess.Popen, pause, timeout: float = 30) -> bool:
    """Wait until the extcap's log says the kernel side listens; False if it exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "listening on" in log.read_text():
            return True
        pause()
    return False


# -- captures into a fifo, as dumpcap runs them ----------------------------------------------
class FifoCapture:
    """extcap/ptcap --capture with a fifo read the way dumpcap reads it."""

    def __init__(self, tmp: Path, *options: str, interface: str = "ptcap") -> None:
        self.fifo = tmp / "fifo"
        self.log = tmp / "extcap.log"
        os.mkfifo(self.fifo)
        self.proc = subprocess.Popen([str(EXTCAP), "--capture", "--extcap-interface", interface,
                                      "--fifo", str(self.fifo), "--log-level", "info",
                                      "--log-file", str(self.log), *options],
                                     stderr=subprocess.PIPE, text=True)
        self.fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    def wait_listening(self) -> None:
        if not _listening(self.log, self.proc, lambda: self.read(0.05)):
            raise AssertionError(f"the extcap did not start: {self.proc.stderr.read()}")

    def read(self, timeout: float) -> None:
        if select.select([self.fd], [], [], timeout)[0]:
            try:
                self.data += os.read(self.fd, 1 << 20)
            except BlockingIOError:
                pass

    def blocks(self) -> list[tuple[int, bytes]]:
        out, off = [], 0
        while off + 12 <= len(self.data):
            btype, length = struct.unpack_from("<II", self.data, off)
            if off + length > len(self.data):
                break
            out.append((btype, self.data[off:off + length]))
            off += length
        return out

    def close_fifo(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def fifo_capture(tmp_path):
    made: list[FifoCapture] = []

    def start(*options: str, **kw) -> FifoCapture:
        c = FifoCapture(tmp_path, *options, **kw)
        made.append(c)
        return c

    yield start
    for c in made:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
        c.close_fifo()


def _epb_comments(block: bytes) -> list[str]:
    caplen = struct.unpack_from("<I", block, 20)[0]
    off = 28 + caplen + (-caplen & 3)
    out = []
    while off + 4 <= len(block) - 4:
        code, length = struct.unpack_from("<HH", block, off)
        if code == 0:
            break
        if code == 1:
            out.append(block[off + 4:off + 4 + length].decode())
        off += 4 + length + (-length & 3)
    return out


def test_fifo_gets_each_packet_while_the_capture_runs(fifo_capture, peers):
    port = next(PORTS)
    server = peers("udp-server", str(port), "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", str(port))
    cap = fifo_capture("--interfaces", "lo", "--extcap-capture-filter", f"udp port {port}")
    cap.wait_listening()
    client.say("send 100")
    deadline = time.time() + 2          # written through: no buffer holds it back
    while time.time() < deadline and not any(t == 6 for t, _ in cap.blocks()):
        cap.read(0.1)
    packets = [b for t, b in cap.blocks() if t == 6]
    assert packets, "no packet reached the fifo within 2 s"
    assert cap.blocks()[0][0] == 0x0A0D0D0A and cap.blocks()[1][0] == 1
    assert cap.proc.poll() is None
    pids = {comments("|".join(_epb_comments(p))).get("PID") for p in packets}
    assert pids <= {str(client.pid), str(server.pid)} and str(client.pid) in pids
    cap.proc.send_signal(signal.SIGTERM)
    assert cap.wait(5) == 0


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "closed fifo"])
def test_stops_within_two_seconds_and_cleans_up(fifo_capture, how):
    cap = fifo_capture("--interfaces", "lo", "--extcap-capture-filter", f"udp port {next(PORTS)}")
    cap.wait_listening()
    started = time.monotonic()
    if how == "closed fifo":
        cap.close_fifo()
    else:
        cap.proc.send_signal(getattr(signal, how))
    status = cap.wait(10)
    took = time.monotonic() - started
    assert took < 2.0, f"took {took:.2f} s to stop after {how}"
    assert status == 0
    assert cap.proc.stderr.read() == ""
    assert wait_clean() == []


@pytest.mark.parametrize("options, message", [
    (("--extcap-interface", "ptcap", "--pid", "999999999"), "ptcap: --pid 999999999: no such process\n"),
    (("--extcap-interface", "nope"), "ptcap: unknown interface 'nope' (this extcap has ptcap, ptcap-drops)\n"),
    (("--extcap-interface", "ptcap", "--interfaces", "nosuch0"), "ptcap: nosuch0: No such device exists\n"),
])
def test_error_opens_the_fifo_and_says_one_line(tmp_path, options, message):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([str(EXTCAP), "--capture", "--fifo", str(fifo), *options],
                            stderr=subprocess.PIPE, text=True)
    opened = []
    # a blocking open for reading returns only once the extcap opens its end
    reader = threading.Thread(target=lambda: opened.append(open(fifo, "rb")), daemon=True)
    reader.start()
    reader.join(10)
    try:
        assert opened, "the extcap never opened the fifo: dumpcap would wait forever"
        opened[0].read()
        assert proc.wait(10) == 1
        assert proc.stderr.read() == message
    finally:
        if proc.poll() is None:
            proc.kill()
        for f in opened:
            f.close()
    assert wait_clean() == []


def test_bad_option_values_are_one_line(fifo_capture):
    cap = fifo_capture("--pid", "12x")
    assert cap.wait(10) == 1
    assert cap.proc.stderr.read() == "ptcap: process ID: '12x' is not a number\n"


# -- the installed interface and real tshark -------------------------------------------------
@pytest.fixture(scope="module")
def installed():
    """The system-wide install ./install.sh made (extcap/install-wireshark.sh), of this tree."""
    extcap_file = _folder("Extcap path") / "ptcap"
    assert extcap_file.exists(), f"{extcap_file} is missing: run ./install.sh"
    assert f"exec {PREFIX}/.venv/bin/python -I -m ptcap.cli.extcap" in extcap_file.read_text()
    for src in (ROOT / "ptcap").rglob("*.py"):
        dst = PREFIX / src.relative_to(ROOT)
        assert dst.exists() and dst.read_bytes() == src.read_bytes(), \
            f"{dst} is not this tree's: run extcap/install-wireshark.sh {ROOT}"
    lua = _folder("Global Lua Plugins") / "ptcap.lua"
    assert lua.exists() and lua.read_bytes() == LUA.read_bytes(), f"{lua} is not this tree's: run ./install.sh"
    listed = run(["tshark", "-D"], check=False).stdout
    assert "(ptcap-processes)" in listed, "tshark -D does not list ptcap: run ./install.sh"


def test_tshark_lists_ptcap(installed):
    listed = run(["tshark", "-D"]).stdout.splitlines()
    assert any(l.endswith(". ptcap (ptcap-processes)") for l in listed)
    assert any(l.endswith(". ptcap-drops (ptcap-kernel-drops)") for l in listed)


def test_readme_names_every_tshark_preference_of_the_dialog(installed):
    """tshark names the dialog's options after their call, without dashes
    (--embed-keylog-to-pcapng is extcap.ptcap.embedkeylogtopcapng): README lists them all."""
    prefs = set(re.findall(r"^#?extcap\.ptcap\.(\w+):", run(["tshark", "-G", "defaultprefs"]).stdout, re.M))
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("`-o extcap.ptcap.OPTION:VALUE` ("):]
    listed = set(re.findall(r"`(\w+)`", sentence[:sentence.index(")")]))
    assert prefs and listed == prefs


def test_install_is_idempotent_and_checks_as_a_user(installed):
    files = [_folder("Extcap path") / "ptcap", _folder("Global Lua Plugins") / "ptcap.lua",
             _folder("Global configuration") / "profiles/ptcap/preferences",
             _folder("Global configuration") / "profiles/ptcap/colorfilters",
             _folder("Global configuration") / "preferences", PREFIX / "libexec/ptcap-capture"]
    before = [p.read_bytes() for p in files]
    res = run([str(ROOT / "extcap/install-wireshark.sh"), str(ROOT)])
    assert "tshark -D lists ptcap" in res.stdout
    assert "tshark -D as user nobody lists ptcap" in res.stdout
    assert [p.read_bytes() for p in files[:-1]] == before[:-1]
    prefs = files[4].read_text()
    assert prefs.count("extcap.ptcap.interfaces: any") == 1


def test_per_user_copies_of_older_installs_are_removed(installed):
    home = Path(os.path.expanduser("~root"))
    old = home / ".config/wireshark/extcap/ptcap"
    keep = home / ".config/wireshark/extcap/someone-elses"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("#!/bin/sh\n# installed by /somewhere/extcap/install-wireshark.sh\nexec false\n")
    keep.write_text("#!/bin/sh\nexec false\n")
    try:
        res = run([str(ROOT / "extcap/install-wireshark.sh"), str(ROOT)])
        assert f"removed the per-user copy {old}" in res.stdout
        assert not old.exists() and keep.exists()
    finally:
        old.unlink(missing_ok=True)
        keep.unlink(missing_ok=True)


def test_tshark_fields_list_ptcap(installed):
    fields = {line.split("\t")[2]: line.split("\t")[3] for line in run(["tshark", "-G", "fields"]).stdout.splitlines()
              if line.startswith("F\t") and "\tptcap." in line}
    for name in ("ptcap.pid", "ptcap.tid", "ptcap.ppid", "ptcap.uid"):
        assert fields[name] == "FT_UINT32", name
    for name in ("ptcap.comm", "ptcap.cmd", "ptcap.args", "ptcap.thread", "ptcap.pcmd", "ptcap.container",
                 "ptcap.container.id", "ptcap.container.image", "ptcap.container.labels", "ptcap.pod",
                 "ptcap.pod.namespace", "ptcap.pod.uid", "ptcap.pod.labels", "ptcap.drop.reason",
                 "ptcap.drop.location"):
        assert fields[name] == "FT_STRING", name


class Tshark:
    """`tshark -i ptcap ...` with the extcap logging to a file, so a test knows when the
    kernel side is listening before it makes traffic."""

    def __init__(self, tmp: Path, *args: str, interface: str = "ptcap", duration: int = 6) -> None:
        self.log = tmp / f"extcap-{time.monotonic_ns()}.log"
        pref = interface.replace("-", "_")
        self.proc = subprocess.Popen(
            ["tshark", "-i", interface, "-a", f"duration:{duration}",
             "-o", f"extcap.{pref}.loglevel:info", "-o", f"extcap.{pref}.logfile:{self.log}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_listening(self) -> None:
        if _listening(self.log, self.proc, lambda: time.sleep(0.05)):
            return
        self.proc.kill()
        out, err = self.proc.communicate()
        log = self.log.read_text() if self.log.exists() else ""
        raise AssertionError(f"the ptcap extcap did not start: {err}\n{log}")

    def finish(self, timeout: float = 30) -> tuple[str, str]:
        return self.proc.communicate(timeout=timeout)


@pytest.fixture
def tshark(tmp_path, installed):
    started: list[Tshark] = []

    def start(*args: str, **kw) -> Tshark:
        t = Tshark(tmp_path, *args, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.communicate()
    assert wait_clean() == []


def _two_clients(peers):
    port = next(PORTS)
    peers("tcp-server", str(port), "127.0.0.1")
    return port, peers("tcp-client", "127.0.0.1", str(port)), peers("tcp-client", "127.0.0.1", str(port))


def _lines(out: str) -> list[list[str]]:
    return [l.split("\t") for l in out.splitlines() if l.strip()]


def test_display_filter_on_pid_gives_exactly_the_clients_packets(tshark, peers):
    port, mine, other = _two_clients(peers)
    mine_port, other_port = mine.ready.split()[2], other.ready.split()[2]
    t = tshark("-o", "extcap.ptcap.interfaces:lo", "-f", f"tcp port {port}", "-Y", f"ptcap.pid == {mine.pid}",
               "-T", "fields", "-e", "ptcap.pid", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.len")
    t.wait_listening()
    for _ in range(3):
        mine.say("send 300")
        other.say("send 500")
    out, err = t.finish()
    rows = _lines(out)
    assert rows, err
    assert all(str(mine.pid) in r[0].split(",") for r in rows)       # a packet names both ends
    assert not any(str(other.pid) in r[0].split(",") for r in rows)
    assert all(mine_port in (r[1], r[2]) for r in rows)
    assert not any(other_port in (r[1], r[2]) for r in rows)
    # every segment the client sent is there (each send is one segment: the echo is awaited)
    assert sum(1 for r in rows if r[1] == mine_port and r[3] == "300") >= 3


def test_extcap_option_filters_by_pid_in_the_kernel(tshark, peers):
    port, mine, other = _two_clients(peers)
    t = tshark("-o", "extcap.ptcap.interfaces:lo", "-o", f"extcap.ptcap.pid:{mine.pid}",
               "-T", "fields", "-e", "ptcap.pid", "-e", "tcp.srcport", "-e", "tcp.dstport")
    t.wait_listening()
    assert f"--pid {mine.pid}" in t.log.read_text()
    for _ in range(3):
        mine.say("send 200")
        other.say("send 200")
    out, err = t.finish()
    rows = _lines(out)
    assert rows, err
    assert all(str(mine.pid) in r[0].split(",") for r in rows)       # a packet names both ends
    assert not any(str(other.pid) in r[0].split(",") for r in rows)


def test_extcap_option_filters_by_process_name(tshark, peers, tmp_path):
    port = next(PORTS)
    peers("udp-server", str(port), "127.0.0.1")
    name = f"ptc6n{os.getpid() % 10000}"
    renamed = tmp_path / name           # comm is the name the program was started by
    renamed.symlink_to(os.path.realpath(PYTHON))
    from conftest import PEERS, Peer
    named = Peer([str(renamed), str(PEERS), "udp-client", "127.0.0.1", str(port)])
    try:
        other = peers("udp-client", "127.0.0.1", str(port))
        t = tshark("-o", "extcap.ptcap.interfaces:lo", "-o", f"extcap.ptcap.pname:{name}",
                   "-T", "fields", "-e", "ptcap.pid", "-e", "ptcap.comm")
        t.wait_listening()
        for _ in range(3):
            named.say("send 100")
            other.say("send 100")
        out, err = t.finish()
    finally:
        named.stop()
    rows = _lines(out)
    assert rows, err
    assert all(str(named.pid) in r[0].split(",") and name in r[1].split(",") for r in rows)


def test_capture_filter_from_tshark_runs_in_the_kernel(tshark, peers):
    a, b = next(PORTS), next(PORTS)
    peers("udp-server", str(a), "127.0.0.1")
    peers("udp-server", str(b), "127.0.0.1")
    ca = peers("udp-client", "127.0.0.1", str(a))
    cb = peers("udp-client", "127.0.0.1", str(b))
    t = tshark("-o", "extcap.ptcap.interfaces:lo", "-f", f"udp port {a}", "-T", "fields",
               "-e", "udp.srcport", "-e", "udp.dstport")
    t.wait_listening()
    # the CLI capture got it as its expression: compiled to eBPF, run before any copy
    assert f"-i lo -s 262144 udp port {a}\n" in t.log.read_text()
    for _ in range(3):
        ca.say("send 50")
        cb.say("send 50")
    out, err = t.finish()
    rows = _lines(out)
    assert rows, err
    assert all(str(a) in r for r in rows) and not any(str(b) in r for r in rows)


def test_invalid_capture_filter_ends_tshark_with_the_reason(tshark):
    t = tshark("-o", "extcap.ptcap.interfaces:lo", "-f", "udp portx 9")
    out, err = t.finish(timeout=20)
    assert "ptcap: can't parse filter expression: syntax error" in err


def test_temporary_file_has_a_short_name_without_spaces(tshark):
    # Wireshark names its temporary file after the interface's display (its friendly name)
    t = tshark("-o", "extcap.ptcap.interfaces:lo", "-f", "udp port 9", duration=2)
    out, err = t.finish()
    names = re.findall(r'File: "([^"]*)"', err)
    assert len(names) == 1, err
    assert re.fullmatch(r"/tmp/wireshark_ptcap-processes[A-Z0-9]{6}\.pcapng", names[0]), names


def test_error_ends_tshark_at_once(tshark):
    started = time.monotonic()
    t = tshark("-o", "extcap.ptcap.pid:999999999", duration=60)
    out, err = t.finish(timeout=20)
    assert time.monotonic() - started < 15
    assert "ptcap: --pid 999999999: no such process" in err


def test_saved_file_filters_offline_by_comm(tshark, tmp_path):
    port = next(PORTS)
    saved = tmp_path / "saved.pcapng"
    server = subprocess.Popen([PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        _wait_port(port)
        t = tshark("-o", "extcap.ptcap.interfaces:lo", "-f", f"tcp port {port}", "-w", str(saved))
        t.wait_listening()
        curl = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"], timeout=10)
        assert curl.returncode == 0
        t.finish()
    finally:
        server.kill()
        server.wait()
    # what curl sent (ptcap.comm names both ends of a loopback packet; sender.* the one that sent it)
    rows = tshark_fields(saved, "ptcap.sender.comm", "ptcap.sender.cmd", "tcp.dstport",
                         display_filter='ptcap.sender.comm == "curl"')
    assert rows
    assert all(r[:2] == ["curl", "/usr/bin/curl"] for r in rows)
    assert any(r[2] == str(port) for r in rows)
    everything = tshark_fields(saved, "ptcap.comm")
    assert len(everything) > len(rows)          # the server's packets are the others


def _wait_port(port: int) -> None:
    import socket
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_fields_output_is_scriptable_with_processes_statistics(tshark, peers):
    port, mine, other = _two_clients(peers)
    t = tshark("-o", "extcap.ptcap.interfaces:lo", "-f", f"tcp port {port}", "-T", "fields",
               "-e", "ptcap.pid", "-e", "ptcap.comm", "-e", "ip.src", "-e", "ip.dst",
               "-z", "ptcap,procs")
    t.wait_listening()
    mine.say("send 1000")
    other.say("send 1000")
    out, err = t.finish()
    rows = [r for r in _lines(out) if len(r) == 4 and r[2] == "127.0.0.1"]
    pids = {pid for r in rows for pid in r[0].split(",")}       # a packet names both ends
    assert {str(mine.pid), str(other.pid)} <= pids
    assert "ptcap Processes" in out
    stat_rows = [l for l in out.splitlines() if f" ({mine.pid}) " in l]
    assert len(stat_rows) == 1
    packets = int(stat_rows[0].split()[-2])
    assert packets == sum(1 for r in rows if str(mine.pid) in r[0].split(","))


def test_dialog_names_ptcap_and_checks_any():
    from ptcap.cli import extcap as mod
    # descriptions name ptcap, in one word (Wireshark names its temporary file after them)
    assert all(re.fullmatch(r"ptcap-[a-z-]+", i.display) for i in mod.INTERFACES.values())
    arg = _config()["--interfaces"]
    assert arg["default"] == "any" and arg["values"][0]["default"] == "true"
    assert mod.HELP_URL.endswith("/extcap/help.html") and (ROOT / "extcap/help.html").exists()


def test_dialog_options_map_onto_the_cli():
    from ptcap.cli import extcap as mod
    opts = mod.build_parser().parse_args([
        "--extcap-interface", "ptcap", "--interfaces", "eth0,lo", "--backend", "cgroup-skb",
        "--snaplen", "96", "--direction", "out", "--netns", "a, /run/netns/b", "--pid", "1, 2",
        "--follow-forks", "--pname", "curl,nginx", "--uid", "1000", "--container", "web",
        "--pod", "web-0.shop"])
    argv = mod.cli_arguments(opts, "/f")
    assert argv == [
        "-w", "/f", "-i", "eth0", "-i", "lo", "--backend", "cgroup-skb", "-s", "96", "-Q", "out",
        "--netns", "a", "--netns", "/run/netns/b", "--pid", "1", "--pid", "2", "-f",
        "--pname", "curl", "--pname", "nginx", "--uid", "1000", "--container-name", "web",
        "--pod-name", "web-0.shop"]
    opts = mod.build_parser().parse_args(["--extcap-interface", "ptcap", "--container", "3f" * 32])
    assert mod.cli_arguments(opts, "/f") == ["-w", "/f", "-i", "any", "--container-id", "3f" * 32]
    # every CLI flag the mapping makes is one the CLI has
    from ptcap.cli.main import build_parser
    known = build_parser()._option_string_actions
    assert not [f for f in argv if f.startswith("-") and f not in known]


def test_drops_interface_maps_to_the_kfree_skb_hook():
    """ptcap-drops is `ptcap --hook kfree_skb`: its dialog offers what a hook capture takes
    (snap length, logging), not interfaces, direction or process selectors."""
    from ptcap.cli import extcap as mod
    assert mod.INTERFACES["ptcap-drops"].cli_flags == ("--hook", "kfree_skb")
    opts = mod.build_parser().parse_args(["--extcap-interface", "ptcap-drops", "--snaplen", "128"])
    assert mod.cli_arguments(opts, "/tmp/fifo") == ["-w", "/tmp/fifo", "--hook", "kfree_skb", "-s", "128"]
    opts = mod.build_parser().parse_args(["--extcap-interface", "ptcap-drops", "--interfaces", "lo"])
    with pytest.raises(mod.ExtcapError, match="--interfaces does not apply to ptcap-drops"):
        mod.cli_arguments(opts, "/tmp/fifo")
    res = extcap("--extcap-interface", "ptcap-drops", "--extcap-config")
    calls = [line.split("{call=")[1].split("}")[0] for line in res.stdout.splitlines() if line.startswith("arg ")]
    assert calls == ["--snaplen", "--log-level", "--log-file"]
    # its capture filter is checked as the hook compiles it: link-layer terms are allowed
    assert extcap("--extcap-interface", "ptcap-drops", "--extcap-capture-filter", "ether host 1:2:3:4:5:6").returncode == 0
    bad = extcap("--extcap-interface", "ptcap-drops", "--extcap-capture-filter", "udp portx 1")
    assert bad.returncode == 0 and "syntax error" in bad.stdout


def test_the_command_is_on_every_users_path(installed):
    """/usr/local/bin/ptcap runs the installed copy for any user: reading a file needs no
    privilege (as `tcpdump -r`), and a capture says what it lacks in one line."""
    command = Path("/usr/local/bin/ptcap")
    assert command.exists() and f"{PREFIX}/.venv/bin/python -I -m ptcap.cli" in command.read_text()
    pcap = ROOT / "tests/data/live/lo.pcap"
    if not _readable_by_all(pcap):      # a checkout under a private home: a copy others can read
        shared = Path(tempfile.mkdtemp(prefix="ptcap-user-"))
        shared.chmod(0o755)
        pcap = shared / "lo.pcap"
        pcap.write_bytes((ROOT / "tests/data/live/lo.pcap").read_bytes())
        pcap.chmod(0o644)
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env"]
    ours = run([*as_nobody, "ptcap", "-n", "-r", str(pcap)], check=False)
    theirs = run(["tcpdump", "-n", "-r", str(pcap)], check=False)
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout) and ours.stdout.count("\n") == 67, ours.stderr
    live = run([*as_nobody, "ptcap", "-i", "lo", "-c", "1"], check=False)
    assert live.returncode == 1 and live.stderr.count("\n") == 1 and "run as root" in live.stderr, live.stderr
    if pcap.parent != ROOT / "tests/data/live":
        shutil.rmtree(pcap.parent)


def _readable_by_all(path: Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in path.parents if p != Path("/")) and \
        path.stat().st_mode & 0o004

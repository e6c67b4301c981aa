"""What a user sees: tcpdump's lines with ptcap's fields where ptcpdump puts them; the merge can
never move a packet's process to another packet's lines; the decoder runs unprivileged and a
slow or dead one never stalls the capture."""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ptcap.cli.main import build_parser
from ptcap.meta.context import Part, ProcessContext
from ptcap.formats.pcapng import PacketWriter
from ptcap.pipeline.packet import Direction, Packet
from ptcap.sinks.lines import Additions
from ptcap.sinks.tcpdump import Decoder
from ptcap.sinks.tcpdump_child import PrintFlags

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402
from test_reader import pcapng_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TZ="UTC")
TS = 1_700_000_000_123_456_789
SYN = synth.ip4("10.0.0.1", "10.0.0.2", 6, synth.tcp(5555, 80, 1, 0, 0x02, options=b"\x02\x04\x05\xb4"))
CTX = ProcessContext(pid=4242, cmd="/usr/bin/curl", args="curl http://10.0.0.2/", tid=4243, tname="curl",
                     uid=1000, gid=1000, ppid=100, pcmd="/bin/bash", pargs="bash",
                     container_id="3f" * 32, container_name="web", container_image="nginx:1",
                     pod_name="web-0", pod_namespace="default", pod_uid="u-1")


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")


def _flags(*argv: str) -> PrintFlags:
    return PrintFlags.from_args(build_parser().parse_intermixed_args([*argv, "-r", "x"]))


def decode(packets, *argv: str, parts: Part = Part.ALL, live: bool = True) -> str:
    """Packets (ts, linktype, data, ifname, direction, ctx) through the real decoder."""
    flags = _flags(*argv)
    add = Additions(parts, flags.verbose, live, flags.oneline)
    out = io.BytesIO()
    d = Decoder(flags, out, lossless=True)
    for ts, linktype, data, ifname, direction, ctx in packets:
        d.put(ts, linktype, data, len(data), *add(ctx, ifname, direction))
    d.close()
    return out.getvalue().decode()


def tcpdump_lines(tmp_path: Path, linktype: int, packets: list[tuple[int, bytes]], *argv: str) -> str:
    path = tmp_path / f"oracle{len(list(tmp_path.iterdir()))}.pcap"
    synth.write_pcap(path, linktype, packets, nano=True)
    return subprocess.run(["tcpdump", "-r", str(path), *argv], capture_output=True, env=ENV).stdout.decode()


def ptcap(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptcap.cli", *args], capture_output=True, input=input,
                          env=ENV, cwd=ROOT)


def test_live_packet_with_process_prints_like_ptcpdump():
    text = decode([(TS, 101, SYN, "eth0", Direction.OUT, CTX)], "-n")
    assert text == ("22:13:20.123456 eth0 curl.4242 Out IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S], seq 1, win 64240, "
                    "options [mss 1460], length 0, ParentProc [bash.100], Container [web], Pod [web-0.default]\n")


def test_verbose_context_blocks_follow_the_packets_lines(tmp_path):
    text = decode([(TS, 101, SYN, "eth0", Direction.IN, CTX)], "-n", "-v", "-X")
    oracle = tcpdump_lines(tmp_path, 101, [(TS, SYN)], "-n", "-v", "-X")
    head = oracle.split(" ", 1)
    assert text == head[0] + " eth0 In " + head[1] + "".join(f"    {b}\n" for b in [
        "Process (pid 4242, cmd /usr/bin/curl, args curl http://10.0.0.2/)",
        "Thread (tid 4243, name curl)",
        "User (uid 1000)",
        "ParentProc (pid 100, cmd /bin/bash, args bash)",
        f"Container (name web, id {'3f' * 32}, image nginx:1, labels {{}})",
        "Pod (name web-0, namespace default, UID u-1, labels {}, annotations {})"])


BLOCKS = ["Process (pid 4242, cmd /usr/bin/curl, args curl http://10.0.0.2/)", "Thread (tid 4243, name curl)",
          "User (uid 1000)", "ParentProc (pid 100, cmd /bin/bash, args bash)",
          f"Container (name web, id {'3f' * 32}, image nginx:1, labels {{}})",
          "Pod (name web-0, namespace default, UID u-1, labels {}, annotations {})"]


@pytest.mark.parametrize("argv", [["-v"], [], ["-v", "-X"]])
def test_oneline_puts_the_packet_and_its_blocks_on_one_line(tmp_path, argv):
    """ptcpdump's --oneline (its docker, containerd and k8s e2e tests grep `Flags .*, args wget
    ... CONTAINER_ID` and `Process (...).* Container (...).* Pod (...)` in one line, with and
    without -v): tcpdump's lines and the -v blocks, stripped, joined by ', '; hex dumps after."""
    text = decode([(TS, 101, SYN, "eth0", Direction.IN, CTX)], "-n", "--oneline", *argv)
    oracle = tcpdump_lines(tmp_path, 101, [(TS, SYN)], "-n", *argv).splitlines()
    dump = [line for line in oracle if line.startswith("\t0x")]
    head = ", ".join(line.strip() for line in oracle if line not in dump).split(" ", 1)
    assert text == "\n".join([head[0] + " eth0 In " + head[1] + ", " + ", ".join(BLOCKS)] + dump) + "\n"
    bare = decode([(TS, 101, SYN, "eth0", Direction.IN, None)], "-n", "--oneline", *argv)
    assert bare == "\n".join([head[0] + " eth0 In " + head[1]] + dump) + "\n"


def test_context_selection():
    text = decode([(TS, 101, SYN, "eth0", Direction.OUT, CTX)], "-n", parts=Part.parse("process,pod"))
    assert " eth0 curl.4242 Out IP " in text and text.endswith(", Pod [web-0.default]\n")
    assert "ParentProc" not in text and "Container" not in text
    verbose = decode([(TS, 101, SYN, "eth0", Direction.OUT, CTX)], "-v", parts=Part.parse("thread,user"))
    assert "    Thread (tid 4243, name curl)\n" in verbose and "User (uid 1000)" in verbose
    assert "Process (" not in verbose


@pytest.mark.parametrize("argv", [[], ["-t"], ["-tt"], ["-ttt"], ["-tttt"], ["-ttttt"], ["-tttt", "--nano"], ["-#", "-e"]])
def test_fields_go_after_the_time_stamp_in_every_format(tmp_path, argv):
    pkts = [(TS + i * 1_000_000_007, synth.eth(SYN)) for i in range(3)]
    oracle = tcpdump_lines(tmp_path, 1, pkts, "-n", *[a for a in argv if a != "-#"]).splitlines(True)
    text = decode([(ts, 1, d, "lo", Direction.IN, None) for ts, d in pkts], "-n", *argv)
    want = []
    for i, line in enumerate(oracle):
        stamp = re.match(r"( ?\S+ \S+ )" if "-tttt" in argv else (r"" if "-t" in argv else r"( ?\S+ )"), line)
        cut = stamp.end() if stamp else 0
        number = f"{i + 1:5d}  " if "-#" in argv else ""
        want.append(number + line[:cut] + "lo In " + line[cut:])
    assert text == "".join(want)


def test_file_packets_without_process_are_tcpdumps_lines(tmp_path):
    pkts = [(TS, synth.eth(SYN))]
    assert decode([(TS, 1, synth.eth(SYN), "eth0", Direction.OUT, None)], "-n", live=False) == \
        tcpdump_lines(tmp_path, 1, pkts, "-n")


def test_reading_ptcaps_file_prints_every_packet_as_it_was_printed_live(tmp_path):
    """ptcpdump's e2e tests diff the live `-v --print` lines with `-v -r` of the file: a packet
    with no process (an ICMP reply, an ARP request) keeps its interface and direction too."""
    path = tmp_path / "ours.pcapng"
    packets = [(TS, synth.eth(SYN), CTX), (TS + 1000, synth.eth(SYN), None)]
    _write_pcapng(path, packets)
    for argv in (["-n"], ["-n", "-v"], ["-n", "--oneline"], ["-n", "-v", "--oneline"]):
        res = ptcap(*argv, "-r", str(path))
        assert res.returncode == 0, res.stderr
        live = decode([(ts, 1, data, "eth0", Direction.OUT, ctx) for ts, data, ctx in packets], *argv)
        assert res.stdout.decode() == live, argv
    # a file of ptcap's without any process (tcpdump's corpus as pcapng), and a file of
    # another writer: their packets without process are tcpdump's lines
    bare = tmp_path / "bare.pcapng"
    _write_pcapng(bare, [(TS, synth.eth(SYN), None)])
    assert ptcap("-n", "-r", str(bare)).stdout.decode() == tcpdump_lines(tmp_path, 1, [(TS, synth.eth(SYN))], "-n")
    other = tmp_path / "other.pcapng"
    other.write_bytes(pcapng_bytes(name="eth0", packets=[(TS // 1000, synth.eth(SYN), 2, ["PID: 7\nCmd: /x\nArgs: x"]),
                                                         (TS // 1000 + 1, synth.eth(SYN), 2, [])]))
    second = ptcap("-n", "-r", str(other)).stdout.decode().splitlines()[1]
    assert second == tcpdump_lines(tmp_path, 1, [(TS // 1000 * 1000 + 1000, synth.eth(SYN))], "-n").strip()


def test_reading_a_ptcpdump_pcapng_shows_the_context(tmp_path):
    comments = ["PID: 77\nCmd: /usr/bin/wget\nArgs: wget kernel.org",
                "ParentPID: 1\nParentCmd: /sbin/init\nParentArgs: init"]
    path = tmp_path / "ptcpdump.pcapng"
    path.write_bytes(pcapng_bytes(tsresol=9, name="eth0", packets=[(TS, synth.eth(SYN), 2, comments)]))
    res = ptcap("-n", "-r", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode() == ("22:13:20.123456 eth0 wget.77 Out IP 10.0.0.1.5555 > 10.0.0.2.80: Flags [S], "
                                   "seq 1, win 64240, options [mss 1460], length 0, ParentProc [init.1]\n")
    assert res.stderr.decode().splitlines()[0] == \
        f"reading from file {path}, link-type EN10MB (Ethernet), snapshot length 262144"
    plain = ptcap("-n", "-r", str(path), "--context=")
    want = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True, env=ENV).stdout
    assert plain.stdout == want


def test_bad_filter_and_bad_flags_are_tcpdump_style_errors(tmp_path):
    src = synth.build_all(tmp_path / "synth")[0]
    res = ptcap("-r", str(src), "tcp", "port")
    assert res.returncode == 1
    assert res.stderr.decode().splitlines()[-1] == "ptcap: can't parse filter expression: syntax error"
    res = ptcap("-r", str(src), "-T", "nosuchtype")
    assert res.returncode == 1 and res.stderr.decode().splitlines()[-1] == "ptcap: unknown packet type `nosuchtype'"


# ---- the merge cannot be fooled ----------------------------------------------------------------

def _forgeries(n: int) -> bytes:
    """A payload that prints (with -A) what the next packets' lines would look like: time stamps
    a microsecond on, numbers, interfaces and processes, and tcpdump's own protocol text."""
    lines = []
    for i in range(1, 6):
        t = f"22:13:20.{123456 + i:06d}"
        lines += [f"{t} IP 10.0.0.2.80 > 10.0.0.1.5555: Flags [P.], seq 1:5, ack 1, win 512, length 4",
                  f"{n + i:5d}  {t} eth0 evil.666 In IP 10.0.0.9.1 > 10.0.0.1.2: UDP, length 1, ParentProc [x.1]",
                  f"{t} eth0 Out 02:00:00:00:00:01 (oui Unknown) > 02:00:00:00:00:02 (oui Unknown), "
                  "ethertype Unknown (0x88b5), length 14: ",
                  "    Process (pid 666, cmd /evil, args evil)"]
    return ("\n".join(lines) + "\n").encode()


def _write_pcapng(path: Path, packets) -> None:
    """(ts, data, ctx) as ptcap writes them: interface eth0, outbound, a process each."""
    with open(path, "wb") as out:
        writer = PacketWriter(out, False, 1)
        for ts, data, ctx in packets:
            writer.write(Packet(ts, data, len(data), 1, "eth0", Direction.OUT, ctx))
        writer.flush()


@pytest.mark.parametrize("via", ["decoder", "file"])
@pytest.mark.parametrize("argv", [["-A"], ["-AA", "-#"], ["-t", "-A"], ["-v", "-A"], ["-e", "-A"], ["-X"]])
def test_payloads_that_forge_lines_never_move_a_process(tmp_path, argv, via):
    pkts = []
    for i in range(6):
        payload = _forgeries(i) * (1 + i % 3)
        pkts.append((TS + i * 1000, synth.eth(synth.ip4("10.0.0.1", "10.0.0.2", 6,
                                                        synth.tcp(5555, 80, 1 + i, 1, 0x18, payload)))))
    ctxs = [ProcessContext(pid=1000 + i, cmd=f"/bin/p{i}", args=f"p{i}", ppid=1, pcmd="/sbin/init")
            for i in range(6)]
    argv = ["-S", *argv]      # absolute sequence numbers: each packet alone prints as in the run
    if via == "decoder":
        text = decode([(ts, 1, d, "eth0", Direction.OUT, ctxs[i]) for i, (ts, d) in enumerate(pkts)], "-n", *argv)
    else:                     # ptcap -r of its own pcapng: tcpdump reads the file's blocks
        path = tmp_path / "forged.pcapng"
        _write_pcapng(path, [(ts, d, ctxs[i]) for i, (ts, d) in enumerate(pkts)])
        res = ptcap("-n", *argv, "-r", str(path))
        assert res.returncode == 0, res.stderr
        text = res.stdout.decode()
    # the oracle: tcpdump on each packet alone, ptcap's fields put where they belong
    want = []
    for i, (ts, data) in enumerate(pkts):
        alone = tcpdump_lines(tmp_path, 1, [(ts, data)], "-n", *[a for a in argv if a != "-#"])
        first, rest = alone.split("\n", 1)
        if "-t" in argv:
            head, tail = "", first
        else:
            head, tail = first.split(" ", 1)
            head += " "
        if "-v" in argv:
            blocks = f"    Process (pid {1000 + i}, cmd /bin/p{i}, args p{i})\n    ParentProc (pid 1, cmd /sbin/init, args )\n"
            want.append(f"{head}eth0 Out {tail}\n{rest}{blocks}")
        else:
            number = f"{i + 1:5d}  " if "-#" in argv else ""
            want.append(f"{number}{head}eth0 p{i}.{1000 + i} Out {tail}, ParentProc [init.1]\n{rest}")
    assert text == "".join(want)
    if "-X" not in argv:    # every forged line was printed, as payload of its own packet
        assert text.count("evil.666") == sum(1 + i % 3 for i in range(6)) * 5


@pytest.mark.parametrize("argv", [["-n"], ["-n", "-v"], ["-n", "-#", "-ttt"], ["-n", "-A"]])
def test_a_long_pcapng_with_processes_prints_as_tcpdump_with_the_fields(tmp_path, argv):
    """More packets than a group (and than the 5-digit -# numbers), processes changing: every
    packet's lines are tcpdump's, with its own process."""
    n = 1500
    ctxs = [ProcessContext(pid=2000 + i, cmd=f"/bin/q{i}", args=f"q{i}", ppid=1, pcmd="/sbin/init")
            for i in range(3)]
    pkts = []
    for i in range(n):
        payload = b"x" * (i % 7) if i % 5 else b""
        seg = synth.tcp(6000 + i % 3, 80, 1 + i, 1, 0x18 if payload else 0x10, payload)
        pkts.append((TS + i * 1_000_003, synth.eth(synth.ip4("10.0.0.1", "10.0.0.2", 6, seg)), ctxs[(i // 7) % 3]))
    path = tmp_path / "long.pcapng"
    _write_pcapng(path, pkts)
    res = ptcap(*argv, "-r", str(path))
    assert res.returncode == 0, res.stderr
    # the oracle: tcpdump reading the same file (it ignores the comments), cut at its -# numbers
    plain = [a for a in argv if a != "-#"]
    oracle = subprocess.run(["tcpdump", "-#", *plain, "-r", str(path)], capture_output=True, env=ENV).stdout.decode()
    texts = re.split(r"(?m)^ *\d+  ", oracle)[1:]
    assert len(texts) == n
    want = []
    for i, text in enumerate(texts):
        ctx = ctxs[(i // 7) % 3]
        stamp = re.match(r" *\S+ ", text)      # -ttt's delta starts with a space
        head, tail = text[:stamp.end() - 1], text[stamp.end():]
        first, rest = tail.split("\n", 1)
        number = f"{i + 1:5d}  " if "-#" in argv else ""
        if "-v" in argv:
            blocks = f"    Process (pid {ctx.pid}, cmd {ctx.cmd}, args {ctx.args})\n" \
                     "    ParentProc (pid 1, cmd /sbin/init, args )\n"
            want.append(f"{number}{head} eth0 Out {first}\n{rest}{blocks}")
        else:
            want.append(f"{number}{head} eth0 q{ctx.pid - 2000}.{ctx.pid} Out {first}, ParentProc [init.1]\n{rest}")
    got = res.stdout.decode()
    assert got == "".join(want)


def test_a_pcapng_whose_second_interface_has_another_link_type(tmp_path):
    """One tcpdump reads one link type: at the Ethernet file's raw-IP interface ptcap goes on
    packet by packet, and prints what it prints reading the file from a pipe (-ttt deltas on)."""
    from test_reader import _block, _opt

    def epb(ifid: int, ticks: int, data: bytes) -> bytes:
        body = struct.pack("<IIIII", ifid, 0, ticks, len(data), len(data)) + data + b"\0" * (-len(data) % 4)
        opts = _opt("<", 1, f"PID: {70 + ifid}\nCmd: /bin/w{ifid}\nArgs: w".encode())
        return _block("<", 6, body + opts + _opt("<", 2, struct.pack("<I", 2)) + _opt("<", 0, b""))
    raw = _block("<", 1, struct.pack("<HHI", 101, 0, 262144) + _opt("<", 2, b"tun0") + _opt("<", 0, b""))
    data = pcapng_bytes(packets=[(1000 + i, synth.eth(SYN), 2, ["PID: 70\nCmd: /bin/w0\nArgs: w"])
                                 for i in range(3)])
    data += raw + b"".join(epb(i % 2, 2000 + 3 * i, SYN if i % 2 else synth.eth(SYN)) for i in range(4))
    path = tmp_path / "two-links.pcapng"
    path.write_bytes(data)
    from_file = ptcap("-n", "-ttt", "-r", str(path))
    from_pipe = ptcap("-n", "-ttt", "-r", "-", input=data)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_pipe.stdout
    lines = from_file.stdout.decode().splitlines()
    assert [line.split()[1:3] for line in lines] == [["eth0", "w0.70"]] * 4 + [["tun0", "w1.71"], ["eth0", "w0.70"],
                                                                              ["tun0", "w1.71"]]
    assert lines[3].startswith(" 00:00:00.000998 ")       # 2000 after 1002 microseconds


def test_a_pcapng_of_two_sections_names_each_sections_interface(tmp_path):
    comments = ["PID: 77\nCmd: /usr/bin/wget\nArgs: wget x"]
    data = pcapng_bytes(name="eth0", packets=[(1000, synth.eth(SYN), 2, comments)]) + \
        pcapng_bytes(name="wlan9", packets=[(2000, synth.eth(SYN), 1, comments)])
    path = tmp_path / "two-sections.pcapng"
    path.write_bytes(data)
    res = ptcap("-n", "-r", str(path))
    assert res.returncode == 0, res.stderr
    assert [line.split()[1:4] for line in res.stdout.decode().splitlines()] == \
        [["eth0", "wget.77", "Out"], ["wlan9", "wget.77", "In"]]
    assert res.stdout == ptcap("-n", "-r", "-", input=data).stdout


@pytest.mark.parametrize("kind", ["pcapng with processes", "classic pcap"])
def test_a_file_that_is_a_pipe_is_read_as_a_file_is(tmp_path, kind):
    """-r FIFO (or `<(...)`): read once from the start, never sought (it was 'Illegal seek')."""
    comments = ["PID: 77\nCmd: /usr/bin/wget\nArgs: wget x"]
    if kind == "classic pcap":
        path = tmp_path / "plain.pcap"
        synth.write_pcap(path, 1, [(TS + i, synth.eth(SYN)) for i in range(3)], nano=True)
        data = path.read_bytes()
    else:
        data = pcapng_bytes(packets=[(1000 + i, synth.eth(SYN), 2, comments) for i in range(3)])
    regular = tmp_path / "regular"
    regular.write_bytes(data)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as w:
            w.write(data)
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    res = ptcap("-n", "-r", str(fifo))
    writer.join(10)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ptcap("-n", "-r", str(regular)).stdout
    assert len(res.stdout.splitlines()) == 3


def test_the_marker_secret_changes_every_run():
    from ptcap.sinks.markers import make_marker
    assert make_marker(1, True) != make_marker(1, True)
    assert make_marker(101, True)[1] != make_marker(101, True)[1]


# ---- unprivileged, never stalls ----------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)


def _wait_child(pid: int, timeout: float = 10) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in _children(pid):
            try:
                if open(f"/proc/{c}/comm").read().strip() == "tcpdump":
                    return c
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("no tcpdump child")


def _assert_unprivileged(child: int, user: str) -> None:
    import pwd
    pw = pwd.getpwnam(user)
    st = _status(child)
    assert st["Uid"].split() == [str(pw.pw_uid)] * 4
    assert st["Gid"].split() == [str(pw.pw_gid)] * 4
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[cap].strip(), 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"].strip() == "1"
    assert os.readlink(f"/proc/{child}/cwd") == "/"


@pytest.mark.root      # drops privileges from root, or captures live
def test_the_decoder_of_a_file_runs_unprivileged():
    """-r: tcpdump reads from a descriptor ptcap opened, as user tcpdump, no capabilities."""
    proc = subprocess.Popen([sys.executable, "-m", "ptcap.cli", "-r", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    try:
        proc.stdin.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        proc.stdin.flush()
        _assert_unprivileged(_wait_child(proc.pid), "tcpdump")
    finally:
        proc.stdin.close()
        proc.stdin = None
        proc.communicate(timeout=20)
    assert proc.returncode == 0


@pytest.mark.root      # drops privileges from root, or captures live
@pytest.mark.parametrize("user,runs_as", [("nobody", "nobody"), ("root", "tcpdump")])
def test_minus_Z_chooses_the_user_and_never_root(user, runs_as):
    """-Z USER: the decoder runs as USER; -Z root, tcpdump's way of keeping root (scripts
    write `tcpdump -Z root -w /root/x`), is taken, and the decoder still runs unprivileged."""
    res = ptcap("-r", "-", "-Z", "nosuchuser", input=b"")
    assert res.returncode == 1 and res.stderr.decode() == "ptcap: Couldn't find user 'nosuchuser'\n"
    proc = subprocess.Popen([sys.executable, "-m", "ptcap.cli", "-r", "-", "-Z", user], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    try:
        proc.stdin.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        proc.stdin.flush()
        _assert_unprivileged(_wait_child(proc.pid), runs_as)
    finally:
        proc.stdin.close()
        proc.stdin = None
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def _udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _send(port: int, n: int, payload: bytes = b"x") -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(n):
        s.sendto(payload, ("127.0.0.1", port))
    s.close()


def _wait_for(predicate, timeout: float = 15, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.root      # drops privileges from root, or captures live
def test_live_decoder_unprivileged_killed_restarted_and_the_gap_said(capture, tmp_path):
    port = _udp_port()
    out_path = tmp_path / "lines.txt"
    with open(out_path, "wb") as out:
        cap = capture("-i", "lo", "-n", "-l", "-Q", "in", f"udp dst port {port}", stdout=out)
        _send(port, 3, b"before")
        _wait_for(lambda: out_path.read_text().count(f".{port}: UDP") >= 3, what="first lines")
        child = _wait_child(cap.proc.pid)
        _assert_unprivileged(child, "tcpdump")
        os.kill(child, signal.SIGKILL)
        _wait_for(lambda: "was restarted" in out_path.read_text(), what="the restart note")
        _send(port, 3, b"after")
        _wait_for(lambda: out_path.read_text().count(f".{port}: UDP") >= 6, what="lines after the restart")
        assert _wait_child(cap.proc.pid) != child
        _out, err = cap.stop()
    text = out_path.read_text()
    assert re.search(r"^ptcap: tcpdump \(the decoder\) exited \(signal 9\) and was restarted; \d+ packets? not printed$",
                     text, re.M), text
    assert "6 packets captured" in err


@pytest.mark.root      # captures live
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_ends_the_capture_cleanly(tmp_path, sig):
    """Ctrl-C at a terminal, or `timeout 30s ptcap ...` (ptcpdump's e2e tests), signal ptcap's
    whole process group: the decoders must not get it (tcpdump said 'pcap_loop: error reading
    dump file: Interrupted system call' and ptcap printed a restart note in the lines)."""
    port = _udp_port()
    proc = subprocess.Popen([sys.executable, "-m", "ptcap.cli", "-i", "lo", "-n", "-l", f"udp dst port {port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV,
                            start_new_session=True)
    try:
        while b"listening on" not in proc.stderr.readline():
            assert proc.poll() is None, proc.stderr.read()
        _send(port, 5, b"hi")
        lines = [proc.stdout.readline() for _ in range(5)]
        assert all(f".{port}: UDP".encode() in line for line in lines), lines
        _wait_child(proc.pid)
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out == b"", (out, err)
    assert [ln for ln in err.decode().splitlines() if "packet" not in ln] == [], err


@pytest.mark.root      # drops privileges from root, or captures live
def test_a_stopped_decoder_never_stalls_the_capture(capture, tmp_path):
    """tcpdump frozen (SIGSTOP): -w keeps writing every captured packet and the count goes on;
    the packets it could not print are counted and said when it runs again."""
    port = _udp_port()
    pcap = tmp_path / "all.pcapng"
    lines = tmp_path / "lines.txt"
    n = 20000
    in_file = lambda: subprocess.run(["tcpdump", "-r", str(pcap)], capture_output=True).stdout.count(b"\n")  # noqa: E731
    with open(lines, "wb") as out:
        cap = capture("-i", "lo", "-n", "-Q", "in", "-w", str(pcap), "--print", "-B", "65536",
                      f"udp dst port {port}", stdout=out)
        _send(port, 1)                  # the decoder starts with the first packet
        child = _wait_child(cap.proc.pid)
        os.kill(child, signal.SIGSTOP)
        try:
            _send(port, n, b"y" * 1000)      # more than the decoder's backlog holds
            seen = [-1, time.monotonic()]

            def settled() -> bool:        # the file has the flood (or stopped growing for 3 s)
                now = in_file()
                if now != seen[0]:
                    seen[0], seen[1] = now, time.monotonic()
                return now >= n + 1 or time.monotonic() - seen[1] > 3
            _wait_for(settled, timeout=90, what="the file to hold the flood")
            while_stopped = seen[0]
        finally:
            os.kill(child, signal.SIGCONT)
        _out, err = cap.stop()
    captured = int(re.search(r"^(\d+) packets captured$", err, re.M).group(1))
    assert while_stopped == captured == in_file() and captured > n // 2, err
    text = lines.read_text()
    printed = text.count(f".{port}: UDP")
    notes = re.findall(r"^ptcap: (\d+) packets? not printed: tcpdump fell behind$", text, re.M)
    assert notes, (captured, printed)
    assert printed + sum(map(int, notes)) == captured


@pytest.mark.root      # captures live
def test_lines_come_out_while_the_capture_is_idle(capture, tmp_path):
    """Printing to a file (no -l): once the traffic stops, every packet's line is there while
    the capture still runs, not only when it exits (tcpdump's output buffer is pushed out)."""
    port = _udp_port()
    lines = tmp_path / "lines.txt"
    n = 700                             # a group of 512 and the start of the next
    with open(lines, "wb") as out:
        cap = capture("-i", "lo", "-n", "-Q", "in", f"udp dst port {port}", stdout=out)
        _send(port, n)
        _wait_for(lambda: lines.read_text().count(f".{port}: UDP") == n, timeout=10,
                  what=f"{n} lines before the capture stops")
        cap.stop()
    assert lines.read_text().count(f".{port}: UDP") == n

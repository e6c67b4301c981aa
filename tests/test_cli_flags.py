"""A tcpdump user trying ptcap as a drop-in: the same command line gets tcpdump's answer,
its words for bad flags, its exit code. tcpdump itself is the oracle, on the same files."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, Capture, free_port, ptcap_argv, run, wait_for

TCPDUMP = shutil.which("tcpdump")
PCAP = str(ROOT / "tests/data/live/lo.pcap")

pytestmark = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is the oracle")


def both(*args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    ours = subprocess.run(ptcap_argv(*args), capture_output=True, text=True, timeout=60)
    theirs = subprocess.run([TCPDUMP, *args], capture_output=True, text=True, timeout=60)
    return ours, theirs


BAD = [("-c", "abc"), ("-c", "0"), ("-c", "-3"), ("-c", "0x2"), ("-s", "abc"), ("-s", "99999999"),
       ("-B", "abc"), ("-B", "0"), ("-W", "abc"), ("-W", "0"), ("-C", "abc"), ("-C", "0"),
       ("-G", "-1"), ("-Q", "sideways"), ("-g",), ("-ng",), ("--bogus",), ("--bogus=3",),
       ("--print=3",), ("-c",), ("-y",)]


@pytest.mark.parametrize("bad", BAD, ids=" ".join)
def test_bad_flags_get_tcpdumps_first_line_and_exit_1(bad):
    ours, theirs = both("-r", PCAP, *bad)
    assert theirs.returncode == 1
    first = re.sub(r"^(\S*/)?tcpdump: ", "", theirs.stderr.splitlines()[0])     # getopt names argv[0]
    assert (ours.returncode, ours.stderr) == (1, f"ptcap: {first}\n")
    assert ours.stdout == ""


@pytest.mark.parametrize("good", [("-s", "0x40"), ("-G", "abc"), ("-c", "010")], ids=" ".join)
def test_numbers_tcpdump_takes_are_taken(good):
    ours, theirs = both("-n", "-r", PCAP, *good)
    assert theirs.returncode == 0
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)


def _udp_pcap(path) -> str:
    """A classic pcap of one UDP datagram (other flows than lo.pcap's: tcpdump -V keeps its
    TCP sequence state from file to file, ptcap's children start afresh)."""
    ip = bytes.fromhex("4500001d000100004011f9c80a0000010a000002") + bytes.fromhex("3039d431000931a978")
    frame = bytes(12) + b"\x08\x00" + ip
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                     + struct.pack("<IIII", 1700000000, 5, len(frame), len(frame)) + frame)
    return str(path)


@pytest.fixture
def shared_dir():
    """A directory tcpdump can read after dropping to its user (it opens -V's later files so)."""
    d = Path(tempfile.mkdtemp(prefix="ptcap-V-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_file_list_reads_each_file_as_tcpdump(shared_dir):
    tmp_path = shared_dir
    other = _udp_pcap(tmp_path / "udp.pcap")
    os.chmod(other, 0o644)
    listed = tmp_path / "files"
    listed.write_text(f"{PCAP}\n{other}\n")
    ours, theirs = both("-n", "-V", str(listed))
    assert theirs.returncode == 0 and theirs.stderr.count("reading from file") == 2
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)
    listed.write_text(f"{PCAP}\n\n{other}\n")           # an empty name ends it, as in tcpdump
    ours, theirs = both("-n", "-V", str(listed))
    assert theirs.returncode == 1
    assert (ours.returncode, ours.stdout) == (1, theirs.stdout)
    assert ours.stderr.splitlines()[-1] == theirs.stderr.splitlines()[-1].replace("tcpdump: ", "ptcap: ")
    for bad in (("-V", str(tmp_path / "none")), ("-V", str(listed), "-r", PCAP)):
        ours, theirs = both(*bad)
        assert (ours.returncode, ours.stderr) == (1, theirs.stderr.replace("tcpdump: ", "ptcap: "))


@pytest.mark.parametrize("flags", [("-y", "EN10MB"), ("-y", "en10mb"), ("-y", "NOSUCH"), ("-j", "host"),
                                   ("-j", "bogus"), ("--immediate-mode",), ("-O",)], ids=" ".join)
def test_capture_flags_tcpdump_takes_with_r(flags):
    ours, theirs = both("-n", "-r", PCAP, *flags, "udp")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    assert ours.stderr == theirs.stderr.replace("tcpdump: ", "ptcap: ")


@pytest.mark.parametrize("expression", ["tcp port 80", "ip and udp or arp"])
def test_unoptimized_filter_dump_is_tcpdumps(expression):
    ours, theirs = both("-O", "-d", expression)
    assert theirs.returncode == 0
    assert (ours.returncode, ours.stdout) == (0, theirs.stdout)
    assert ours.stdout != both("-d", expression)[1].stdout


def test_link_and_time_stamp_type_lists_for_lo():
    for flag in ("-L", "-J"):
        ours, theirs = both(flag, "-i", "lo")
        assert theirs.returncode == 0
        assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)


def test_link_types_of_the_cgroup_skb_backend_are_raw_ip():
    res = subprocess.run(ptcap_argv("-L", "-i", "lo", "--backend", "cgroup-skb"), capture_output=True,
                         text=True, timeout=30)
    assert (res.returncode, res.stderr) == (0, "Data link types for lo (use option -y to set):\n  RAW (Raw IP)\n")


@pytest.mark.root
def test_a_link_type_the_interface_lacks_is_refused():
    ours, theirs = both("-i", "lo", "-c", "1", "-y", "LINUX_SLL")
    assert theirs.returncode == 1
    assert (ours.returncode, ours.stderr) == (1, theirs.stderr.replace("tcpdump: ", "ptcap: "))


def _live_stderr(argv: list[str], port: int) -> list[str]:
    """stderr of a live capture of one datagram to `port` on lo, once it listened."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    while not lines or "listening on" not in lines[-1]:
        line = proc.stderr.readline()
        assert line, f"{argv[0]} ended before listening: {lines}"
        lines.append(line)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while proc.poll() is None:          # until it has one (a datagram before the ring is read may wait)
        sock.sendto(b"x", ("127.0.0.1", port))
        try:
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    sock.close()
    return lines + proc.stderr.read().splitlines(keepends=True)


@pytest.mark.root
@pytest.mark.parametrize("flags", [("-w", "/dev/null"), ("-v",), ()], ids=" ".join)
def test_live_announcement_words_as_tcpdump(flags):
    """With -v or -w, tcpdump says 'tcpdump: listening on ...' (its name where the
    'verbose output suppressed' line would be)."""
    port = free_port()
    argv = ["-i", "lo", "-c", "1", *flags, f"udp dst port {port}"]
    theirs = _live_stderr([TCPDUMP, *argv], port)
    ours = _live_stderr(ptcap_argv(*argv), port)
    theirs = [line.replace("tcpdump: ", "ptcap: ") for line in theirs]
    assert ours[0] == theirs[0] and ours[-3] == theirs[-3] == "1 packet captured\n"
    assert ours[-1] == theirs[-1] == "0 packets dropped by kernel\n"


@pytest.mark.parametrize("flags", [("-d", "udp"), ("-dd", "tcp port 80"), ("-ddd",), ("-O", "-d", "ip")],
                         ids=" ".join)
def test_filter_dump_with_r_is_for_the_file(flags, tmp_path):
    """-d -r FILE: the program for the file's link type and snapshot length (lo.pcap's is 256),
    not the file's packets."""
    ours, theirs = both("-r", PCAP, *flags)
    assert theirs.returncode == 0 and theirs.stdout.startswith(("(000)", "{", "1", "2", "3"))
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)


@pytest.mark.root
@pytest.mark.parametrize("pattern", ["x.pcapng", "t-%s.pcapng"])
def test_time_rotation_with_w_names_files_as_tcpdump(pattern, tmp_path):
    """-G with -W and no -C: tcpdump names each file by the pattern alone (no file number)
    and ends after W files, saying so."""
    port = str(free_port())
    proc = subprocess.run(ptcap_argv("-i", "lo", "-G", "1", "-W", "2", "-w", str(tmp_path / pattern),
                                     f"udp port {port}"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    files = sorted(os.listdir(tmp_path))
    if "%" in pattern:
        assert len(files) == 2 and all(re.fullmatch(r"t-\d+\.pcapng", f) for f in files), files
    else:
        assert files == ["x.pcapng"]
    assert "Maximum file limit reached: 2\n0 packets captured\n" in proc.stderr


@pytest.mark.root
@pytest.mark.parametrize("flags", [("-W", "3"), ("-G", "0")], ids=" ".join)
def test_file_count_without_rotation_is_ignored_as_by_tcpdump(flags, tmp_path):
    """-W without -C or -G, and -G 0: one file, named as given."""
    port = free_port()
    argv = ["-i", "lo", "-c", "1", *flags, "-w", str(tmp_path / "one.pcap"), f"udp dst port {port}"]
    err = _live_stderr(ptcap_argv(*argv), port)
    assert err[-3] == "1 packet captured\n", err
    assert os.listdir(tmp_path) == ["one.pcap"]


def _numbered(text: str) -> dict[str, str]:
    return dict(line.split(".", 1) for line in text.splitlines())


@pytest.mark.root
def test_the_list_of_interfaces_is_tcpdumps(veth):
    """-D: tcpdump's list, numbers, words and flags, where ptcap can capture: its pseudo
    devices (netfilter queues, D-Bus, Bluetooth) are no network interfaces and come last."""
    ptcap = run(["ip", "netns", "exec", veth.ns, *ptcap_argv("-D")]).stdout
    tcpdump = run(["ip", "netns", "exec", veth.ns, "tcpdump", "-D"]).stdout
    assert ptcap.splitlines()[:3] == [f"1.{veth.peer_if} [Up, Running, Connected]",
                                      "2.any (Pseudo-device that captures on all interfaces) [Up, Running]",
                                      "3.lo [Up, Running, Loopback]"]
    assert tcpdump.startswith(ptcap)
    netdevs = run(["ip", "netns", "exec", veth.ns, "ls", "/sys/class/net"]).stdout.split()
    assert sorted(netdevs) == sorted([veth.peer_if, "lo"])
    assert all(text.split()[0] not in netdevs for text in _numbered(tcpdump[len(ptcap):]).values())


@pytest.mark.root
def test_interface_by_its_number_in_the_list(veth):
    """-i N: the N-th interface -D lists, as tcpdump takes it; one past the list is refused."""
    listed = subprocess.run(["ip", "netns", "exec", veth.ns, *ptcap_argv("-D")], capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    numbers = {n: text.split()[0] for n, text in _numbered(listed.stdout).items()}
    n = next(k for k, name in numbers.items() if name not in ("lo", "any"))
    proc = subprocess.Popen(["ip", "netns", "exec", veth.ns, *ptcap_argv("-i", n, "-c", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = ""
    while "listening on" not in line:
        line = proc.stderr.readline()
        assert line, "ptcap ended before listening"
    proc.terminate()
    proc.wait(timeout=30)
    assert line == f"listening on {numbers[n]}, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
    res = subprocess.run(["ip", "netns", "exec", veth.ns, *ptcap_argv("-i", str(len(numbers) + 1), "-c", "1")],
                         capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (1, "ptcap: Invalid adapter index\n")


def test_list_of_namespaces_to_come_is_one_line():
    res = subprocess.run(ptcap_argv("-D", "--netns", "newly"), capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stderr) == (1, "ptcap: -D lists the interfaces there are: "
                                               "--netns newly names none yet\n")


def test_a_directory_or_an_empty_list_in_tcpdumps_words(tmp_path):
    (tmp_path / "empty").write_text("")
    for argv in (("-r", str(tmp_path)), ("-r", str(tmp_path), "-w", str(tmp_path / "o.pcap")),
                 ("-V", str(tmp_path)), ("-V", str(tmp_path / "empty"))):
        ours, theirs = both(*argv)
        assert theirs.returncode == 1
        assert (ours.returncode, ours.stderr) == (1, theirs.stderr.replace("tcpdump: ", "ptcap: ")), argv


@pytest.mark.root
def test_inside_ip_netns_exec_a_new_sockets_first_packet_names_its_process(veth):
    """`ip netns exec NS ptcap`, as tcpdump users run it: that mounts a fresh /sys, without
    cgroup2; the hook that names a new socket's process still attaches (its first datagram
    had no process)."""
    port = free_port()
    cap = subprocess.Popen(["ip", "netns", "exec", veth.ns, *ptcap_argv("-i", "lo", "-nn", "-c", "1",
                                                                        f"udp dst port {port}")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    while "listening on" not in line:
        line = cap.stderr.readline()
        assert line, "ptcap ended before listening"
    sender = subprocess.Popen(["ip", "netns", "exec", veth.ns, PYTHON, "-c",
                               "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                               f".sendto(b'x', ('127.0.0.1', {port}))"])
    assert sender.wait(timeout=30) == 0
    out, err = cap.communicate(timeout=30)
    assert cap.returncode == 0, err
    assert f".{sender.pid} Out IP 127.0.0.1." in out, out


PTCPDUMP_TUNING = [("--exec-events-worker-number=50",), ("--exec-events-worker-number", "80"),
                   ("--event-chan-size=20",), ("--delay-before-handle-packet-events=1s",), ("--log-level=warn",)]


@pytest.mark.parametrize("flags", PTCPDUMP_TUNING, ids=" ".join)
def test_ptcpdumps_tuning_flags_are_accepted(flags):
    """ptcpdump's e2e tests pass them (`--exec-events-worker-number=50`); they change nothing."""
    ours = subprocess.run(ptcap_argv("-n", "-r", PCAP, *flags), capture_output=True, text=True, timeout=60)
    plain = subprocess.run(ptcap_argv("-n", "-r", PCAP), capture_output=True, text=True, timeout=60)
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, plain.stdout, plain.stderr)
    bad = subprocess.run(ptcap_argv("-n", "-r", PCAP, "--log-level=loud"), capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "--log-level" in bad.stderr


def test_fp_type_is_the_decoders():
    """tcpdump's own test suite (TESTrun) asks `$TCPDUMP --fp-type` which expected outputs
    fit; ptcap's decoder is tcpdump, so the answer is tcpdump's."""
    ours, theirs = both("--fp-type")
    assert theirs.returncode == 0 and theirs.stdout.strip()
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)


@pytest.mark.parametrize("flags", [("-a",), ("-I",), ("--monitor-mode",), ("-z", "gzip"), ("-I", "-a", "-c", "3")],
                         ids=" ".join)
def test_flags_tcpdump_ignores_with_r_are_ignored(flags):
    """-a (kept for old scripts), monitor mode (a capture's) and -z without -C/-G: tcpdump
    reads the file as without them."""
    ours, theirs = both("-n", "-r", PCAP, *flags)
    assert theirs.returncode == 0
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, theirs.stderr)


@pytest.mark.root
@pytest.mark.parametrize("flags", [("-i", "lo"), ()], ids=" ".join)
def test_monitor_mode_is_refused_for_a_capture_in_tcpdumps_words(flags):
    ours = subprocess.run(ptcap_argv("-I", *flags, "-c", "1"), capture_output=True, text=True, timeout=60)
    name = flags[1] if flags else "any"     # tcpdump's default is a device, ptcap's every one
    theirs = subprocess.run([TCPDUMP, "-I", "-i", name, "-c", "1"], capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 1
    assert (ours.returncode, ours.stdout, ours.stderr) == (1, "", theirs.stderr.replace("tcpdump: ", "ptcap: ", 1))


@pytest.mark.root
def test_list_of_interfaces_comes_first_as_in_tcpdump():
    """-D lists the interfaces even with -r or -V (tcpdump looks at it before them)."""
    alone = subprocess.run(ptcap_argv("-D"), capture_output=True, text=True, timeout=60)
    ours, theirs = both("-D", "-r", PCAP)
    assert theirs.stdout.startswith("1.") and alone.stdout.startswith("1.")
    assert (ours.returncode, ours.stdout) == (0, alone.stdout)


def _settled(directory: Path, count: int):
    """The names in `directory` once no -z gzip is left running on them (ours waits for its
    commands; tcpdump does not)."""
    def done() -> bool:
        names = os.listdir(directory)
        return len(names) == count and not any(n.endswith(".gz") is False and n + ".gz" in names for n in names)
    wait_for(done, 30, f"{count} files in {directory}")
    return sorted(os.listdir(directory))


def _packets_in(paths) -> int:
    total = 0
    for path in paths:
        text = f"gzip -dc {path}" if str(path).endswith(".gz") else f"cat {path}"
        out = subprocess.run(f"{text} | {TCPDUMP} -r - 2>/dev/null | wc -l", shell=True, capture_output=True,
                             text=True, check=True).stdout
        total += int(out)
    return total


def _big_pcap(path: Path, packets: int = 2500) -> Path:
    """A classic pcap of `packets` UDP datagrams of 1000 bytes: 2.6 MB, three files at -C 1."""
    payload = bytes(range(256)) * 4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    frame = bytes(12) + b"\x08\x00" + ip + struct.pack("!HHHH", 12345, 9, 8 + len(payload), 0) + payload
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(packets):
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(frame), len(frame)) + frame)
    return path


@pytest.mark.root
def test_postrotate_command_runs_on_each_rotated_file_as_tcpdumps(tmp_path):
    """-r -w -C -z gzip: each file rotation closes is compressed (the last one, still open at
    the end, is not), the same files as tcpdump's; every packet is in them."""
    src = _big_pcap(tmp_path / "src.pcap")
    ours_dir, theirs_dir = tmp_path / "ptcap", tmp_path / "tcpdump"
    ours_dir.mkdir()
    theirs_dir.mkdir()
    ours = subprocess.run(ptcap_argv("-r", str(src), "-w", str(ours_dir / "r.pcap"), "-C", "1", "-z", "gzip"),
                          capture_output=True, text=True, timeout=60)
    theirs = subprocess.run([TCPDUMP, "-Z", "root", "-r", str(src), "-w", str(theirs_dir / "r.pcap"), "-C", "1",
                             "-z", "gzip"], capture_output=True, text=True, timeout=60)
    assert (ours.returncode, theirs.returncode) == (0, 0), ours.stderr + theirs.stderr
    names = _settled(theirs_dir, 3)
    assert names == ["r.pcap.gz", "r.pcap1.gz", "r.pcap2"], names
    assert sorted(os.listdir(ours_dir)) == names      # ptcap has waited for its gzip already
    assert _packets_in(ours_dir / n for n in names) == 2500


def _send_until_it_ends(cap: Capture, port: int) -> str:
    """Datagrams of 200 bytes to `port` until the capture has its -c count; its stderr."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        while cap.proc.poll() is None:      # until it has its count: each send waits on its end
            sock.sendto(b"y" * 200, ("127.0.0.1", port))
            try:
                cap.proc.wait(timeout=0.001)
            except subprocess.TimeoutExpired:
                pass
    finally:
        sock.close()
    return cap.finish()[1]


@pytest.mark.root
def test_live_rotation_compresses_and_gives_the_files_to_the_minus_Z_user(tmp_path):
    """A live -C capture with -z gzip -Z nobody: files rotation closed are compressed by the
    time ptcap exits, each belongs to nobody (as tcpdump's files belong to its -Z user), and
    every packet captured is in them."""
    tmp_path.chmod(0o755)
    port, n = free_port(), 300
    cap = Capture("-i", "lo", "-w", str(tmp_path / "live.pcapng"), "-C", "20k", "-z", "gzip", "-Z", "nobody",
                  "-c", str(n), f"udp dst port {port}")
    err = _send_until_it_ends(cap, port)
    assert f"{n} packets captured" in err and "compress_savefile" not in err, err
    names = sorted(os.listdir(tmp_path))
    plain = [name for name in names if not name.endswith(".gz")]
    assert len(names) >= 3 and plain == [f"live.pcapng{len(names) - 1}"], names    # still open at the end
    assert all((tmp_path / name).stat().st_uid == pwd.getpwnam("nobody").pw_uid for name in names)
    assert _packets_in(tmp_path / name for name in names) == n


@pytest.mark.root
def test_a_postrotate_command_that_cannot_start_is_said_and_the_capture_goes_on(tmp_path):
    port = free_port()
    cap = Capture("-i", "lo", "-w", str(tmp_path / "x.pcap"), "-C", "1k", "-z", "no-such-compressor",
                  "-c", "40", f"udp dst port {port}")
    err = _send_until_it_ends(cap, port)
    assert cap.proc.returncode == 0 and "40 packets captured" in err, err
    assert f"compress_savefile: execlp(no-such-compressor, {tmp_path / 'x.pcap'}) failed: " \
           "No such file or directory\n" in err
    assert _packets_in(sorted(tmp_path.iterdir())) == 40

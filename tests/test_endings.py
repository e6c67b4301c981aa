"""Every way a capture ends, as tcpdump 4.99 ends it (checked on this machine, as root): its
output's reader gone, a signal during start-up, a full disk, a closed terminal. Each ends
quietly (one line at most, never a traceback), keeps what was captured and leaves nothing in
the kernel."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import pty
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import PYTHON, ROOT, free_port, ptcap_argv, run, tshark_fields, wait_clean, wait_for

pytestmark = pytest.mark.root
WRITE_FAILED = 14       # tcpdump's status when its output cannot be written


@contextlib.contextmanager
def udp_traffic(port: int, every: float = 0.02):
    """UDP datagrams to 127.0.0.1:port until the block ends (nobody listens: the filter
    `udp port PORT` sees them on lo all the same)."""
    done = threading.Event()

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not done.is_set():
                s.sendto(b"x" * 16, ("127.0.0.1", port))
                done.wait(every)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def start(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(ptcap_argv(*args), stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT)


def wait_listening(proc: subprocess.Popen) -> list[str]:
    lines = []
    while True:
        line = proc.stderr.readline().decode()
        assert line, "ptcap ended before it was listening: " + "".join(lines)
        lines.append(line)
        if "listening on" in line:
            return lines


def ended(proc: subprocess.Popen, before: list[str] = (), timeout: float = 20) -> str:
    """ptcap's whole stderr once it has exited (within `timeout`: promptly)."""
    err = proc.communicate(timeout=timeout)[1].decode()
    return "".join(before) + err


# -- the output's reader goes away -------------------------------------------------------

def test_lines_into_a_pipe_whose_reader_left_end_as_tcpdumps():
    """ptcap -i lo | head -1, while traffic flows: tcpdump says 'Unable to write output:
    Broken pipe' and exits 14, without its counts (ptcap said nothing and exited 0)."""
    port = free_port()
    with udp_traffic(port):
        proc = start("-l", "-n", "-i", "lo", f"udp port {port}")
        err = wait_listening(proc)
        assert "UDP, length 16" in proc.stdout.readline().decode()
        proc.stdout.close()                                     # head -1 has its line
        err = ended(proc, err)
    assert proc.returncode == WRITE_FAILED, err
    assert err.splitlines()[-1] == "ptcap: Unable to write output: Broken pipe"
    assert "Traceback" not in err and "packets captured" not in err
    assert wait_clean() == []


def test_lines_into_a_pipe_whose_reader_left_end_without_more_traffic():
    """The reader leaves after the one packet there is: the end comes now, not with a next
    packet that may never come."""
    port = free_port()
    proc = start("-l", "-n", "-i", "lo", f"udp port {port}")
    err = wait_listening(proc)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x" * 16, ("127.0.0.1", port))
    assert "UDP, length 16" in proc.stdout.readline().decode()
    proc.stdout.close()
    err = ended(proc, err, timeout=10)
    assert proc.returncode == WRITE_FAILED, err
    assert err.splitlines()[-1] == "ptcap: Unable to write output: Broken pipe"
    assert wait_clean() == []


@pytest.mark.parametrize("when", ["before listening", "after listening"])
def test_a_file_to_a_pipe_whose_reader_left_ends_as_tcpdumps(when):
    """ptcap -w - | head -c 10: tcpdump takes the SIGPIPE as the end, exits 0 and says its
    counts; ptcap too, at once, whether or not a packet comes (nothing matches here)."""
    port = free_port()
    proc = start("-i", "lo", "-w", "-", f"udp port {port}")
    assert proc.stdout.read(10)[:4] == b"\x0a\x0d\x0d\x0a"      # the section header's start
    err: list[str] = []
    if when == "after listening":
        err = wait_listening(proc)
    proc.stdout.close()
    err = ended(proc, err, timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "0 packets captured" in err and "0 packets dropped by kernel" in err
    assert wait_clean() == []


# -- a signal during start-up --------------------------------------------------------------

def _pyc(module_file: str) -> str:
    return importlib.util.cache_from_source(str(ROOT / module_file))


MOMENTS = {
    # what ptcap opens at that moment: the filter library's module, while the command line
    # is read (ptcap.cli.main imported it), and the capture's own, before anything is set up
    "reading the command line": "ptcap/filter/libpcap.py",
    "setting up the capture": "ptcap/cli/live.py",
}


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_during_start_up_ends_it_as_any_stop(moment, sig):
    """Ctrl-C, SIGTERM or SIGHUP in ptcap's first moments (strace delivers it as ptcap opens
    a module it loads then): the end of a capture that saw nothing, exit 0 as tcpdump's stop,
    no KeyboardInterrupt traceback, nothing attached. It was a traceback, 130, or death by
    the signal."""
    path = _pyc(MOMENTS[moment])
    res = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-P", path, "-e", "trace=openat",
                          "-e", f"inject=openat:signal={sig}:when=1",
                          *ptcap_argv("-n", "-i", "lo", "udp port 9")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr
    assert "0 packets captured" in res.stderr
    assert wait_clean() == []


def _python_start_moments() -> dict[str, str]:
    """Files Python opens before any of ptcap's code runs: a .pth file of the venv's site
    (the editable install's), and the standard library's enum (imported for `re`)."""
    import enum
    pths = sorted((ROOT / ".venv").glob("lib/python*/site-packages/*.pth"))
    return {"site's .pth files": str(pths[-1]) if pths else "no .pth",
            "the interpreter's first imports": importlib.util.cache_from_source(enum.__file__)}


@pytest.mark.parametrize("moment", ["site's .pth files", "the interpreter's first imports"])
def test_a_ctrl_c_while_python_starts_is_a_stop_too(moment):
    """The `ptcap` command (install.sh's launcher) starts Python with the stop signals blocked
    until ptcap catches them: a Ctrl-C while site reads its .pth files or Python imports its
    first modules ends it as any stop. With pip's script that was a KeyboardInterrupt
    traceback (exit 1), or, in a .pth file, swallowed: the capture went on (a hang)."""
    path = _python_start_moments()[moment]
    assert os.path.exists(path), path
    res = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-P", path, "-e", "trace=openat",
                          "-e", "inject=openat:signal=SIGINT:when=1",
                          str(ROOT / ".venv" / "bin" / "ptcap"), "-n", "-i", "lo", "udp port 9"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr
    assert "0 packets captured" in res.stderr
    assert wait_clean() == []


# -- output that cannot be written ---------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    ((), "Unable to write output: No space left on device"),              # tcpdump's own line
    (("-w", "-"), "standard output: No space left on device"),
])
def test_output_to_a_full_device_is_one_line_and_tcpdumps_status(flags, words):
    port = free_port()
    with open("/dev/full", "wb") as full, udp_traffic(port):
        proc = start("-n", "-i", "lo", *flags, f"udp port {port}", stdout=full)
        err = ended(proc, timeout=30)
    assert proc.returncode == WRITE_FAILED, err
    assert err.splitlines()[-1] == f"ptcap: {words}"
    assert "Traceback" not in err and "packets captured" not in err
    assert wait_clean() == []


@pytest.fixture
def tiny_disk(tmp_path):
    where = tmp_path / "tiny"
    where.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)])
    yield where
    run(["umount", str(where)])


@pytest.mark.parametrize("name", ["out.pcapng", "out.pcap"])
def test_a_file_on_a_full_disk_keeps_every_whole_block(tiny_disk, name):
    """-w onto a disk that fills: one line with the errno's words, status 14 (tcpdump goes
    on without a word and loses every packet after; ptcap says it as tcpdump says output it
    cannot write); the file holds every whole block written before, and no half of one."""
    out = tiny_disk / name
    port = free_port()
    with udp_traffic(port, every=0.002):
        proc = start("-i", "lo", "-w", str(out), f"udp port {port}")
        err = ended(proc, timeout=60)
    assert proc.returncode == WRITE_FAILED, err
    assert err.splitlines()[-1] == f"ptcap: {out}: No space left on device"
    assert "Traceback" not in err and "packets captured" not in err
    read = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "udp.dstport"],
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0 and "cut short" not in read.stderr, read.stderr
    ports = read.stdout.split()
    assert len(ports) > 100 and set(ports) == {str(port)}
    # what was cut is at most the block the disk took part of (each is well under 1 KiB)
    assert out.stat().st_size > 64 * 1024 - 1024
    assert wait_clean() == []


# -- SIGHUP: the terminal closes -------------------------------------------------------------

def _on_a_terminal(argv: list[str]) -> tuple[int, int]:
    """Run argv as the session leader of a new pty; returns (pid, master fd)."""
    pid, master = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execvp(argv[0], argv)
    return pid, master


def _read_until(master: int, word: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.time() + timeout
    while word not in seen:
        assert time.time() < deadline, f"no {word!r} on the terminal: {seen!r}"
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    return seen


def _exit_status(pid: int, timeout: float = 20) -> int:
    status: list[int] = []

    def gone() -> bool:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            status.append(os.waitstatus_to_exitcode(st))
        return bool(p)

    wait_for(gone, timeout, "ptcap's end after its terminal closed")
    return status[0]


def test_the_terminal_closing_ends_it_as_sighup_does(tmp_path):
    """ptcap on a terminal that closes (an ssh session that drops): it gets SIGHUP and ends
    as tcpdump does, 0, with the file it wrote whole, though nothing can be said any more
    (said on a gone terminal, the counts were an error and a traceback, status 1)."""
    port = free_port()
    out = tmp_path / "o.pcapng"
    with udp_traffic(port):
        pid, master = _on_a_terminal(ptcap_argv("-i", "lo", "-w", str(out), "--print", "-l", "-n",
                                                f"udp port {port}"))
        try:
            _read_until(master, b"UDP, length 16")
        finally:
            os.close(master)
        status = _exit_status(pid)
    assert status == 0
    assert len(tshark_fields(out, "frame.number")) >= 1
    assert wait_clean() == []


HANGS_ON = """
import signal, subprocess, sys
signal.signal(signal.SIGHUP, lambda *a: None)      # a session leader that outlives its terminal
sys.exit(subprocess.call(sys.argv[1:]))
"""


def test_lines_to_a_terminal_gone_without_a_sighup_end_as_tcpdumps():
    """The terminal closes and no SIGHUP comes (its session leader takes it): the next line
    cannot be written, and ptcap ends as tcpdump then does, 'Unable to write output:
    Input/output error', status 14."""
    port = free_port()
    with udp_traffic(port):
        pid, master = _on_a_terminal([PYTHON, "-c", HANGS_ON, *ptcap_argv("-l", "-n", "-i", "lo",
                                                                            f"udp port {port}")])
        try:
            _read_until(master, b"UDP, length 16")
        finally:
            os.close(master)
        status = _exit_status(pid)
    assert status == WRITE_FAILED
    assert wait_clean() == []

"""Capturing only some processes' traffic: the selection happens in the kernel."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import (PEERS, PYTHON, comments, file_packets, free_port, ptcap_argv, tshark_fields, wait_clean,
                      wait_for)

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

ONE_SHOT = """
import os, socket, sys
port = int(sys.argv[1])
def ping(payload):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect(('127.0.0.1', port))
    s.send(payload)
    s.recv(100)
ping(b'parent')
if os.fork() == 0:
    ping(b'child!')
    os._exit(0)
os.wait()
sys.exit(int(sys.argv[2]))
"""


def pids_in(path) -> list[int]:
    return [int(comments(c)["PID"]) for (c,) in tshark_fields(path, "frame.comment")]


def test_pid_selects_one_process_among_many(peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    wanted = peers("udp-client", "127.0.0.1", port)
    other = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "--pid", str(wanted.pid), "-Q", "out")
    for _ in range(3):
        other.say("send 10")
        wanted.say("send 10")
        other.say("send 10")
    wait_for(lambda: len(file_packets(out)) >= 3, what="the wanted client's 3 datagrams in the file")
    _, err = cap.stop()
    assert pids_in(out) == [wanted.pid] * 3
    assert "3 packets received by filter" in err    # the others never left the kernel


def test_pname_selects_processes_started_later(peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    link = tmp_path / "pingtool"          # a program whose comm is "pingtool"
    link.symlink_to(os.path.realpath(PYTHON))
    cap = capture("-i", "lo", "-w", str(out), "--pname", "pingtool", "-Q", "out")
    other = peers("udp-client", "127.0.0.1", port)
    other.say("send 10")
    done = subprocess.run([str(link), "-c", ONE_SHOT, port, "0"], timeout=20)
    assert done.returncode == 0
    wait_for(lambda: len(file_packets(out)) >= 2, what="pingtool's 2 datagrams in the file")
    cap.stop()
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    assert len(rows) == 2                 # parent and forked child, both named pingtool
    assert all(r["Cmd"].endswith("pingtool") for r in rows)


def test_uid_selects_a_user(peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "--uid", "65534", "-Q", "out")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    subprocess.run(as_nobody + [PYTHON, "-c", ONE_SHOT, port, "0"], check=True, timeout=20, cwd="/")
    subprocess.run([PYTHON, "-c", ONE_SHOT, port, "0"], check=True, timeout=20)  # root: not captured
    wait_for(lambda: len(file_packets(out)) >= 2, what="nobody's 2 datagrams in the file")
    cap.stop()
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    assert len(rows) == 2 and all(r["UserId"] == "65534" and r["UserName"] == "nobody" for r in rows)


def test_follow_forks_of_a_pid(peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    parent = subprocess.Popen([PYTHON, "-c", "import sys; sys.stdin.readline()\n" + ONE_SHOT, port, "0"],
                              stdin=subprocess.PIPE, text=True)
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "--pid", str(parent.pid), "-f", "-Q", "out")
    parent.communicate("go\n", timeout=20)
    wait_for(lambda: len(file_packets(out)) >= 2, what="the parent's and the child's datagrams in the file")
    cap.stop()
    got = pids_in(out)
    assert len(got) == 2 and got[0] == parent.pid and got[1] != parent.pid


def test_command_is_captured_with_descendants_and_its_status_returned(peers, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    other = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "o.pcapng"
    proc = subprocess.Popen(ptcap_argv("-i", "lo", "-w", str(out), "--", PYTHON, "-c", ONE_SHOT, port, "7"),
                            stderr=subprocess.PIPE, text=True)
    other.say("send 10")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 7, err
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    # parent and child each send a datagram and get the echo: on lo one copy of each, the
    # echo's own process the server's, its receiver the command's
    assert len(rows) == 4, err
    ends = [r if r["Args"].split()[-1] == "7" else {k[len("Receiver"):]: v for k, v in r.items()
                                                   if k.startswith("Receiver")} for r in rows]
    assert {e["Args"].split()[-1] for e in ends} == {"7"}
    assert len({e["PID"] for e in ends}) == 2
    assert wait_clean() == []


def test_command_starts_with_the_signals_a_shell_gives(tmp_path):
    """The command's signal dispositions and mask are those it has when run directly: Python
    ignores SIGPIPE and SIGXFSZ, and ptcap's child inherited that through exec (`yes | head -1`
    under ptcap printed "yes: standard output: Broken pipe")."""
    show = "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -1"
    direct = subprocess.run(["sh", "-c", show], capture_output=True, text=True, timeout=30)
    under = subprocess.run(ptcap_argv("-i", "lo", "-w", str(tmp_path / "o.pcapng"), "--", "sh", "-c", show),
                           capture_output=True, text=True, timeout=60)
    assert under.returncode == 0, under.stderr
    assert under.stdout == direct.stdout, (under.stdout, direct.stdout)
    assert "Broken pipe" not in under.stderr, under.stderr


def test_command_runs_as_the_invoking_user_under_sudo(peers, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    env = {**os.environ, "SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"}
    # a python nobody may run (the venv's may live under /root)
    proc = subprocess.run(ptcap_argv("-i", "lo", "-w", str(out), "-Q", "out", "--",
                                     "/usr/bin/python3", "-c", ONE_SHOT, port, "0"),
                          capture_output=True, text=True, env=env, timeout=30, cwd="/")
    assert proc.returncode == 0, proc.stderr
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    assert rows and all(r["UserId"] == "65534" for r in rows)


def test_exited_process_keeps_its_identity(peers, tmp_path):
    """A process that is gone before its packets are read still has its command and args."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    proc = subprocess.run(ptcap_argv("-i", "lo", "-w", str(out), "-Q", "out", "--",
                                     PYTHON, "-c", ONE_SHOT, port, "0"),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for (c,) in tshark_fields(out, "frame.comment"):
        ctx = comments(c)
        assert ctx["Args"].endswith(f"{port} 0") and os.path.basename(ctx["Cmd"]).startswith("python")


def test_selector_errors():
    def ptcap(*args):
        return subprocess.run(ptcap_argv(*args), capture_output=True, text=True, timeout=30)

    assert ptcap("-i", "lo", "--pid", "999999999").stderr == "ptcap: --pid 999999999: no such process\n"
    assert ptcap("-i", "lo", "-f").stderr == ("ptcap: -f follows the children of selected processes: "
                                              "give --pid, --pname or --uid\n")
    res = ptcap("-i", "lo", "--", "no-such-command-xyz")
    assert (res.returncode, res.stderr) == (1, "ptcap: no-such-command-xyz: command not found\n")


SAY = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(sys.argv[2].encode(), ('127.0.0.1', int(sys.argv[1])))
"""


def _spawn_with_pid(pid: int, argv: list[str], tries: int = 200) -> subprocess.Popen | None:
    """Start argv as process `pid` (the kernel hands out the pid after ns_last_pid; other
    processes on the machine may take it first: try again)."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_reused_pid_is_another_process(peers, capture, tmp_path):
    """Two processes with the same pid, one after the other, read in one batch: each packet
    keeps its own process (the key is pid + start time)."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "-Q", "out", f"udp dst port {port}")
    held = [PYTHON, "-c", "import sys; sys.stdin.readline()\n" + SAY]
    first = subprocess.Popen(held + [port, "first"], stdin=subprocess.PIPE)
    first.communicate(b"go\n", timeout=20)
    second = _spawn_with_pid(first.pid, ["/usr/bin/python3", "-c", "import sys; sys.stdin.readline()\n" + SAY,
                                         port, "second"])
    if second is None:
        cap.stop()
        raise AssertionError(f"pid {first.pid} could not be reused (a busy machine?)")
    second.communicate(b"go\n", timeout=20)
    wait_for(lambda: len(file_packets(out)) >= 2, what="the 2 packets in the file")
    cap.stop()
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    assert [r["PID"] for r in rows] == [str(first.pid)] * 2
    assert [r["Args"].split()[-1] for r in rows] == ["first", "second"]


def test_selected_pid_is_released_when_it_exits(peers, capture, tmp_path):
    """--pid N selects that process, not whoever gets pid N after it exits."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    out = tmp_path / "o.pcapng"
    held = [PYTHON, "-c", "import sys; sys.stdin.readline()\n" + SAY]
    first = subprocess.Popen(held + [port, "first"], stdin=subprocess.PIPE)
    cap = capture("-i", "lo", "-w", str(out), "-Q", "out", "--pid", str(first.pid))
    first.communicate(b"go\n", timeout=20)
    second = _spawn_with_pid(first.pid, held + [port, "second"])
    assert second is not None
    second.communicate(b"go\n", timeout=20)     # -Q out: judged in its sendto, which has returned
    wait_for(lambda: len(file_packets(out)) >= 1, what="the packet in the file")
    cap.stop()
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    assert [r["Args"].split()[-1] for r in rows] == ["first"]


def test_pids_and_uids_are_repeatable(peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    a, b, c = (peers("udp-client", "127.0.0.1", port) for _ in range(3))
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "-Q", "out", "--pid", str(a.pid), "--pid", str(b.pid))
    for p in (a, b, c):
        p.say("send 10")
    wait_for(lambda: len(file_packets(out)) >= 2, what="the 2 packets in the file")
    cap.stop()
    assert sorted(pids_in(out)) == sorted([a.pid, b.pid])

    out = tmp_path / "u.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "-Q", "out", "--uid", "65534", "--uid", "65533")
    for uid in (65534, 65533, 65532):
        subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        "/usr/bin/python3", "-c", SAY, port, str(uid)], check=True, timeout=20, cwd="/")
    wait_for(lambda: len(file_packets(out)) >= 2, what="the 2 packets in the file")
    cap.stop()
    rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
    assert sorted(r["UserId"] for r in rows) == ["65533", "65534"]
    assert sorted(r.get("UserName", "") for r in rows) == ["", "nobody"]     # 65533 has no name


def test_follow_forks_only_follows_children_born_after_start(peers, capture, tmp_path):
    """-f adds children at fork time; a child that existed before start is not selected."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    script = ("import os, socket, sys, time\n"
              "r, w = os.pipe()\n"
              "if os.fork() == 0:\n"
              "    os.read(r, 1)\n" + "    exec(compile(" + repr(SAY) + ", 'say', 'exec'))\n    os._exit(0)\n"
              "sys.stdin.readline()\n"
              "os.write(w, b'g')\n"
              "os.wait()\n"
              "exec(compile(" + repr(SAY) + ", 'say', 'exec'))\n")
    parent = subprocess.Popen([PYTHON, "-c", script, port, "old-child"], stdin=subprocess.PIPE)
    out = tmp_path / "o.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "-Q", "out", "--pid", str(parent.pid), "-f")
    parent.communicate(b"go\n", timeout=20)
    wait_for(lambda: len(file_packets(out)) >= 1, what="the packet in the file")
    cap.stop()
    assert pids_in(out) == [parent.pid]     # not the child: born before the capture started


REEXEC = """
import os, socket, sys, time
port = int(sys.argv[1])
if sys.argv[2] == "first":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"before", ("127.0.0.1", port))
    time.sleep(0.5)                 # written (and its comment cached) before the exec
    os.set_inheritable(s.fileno(), True)
    os.execv(sys.executable, [sys.executable, __file__, str(port), "second", str(s.fileno())])
s = socket.socket(fileno=int(sys.argv[3]))
s.sendto(b"after", ("127.0.0.1", port))
"""


def test_exec_under_the_same_name_changes_the_comments(peers, tmp_path):
    """A process that execs the same program again (same pid, thread, name and socket) is
    written with its new arguments from then on, not the comment cached before the exec."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    script = tmp_path / "reexec.py"
    script.write_text(REEXEC)
    out = tmp_path / "o.pcapng"
    proc = subprocess.run(ptcap_argv("-i", "lo", "-w", str(out), "-Q", "out", f"udp dst port {port}", "--",
                                     PYTHON, str(script), port, "first"),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    rows = tshark_fields(out, "udp.length", "frame.comment")
    args = {length: comments(c)["Args"] for length, c in rows}
    assert set(args) == {"14", "13"}, rows           # "before" and "after"
    assert args["14"].endswith(f"{port} first")
    assert args["13"].endswith("second " + args["13"].split()[-1]) and f" {port} second " in args["13"]


SHARED_UDP = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
def say(word):
    s.send(f"{os.getpid()} {os.getpid()} {word}".encode())
    time.sleep(0.1)
say("parent-first")
child = os.fork()
if child == 0:
    say("child-first")
    say("child-again")
    os._exit(0)
os.waitpid(child, 0)
say("parent-again")
"""

SHARED_TCP = """
import socket, sys, threading, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def say(word):
    s.sendall(f"{threading.get_native_id()} {threading.get_native_id()} {word}".encode())
    time.sleep(0.15)
def worker(words):
    for w in words:
        say(w)
say("main-first")
for words in (["a-first", "a-again"], ["b-first"]):
    t = threading.Thread(target=worker, args=(words,))
    t.start()
    t.join()
say("main-again")
"""


def _sent_by(out, id_field: str) -> list[tuple[str, str, str]]:
    """(id in the payload, the word, id in the packet's comments) of every packet with data."""
    got = []
    for payload, text in tshark_fields(out, "data.data", "frame.comment"):
        if payload:
            claimed, _, word = bytes.fromhex(payload).decode().split(" ", 2)
            got.append((claimed, word, comments(text).get(id_field, "")))
    return got


def _run_sharing(tmp_path, code: str, proto: str, port: int, id_field: str) -> list[tuple[str, str, str]]:
    """Run a socket-sharing script under `ptcap -- CMD`, capturing what it sends."""
    script = tmp_path / "sharing.py"
    script.write_text(code)
    out = tmp_path / "o.pcapng"
    proc = subprocess.run(ptcap_argv("-i", "lo", "-w", str(out), "-Q", "out", f"{proto} dst port {port}", "--",
                                     PYTHON, str(script), str(port)), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return _sent_by(out, id_field)


def test_shared_udp_socket_names_each_sender(peers, tmp_path):
    """A UDP socket used by a parent, then by its child, then by the parent again: every
    datagram carries the process that sent it, not the socket's previous user."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    got = _run_sharing(tmp_path, SHARED_UDP, "udp", int(port), "PID")
    assert [w for _, w, _ in got] == ["parent-first", "child-first", "child-again", "parent-again"], got
    assert all(claimed == pid for claimed, _, pid in got), got
    assert len({pid for _, _, pid in got}) == 2


def test_shared_tcp_connection_names_each_thread(peers, tmp_path):
    """Threads taking turns on one TCP connection: each segment carries the thread that
    wrote it (tcp_sendmsg_locked names it before the data is queued)."""
    port = str(free_port())
    peers("tcp-server", port, "127.0.0.1")
    got = _run_sharing(tmp_path, SHARED_TCP, "tcp", int(port), "ThreadId")
    assert [w for _, w, _ in got] == ["main-first", "a-first", "a-again", "b-first", "main-again"], got
    assert all(claimed == tid for claimed, _, tid in got), got
    assert len({tid for _, _, tid in got}) == 3


def _comm(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


def test_command_ends_when_ptcap_is_killed(capture):
    """`ptcap -- CMD` killed with SIGKILL (no chance to clean up): the command goes too."""
    port = str(free_port())
    cap = capture("-i", "lo", f"udp port {port}", "--", "sleep", "60")
    deadline = time.time() + 5
    commands: list[str] = []
    while time.time() < deadline:       # the command starts once the capture listens
        children = open(f"/proc/{cap.proc.pid}/task/{cap.proc.pid}/children").read().split()
        commands = [c for c in children if _comm(c) == "sleep"]     # (without TCX, the tc watchdog too)
        if commands:
            break
        time.sleep(0.05)
    assert len(commands) == 1
    child = int(commands[0])
    cap.send(signal.SIGKILL)
    cap.proc.wait()
    deadline = time.time() + 5
    while os.path.exists(f"/proc/{child}") and time.time() < deadline:
        try:
            os.waitpid(child, os.WNOHANG)   # pytest is the orphan's subreaper
        except ChildProcessError:
            pass
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}"), "the command outlived ptcap"
    assert wait_clean() == []


# A parent that forks a child which becomes another program (and, as root, another user)
# before it sends: the child matches the parent's selector only through -f.
FORK_EXEC = """
import os, sys
port, drop = sys.argv[1], sys.argv[2] == "drop"
if os.fork() == 0:
    if drop:
        os.setgid(65534)
        os.setuid(65534)
    os.execv("/usr/bin/python3", ["/usr/bin/python3", "-c", sys.argv[3], port, "child"])
os.wait()
"""


def _fork_exec(argv0: str, port: str, drop: bool) -> None:
    done = subprocess.run([argv0, "-c", FORK_EXEC, port, "drop" if drop else "keep", SAY], timeout=20, cwd="/")
    assert done.returncode == 0


def test_follow_forks_with_pname(peers, capture, tmp_path):
    """--pname NAME -f: children born after the start to a NAME process, whatever they exec."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    link = tmp_path / "forktool"          # a program whose comm is "forktool"
    link.symlink_to(os.path.realpath(PYTHON))
    for follow in (False, True):
        out = tmp_path / f"o{follow}.pcapng"
        cap = capture("-i", "lo", "-w", str(out), "-Q", "out", "--pname", "forktool",
                      *(["-f"] if follow else []), f"udp dst port {port}")
        _fork_exec(str(link), port, drop=False)
        subprocess.run([PYTHON, "-c", SAY, port, "stranger"], check=True, timeout=20)  # no forktool child
        wait_for(lambda: len(file_packets(out)) >= follow)     # -Q out: each judged in its sendto, now returned
        cap.stop()
        rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
        if not follow:
            assert rows == []             # the child is python3 when it sends
        else:
            assert len(rows) == 1 and rows[0]["Cmd"] == "/usr/bin/python3" and rows[0]["Args"].endswith("child")


def test_follow_forks_with_uid(peers, capture, tmp_path):
    """--uid 0 -f: a child of a root process stays selected after it becomes nobody."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    for follow in (False, True):
        out = tmp_path / f"o{follow}.pcapng"
        # nobody's process born before the start (every later one descends from root)
        stranger = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     "/usr/bin/python3", "-c", "import sys; sys.stdin.readline()\n" + SAY,
                                     port, "stranger"], stdin=subprocess.PIPE, cwd="/")
        cap = capture("-i", "lo", "-w", str(out), "-Q", "out", "--uid", "0",
                      *(["-f"] if follow else []), f"udp dst port {port}")
        _fork_exec(PYTHON, port, drop=True)
        stranger.communicate(b"go\n", timeout=20)
        wait_for(lambda: len(file_packets(out)) >= follow)     # -Q out: each judged in its sendto, now returned
        cap.stop()
        rows = [comments(c) for (c,) in tshark_fields(out, "frame.comment")]
        if not follow:
            assert rows == []
        else:
            assert [(r["UserId"], r["Args"].split()[-1]) for r in rows] == [("65534", "child")]

"""The paths ptcap takes on other kernels, run on this one: tc through netlink (as on kernels
without TCX), a program the kernel refuses leaving the rest of its object working, and what
`ptcap --version` reports. (.ci/kernels boots the real 6.1 and 6.12 kernels for the rest.)"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, Capture, peers, ptcap_argv, run, veth, wait_clean  # noqa: F401

pytestmark = pytest.mark.root      # real BPF, namespaces

NETLINK = {**os.environ, "PTCAP_TC_ATTACH": "netlink"}


def _tc_state(v) -> str:
    """qdiscs and filters on the namespace side of the veth."""
    return "".join(run(v.exec("tc", *args, "dev", v.peer_if, *side), check=False).stdout
                   for args, side in ((("qdisc", "show"), ()), (("filter", "show"), ("ingress",)),
                                      (("filter", "show"), ("egress",))))


def _watchdogs() -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"ptcap.kernel.tcwatch" in cmd and str(ROOT).encode() in b"".join(cmd) + _exe(pid):
            out.append(int(pid))
    return out


def _exe(pid: str) -> bytes:
    try:
        return os.readlink(f"/proc/{pid}/exe").encode()
    except OSError:
        return b""


def _wait(cond, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _udp_to(v, port: int, n: int) -> None:
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"[s.sendto(b'k19', ('{v.peer_ip}', {port})) for _ in range({n})]")
    subprocess.run([os.path.realpath(shutil.which("python3")), "-c", code], check=True)


def test_netlink_tc_captures_and_cleans_up_on_exit(veth):
    """The tc path of kernels without TCX: a clsact qdisc and cls_bpf filters, in the
    interface's own namespace; gone when the capture ends."""
    cap = Capture("--netns", veth.ns, "-i", veth.peer_if, "-n", "-c", "3", "udp port 9", env=NETLINK)
    state = _tc_state(veth)
    assert "clsact" in state and "ptcap_filter_in" in state and "ptcap_filter_ou" in state, state
    assert "direct-action" in state
    _udp_to(veth, 9, 3)
    out, err = cap.finish()
    lines = out.decode().splitlines()
    assert len(lines) == 3 and all(" In IP " in l and ".9: UDP" in l for l in lines), err
    assert _wait(lambda: "clsact" not in _tc_state(veth) and not _watchdogs()), _tc_state(veth)
    assert _tc_state(veth).strip() == "qdisc noqueue 0: root refcnt 2"
    assert wait_clean() == []


def test_netlink_tc_sigkill_leaves_nothing(veth):
    """SIGKILL: the watchdog child removes the filters and the qdisc ptcap made."""
    cap = Capture("--netns", veth.ns, "-i", veth.peer_if, "-n", "udp", env=NETLINK)
    assert "clsact" in _tc_state(veth)
    dogs = _watchdogs()
    assert len(dogs) == 1
    cap.proc.send_signal(signal.SIGKILL)
    cap.proc.wait()
    assert _wait(lambda: "clsact" not in _tc_state(veth)), _tc_state(veth)
    assert "ptcap_filter" not in _tc_state(veth)
    assert _wait(lambda: not _watchdogs())
    assert wait_clean() == []


@pytest.mark.parametrize("handover", [1, 2])
def test_netlink_tc_sigkill_while_attaching_leaves_nothing(veth, handover):
    """SIGKILL at the moment ptcap hands its first (its second) filter to the watchdog, as
    a kill during start-up can land: nothing stays. ptcap added each filter itself and told
    the watchdog after it, so a kill in between left the clsact qdisc and a ptcap_filter
    (its program loaded, run on every packet) for good; now the watchdog adds them."""
    assert shutil.which("strace"), "strace is missing: run ./install.sh"
    # strace delivers SIGKILL as ptcap enters its N-th sendmsg (a message to the watchdog)
    res = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=sendmsg", "-e",
                          f"inject=sendmsg:signal=SIGKILL:when={handover}",
                          *ptcap_argv("--netns", veth.ns, "-i", veth.peer_if, "-n", "udp")],
                         env=NETLINK, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL or res.returncode == 128 + signal.SIGKILL, res
    assert "listening on" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert _wait(lambda: not _watchdogs())
    assert _wait(lambda: "clsact" not in _tc_state(veth) and "ptcap_filter" not in _tc_state(veth)), \
        _tc_state(veth)
    assert wait_clean() == []


def test_netlink_tc_leaves_a_qdisc_it_did_not_make(veth):
    run(veth.exec("tc", "qdisc", "add", "dev", veth.peer_if, "clsact"))
    cap = Capture("--netns", veth.ns, "-i", veth.peer_if, "-n", "udp", env=NETLINK)
    assert "ptcap_filter_in" in _tc_state(veth)
    cap.proc.send_signal(signal.SIGKILL)
    cap.proc.wait()
    assert _wait(lambda: "ptcap_filter" not in _tc_state(veth)), _tc_state(veth)
    assert _wait(lambda: not _watchdogs())
    assert "clsact" in _tc_state(veth)          # the user's, kept
    run(veth.exec("tc", "qdisc", "del", "dev", veth.peer_if, "clsact"))


def test_netlink_tc_keeps_its_qdisc_while_another_filter_is_on_it(veth):
    """A clsact qdisc ptcap made, on which somebody added a filter of their own while ptcap
    ran: at the end ptcap takes only its filters off, and leaves the qdisc with that filter
    (it counted the qdisc's filters with a malformed request, always 0, and destroyed it)."""
    cap = Capture("--netns", veth.ns, "-i", veth.peer_if, "-n", "udp", env=NETLINK)
    assert "ptcap_filter_in" in _tc_state(veth)
    run(veth.exec("tc", "filter", "add", "dev", veth.peer_if, "ingress", "pref", "7", "bpf", "da",
                  "bytecode", "1,6 0 0 0,"))
    cap.stop()
    assert _wait(lambda: "ptcap_filter" not in _tc_state(veth) and not _watchdogs()), _tc_state(veth)
    state = _tc_state(veth)
    assert "clsact" in state and "pref 7 bpf" in state, state       # the user's filter, kept
    run(veth.exec("tc", "qdisc", "del", "dev", veth.peer_if, "clsact"))
    assert wait_clean() == []


def test_netlink_tc_two_captures_share_the_qdisc_the_first_made(veth):
    """Two captures on one interface: the first makes the clsact qdisc. When it ends first,
    the second's filters stay on it and it goes on capturing; when the second ends, the
    qdisc goes too (nobody else's filter is on it)."""
    first = Capture("--netns", veth.ns, "-i", veth.peer_if, "-n", "udp", env=NETLINK)
    second = Capture("--netns", veth.ns, "-i", veth.peer_if, "-n", "-c", "2", "udp port 9", env=NETLINK)
    assert _tc_state(veth).count("name ptcap_filter_in ") == 2, _tc_state(veth)
    first.stop()
    assert _wait(lambda: _tc_state(veth).count("name ptcap_filter_in ") == 1), _tc_state(veth)
    _udp_to(veth, 9, 2)
    out, err = second.finish()
    assert len(out.decode().splitlines()) == 2, err
    assert _wait(lambda: "clsact" not in _tc_state(veth) and not _watchdogs()), _tc_state(veth)
    assert wait_clean() == []


def _object_with_refused_cgroup_programs(tmp: Path) -> Path:
    """bpf/capture.bpf.c with its cgroup_skb programs made unloadable (an unchecked packet
    read), built beside the real other objects."""
    for f in (ROOT / "bpf").iterdir():
        if f.suffix == ".h":
            shutil.copy(f, tmp / f.name)
    src = (ROOT / "bpf" / "capture.bpf.c").read_text()
    broken = src.replace("\treturn capture_cgroup(skb, PTCAP_DIR_IN);",
                         "\treturn *(volatile __u32 *)(long)skb->data;")
    assert broken != src
    (tmp / "capture.bpf.c").write_text(broken)
    out = tmp / "build"
    out.mkdir()
    flags = run(["make", "-s", "-C", str(ROOT / "bpf"), "print-cflags"]).stdout
    run(["clang", *flags.split(), "-I", str(tmp), "-c", str(tmp / "capture.bpf.c"),
         "-o", str(out / "capture.bpf.o")], cwd=ROOT / "bpf")
    for obj in (ROOT / "bpf" / "build").glob("*.bpf.o"):
        if obj.name != "capture.bpf.o":
            shutil.copy(obj, out / obj.name)
    return out


def test_a_refused_program_fails_only_what_needs_it(tmp_path, veth):
    """One program the kernel refuses (here: cgroup_skb ingress) takes down the cgroup-skb
    backend, with the kernel, program and verifier's reason; tc captures as before."""
    env = {**os.environ, "PTCAP_BPF_DIR": str(_object_with_refused_cgroup_programs(tmp_path))}
    res = subprocess.run(ptcap_argv("--backend", "cgroup-skb", "-i", "lo", "-c", "1"), env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    first, *reason = res.stderr.splitlines()
    assert first == (f"ptcap: loading program ptcap_cg_ingress in capture failed on Linux "
                     f"{os.uname().release}: Permission denied"), res.stderr
    assert reason and reason[0].startswith("  verifier: ") and "Traceback" not in res.stderr
    version = subprocess.run(ptcap_argv("--version"), env=env, capture_output=True, text=True, timeout=60)
    usable = version.stdout.split("kernel hooks usable: ")[1].splitlines()[0].split(", ")
    assert "tc/ptcap_tc_ingress" in usable and "cgroup_skb/ptcap_cg_egress" in usable
    assert "cgroup_skb/ptcap_cg_ingress" not in usable
    assert (f"kernel hook unavailable: cgroup_skb/ptcap_cg_ingress: loading program ptcap_cg_ingress "
            f"in capture failed on Linux {os.uname().release}: Permission denied") in version.stdout
    cap = Capture("-i", veth.host_if, "-n", "-c", "2", "udp port 9", env=env)
    _udp_to(veth, 9, 2)
    out, err = cap.finish()
    assert len(out.decode().splitlines()) == 2, err
    assert wait_clean() == []


def test_version_says_which_paths_it_took():
    res = run(ptcap_argv("--version"))
    usable = res.stdout.split("kernel hooks usable: ")[1].splitlines()[0].split(", ")
    assert f"kernel {os.uname().release}" in res.stdout
    # this kernel has TCX and the owner tracepoints: no netlink, no fentry stand-ins
    assert "tc attach: TCX links" in usable
    assert {"tp_btf/sock_send_length", "tp_btf/sock_recv_length", "tp_btf/tcp_sendmsg_locked"} <= set(usable)
    assert not [h for h in usable if h.startswith("fentry/")]
    netlink = subprocess.run(ptcap_argv("--version"), env=NETLINK, capture_output=True, text=True).stdout
    assert "tc attach: netlink clsact + cls_bpf filters" in netlink


def test_reset_hook_takes_the_path_the_kernel_has():
    """--hook tcp_send_reset where its tracepoint is the old one (PTCAP_RESET_FENTRY=1 takes
    that path on any kernel): fentry on tcp_v4/v6_send_reset where the kernel loads fentry
    programs; where it refuses them (this machine), ptcap says so, takes the tracepoint and
    still captures. Either way the reset of a SYN to a closed port is seen."""
    from test_hooks import _fentry_loads
    env = {**os.environ, "PTCAP_RESET_FENTRY": "1"}
    listed = run(ptcap_argv("--list-hooks"), env=env).stdout
    line = [l for l in listed.splitlines() if l.startswith("tcp_send_reset ")][0]
    fentry = _fentry_loads()
    where = "fentry/tcp_v4_send_reset+fentry/tcp_v6_send_reset" if fentry else "tp_btf/tcp_send_reset"
    assert line.split()[1] == "supported" and line.endswith(f"; at {where}"), listed
    closed = socket.socket()                 # holds a port nobody listens on
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    cap = Capture("--hook", "tcp_send_reset", "-n", "-c", "1", f"tcp dst port {port}", env=env)
    s = socket.socket()
    try:
        s.settimeout(10)
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
    finally:
        s.close()
        closed.close()
    out, err = cap.finish()
    lines = out.decode().splitlines()
    assert len(lines) == 1 and f"> 127.0.0.1.{port}: Flags [S]" in lines[0], err
    refused = (f"ptcap: --hook tcp_send_reset: loading program ptcap_emit_tcp_v4_send_reset in hooks failed on "
               f"Linux {os.uname().release}: ")
    assert (refused in err) is not fentry and ("; at tp_btf/tcp_send_reset instead" in err) is not fentry, err
    assert wait_clean() == []

"""The kernel matrix's smoke suite, run inside a booted kernel by .ci/kernels (or by hand, on
any kernel: `.venv/bin/python .ci/kernel_smoke.py`). Each check starts a real capture, makes
traffic once ptcap says it listens, and checks what it printed; every wait is bounded.

Checks: capture and attribution on lo (a socket opened before ptcap started, a pcap filter),
on a veth into a network namespace with a process selector, the cgroup-skb backend; then
.ci/smoke_more.py's: --pname with -f following a child, --uid with -w read back by tshark's
dissector fields, a container selected by its cgroup (--container-id), --netns NAME,
--netns newly (tc) and any (cgroup-skb) following a namespace made while capturing, every
hook; .ci/smoke_tls.py's TLS keys of a running OpenSSL program; last SIGKILL leaving nothing attached, and the extcap through tshark (every capture's
normal exit is checked for leftovers too). Prints one line per check and
`smoke: N passed, M failed on Linux RELEASE`; exits 1 if any failed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smoke_lib import (HOST_IF, HOST_IP, NS, NS_IF, NS_IP, PY, PTCAP, ROOT, START_TIMEOUT, TMP,  # noqa: E402
                       Capture, Sender, free_port, leftovers, sh, wait_clean)
import smoke_more  # noqa: E402
import smoke_tls  # noqa: E402


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
    """cgroup-skb on lo, both copies: leaving, the sender; arriving, a receiver whose socket
    existed before the capture and never sends (known only from the walk at the start)."""
    receiver = Sender("k19cgrcv", "127.0.0.1")
    sender = Sender("k19cg", "127.0.0.1")
    port = receiver.port
    cap = Capture("--backend", "cgroup-skb", "-i", "lo", "--loopback-twice", "-n", "-c", "4",
                  f"udp and dst port {port}")
    try:
        cap.wait_listening()
        for _ in range(2):
            sender.send(port, "127.0.0.1")
        lines = cap.finish()
    finally:
        sender.stop()
        receiver.stop()
    out = [l for l in lines if " Out " in l]
    into = [l for l in lines if " In " in l]
    assert len(out) == 2 and all(f"k19cg.{sender.pid}" in l for l in out), lines
    assert len(into) == 2 and all(f"k19cgrcv.{receiver.pid}" in l for l in into), lines


def check_sigkill_leaves_nothing() -> None:
    cap = Capture("-i", HOST_IF, "-n", "udp")
    cap.wait_listening()
    assert leftovers(), "the capture attached nothing"
    cap.proc.send_signal(signal.SIGKILL)
    cap.proc.wait()
    left = wait_clean()
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
    other = Sender("k19wsother", "127.0.0.1")         # not selected (the extcap's --pname)
    port = sender.port
    log = TMP / "extcap.log"
    proc = subprocess.Popen(["tshark", "-i", "ptcap", "-o", "extcap.ptcap.interfaces:lo",
                             "-o", "extcap.ptcap.loglevel:info", "-o", f"extcap.ptcap.logfile:{log}",
                             "-o", "extcap.ptcap.pname:k19ws",
                             "-f", f"udp and (dst port {port} or dst port {other.port})", "-c", "2",
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
            other.send(other.port, "127.0.0.1")
            sender.send(port, "127.0.0.1")
        out, err = proc.communicate(timeout=120)
    finally:
        sender.stop()
        other.stop()
        if proc.poll() is None:
            proc.kill()
    rows = [l.split("\t") for l in out.splitlines() if l.strip()]
    # one copy per loopback packet, with both its ends (here one process)
    assert [r[0].split(",")[0] for r in rows] == [str(sender.pid)] * 2, (rows, err)
    assert [r[1].split(",")[0] for r in rows] == ["k19ws"] * 2 and {r[2] for r in rows} == {str(port)}, rows


CHECKS = [check_lo_filter_and_preexisting_socket, check_veth_with_process_selector,
          check_cgroup_skb_backend, *smoke_more.CHECKS, *smoke_tls.CHECKS, check_sigkill_leaves_nothing,
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
    print(sh(*PTCAP, "--list-hooks", timeout=START_TIMEOUT).rstrip(), flush=True)
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
        shutil.rmtree(TMP, ignore_errors=True)       # the senders' names, files, logs
    print(f"smoke: {passed} passed, {failed} failed on Linux {release} "
          f"in {time.monotonic() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The capture core, as a user meets it: real namespaces, real peers, real ptcap, read back
with tshark and tcpdump."""
from __future__ import annotations

import os
import signal
import socket
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (PYTHON, ROOT, START_TIMEOUT, WAIT_TIMEOUT, comments, counters, counters_map, file_packets,
                      free_port, ptcap_argv, run, tshark_fields, wait_clean, wait_for)

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons


def exe(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/exe")


def test_tcp_packets_carry_client_and_server_processes(veth, peers, capture, tmp_path):
    """Client in the root namespace, server behind a veth: every TCP packet of the
    connection is attributed, in both directions, with thread, user and parent."""
    port = free_port(socket.SOCK_STREAM)
    server = peers("tcp-server", str(port), netns=veth.ns)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", veth.host_if, "-w", str(out))
    client = peers("tcp-client", veth.peer_ip, str(port))
    client.say("send 100")
    client.say("close")
    wait_for(lambda: sum(p.data[47] & 1 for p in file_packets(out) if len(p.data) > 47) >= 2,
             what="both FINs in the file")
    _, err = cap.stop()
    assert "packets captured" in err

    rows = tshark_fields(out, "frame.comment", "ip.src", "tcp.srcport", "tcp.flags.str",
                         "frame.interface_name", display_filter="tcp")
    assert len(rows) >= 8   # handshake, data, echo, acks, fin
    for comment, src, sport, flags, ifname in rows:
        ctx = comments(comment)
        assert ifname == veth.host_if
        assert ctx.get("PID") == str(client.pid), (src, sport, flags, comment)
        assert os.path.realpath(ctx["Cmd"]) == exe(client.pid)
        assert "tcp-client" in ctx["Args"]
        assert ctx["ThreadId"] == str(client.pid)
        assert ctx["ThreadName"].startswith("python")
        assert ctx["UserId"] == "0"
        assert ctx["ParentPID"] == str(os.getpid())
        assert os.path.realpath(ctx["ParentCmd"]) == exe(os.getpid())


def test_direction_in_epb_flags_and_counts(veth, peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, netns=veth.ns)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", veth.host_if, "-w", str(out), "-c", "10", f"udp port {port}")
    client = peers("udp-client", veth.peer_ip, port)
    for size in (50, 51, 52, 53, 1):      # every padding of the packet data
        client.say(f"send {size}")
    _, err = cap.finish()
    assert cap.proc.returncode == 0
    assert "10 packets captured" in err
    rows = tshark_fields(out, "ip.src", "udp.length", "frame.comment")
    assert sorted(int(r[1]) - 8 for r in rows) == sorted([50, 51, 52, 53, 1] * 2)
    # tshark shows epb_flags' direction bits as frame.packet_flags_direction
    dirs = tshark_fields(out, "frame.packet_flags_direction", "ip.src")
    assert len(dirs) == 10
    for direction, src in dirs:
        want = "0x1" if src == veth.peer_ip else "0x2"    # 01 inbound, 10 outbound
        assert int(direction, 16) == int(want, 16), (direction, src)
    for row in rows:
        assert comments(row[2])["PID"] == str(client.pid)


def test_connection_opened_before_capture_is_attributed_on_first_packet(veth, peers, capture, tmp_path):
    port = str(free_port())
    peers("tcp-server", port, netns=veth.ns)
    client = peers("tcp-client", veth.peer_ip, port)    # connected and idle before ptcap starts
    client.say("send 10")
    out = tmp_path / "out.pcapng"
    cap = capture("-i", veth.host_if, "-w", str(out), "-c", "1", "-Q", "out", "tcp")
    client.say("send 10")
    cap.finish()
    rows = tshark_fields(out, "frame.comment", "tcp.len")
    assert len(rows) == 1
    ctx = comments(rows[0][0])
    assert ctx["PID"] == str(client.pid)
    assert os.path.realpath(ctx["Cmd"]) == exe(client.pid)


def test_preexisting_connection_ingress_first_packet(veth, peers, capture, tmp_path):
    """The server's echo arrives first (-Q in): the receiving socket is looked up."""
    port = str(free_port())
    peers("tcp-server", port, netns=veth.ns)
    client = peers("tcp-client", veth.peer_ip, port)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", veth.host_if, "-w", str(out), "-c", "1", "-Q", "in", "tcp")
    client.say("send 10")
    cap.finish()
    rows = tshark_fields(out, "frame.comment", "ip.src")
    assert rows[0][1] == veth.peer_ip
    assert comments(rows[0][0])["PID"] == str(client.pid)


def test_loopback_packets_once_with_sender_and_receiver(peers, capture, tmp_path):
    """By default each loopback packet is captured once (as tcpdump -i lo shows it), naming
    its sender and, under Receiver* keys, its receiver."""
    port = str(free_port())
    server = peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", "lo", "-w", str(out), "-c", "2", f"udp port {port}")
    client.say("send 20")
    cap.finish()
    rows = tshark_fields(out, "frame.comment", "udp.srcport")
    assert len(rows) == 2
    sport = client.ready.split()[2]
    for comment, src_port in rows:
        ctx = comments(comment)
        sender = client.pid if src_port == sport else server.pid
        receiver = server.pid if src_port == sport else client.pid
        assert (int(ctx["PID"]), int(ctx["ReceiverPID"])) == (sender, receiver), comment


def test_loopback_twice_keeps_both_copies(peers, capture, tmp_path):
    """--loopback-twice: each packet leaving (its sender's) and arriving (its receiver's),
    each copy naming the other end too."""
    port = str(free_port())
    server = peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", "lo", "--loopback-twice", "-w", str(out), "-c", "4", f"udp port {port}")
    client.say("send 20")
    cap.finish()
    rows = tshark_fields(out, "frame.comment", "udp.srcport", "frame.packet_flags_direction")
    assert len(rows) == 4
    sport = client.ready.split()[2]
    for comment, src_port, direction in rows:
        ctx = comments(comment)
        outbound = int(direction, 16) == 2
        sender = client.pid if src_port == sport else server.pid
        receiver = server.pid if src_port == sport else client.pid
        # on lo a packet is seen leaving its sender and arriving at its receiver
        if outbound:
            assert (int(ctx["PID"]), int(ctx["ReceiverPID"])) == (sender, receiver), comment
        else:
            assert (int(ctx["PID"]), int(ctx["SenderPID"])) == (receiver, sender), comment


def test_kernel_generated_packets_stay_blank(veth, capture, tmp_path):
    """A SYN to a closed port: the SYN is its sender's (a process in the other namespace of
    this host, whose socket the packet still carries); the kernel's RST has no process."""
    out = tmp_path / "out.pcapng"
    cap = capture("-i", veth.host_if, "-w", str(out), "-c", "2", "tcp port 7")
    sender = subprocess.Popen(veth.exec(PYTHON, "-c", f"""
import socket, sys
print(flush=True)
sys.stdin.readline()
try: socket.create_connection(('{veth.host_ip}', 7), 2)
except OSError: pass
"""), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sender.stdout.readline()
    sender.stdin.write("go\n")
    sender.stdin.flush()
    sender.wait(timeout=10)
    cap.finish()
    rows = tshark_fields(out, "frame.comment", "tcp.flags.reset")
    assert len(rows) == 2
    (syn_comment, syn_rst), (rst_comment, rst) = rows
    assert syn_rst == "0" and comments(syn_comment)["PID"] == str(sender.pid)
    # the kernel's RST has no process of its own; it is for the connecting process
    assert rst == "1" and "PID" not in comments(rst_comment)
    assert comments(rst_comment)["ReceiverPID"] == str(sender.pid)


def test_snaplen_interfaces_and_clock(veth, peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, netns=veth.ns)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", veth.host_if, "-i", "lo", "-Q", "out", "-s", "96", "-w", str(out), "-c", "2",
                  f"udp port {port}")        # (other UDP on this host's lo is not ours)
    client = peers("udp-client", veth.peer_ip, port)
    sent = [float(client.say("send 1000").split()[1]) for _ in range(2)]
    cap.finish()
    idbs = run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.interface_name"]).stdout.split()
    assert idbs == [veth.host_if, veth.host_if]
    rows = tshark_fields(out, "frame.len", "frame.cap_len", "frame.time_epoch")
    for (length, caplen, ts), t_send in zip(rows, sent):
        assert int(length) == 14 + 20 + 8 + 1000
        assert int(caplen) == 96
        assert abs(float(ts) - t_send) < 0.010
    # both interfaces are described in the file, even the one that saw nothing
    blocks = _interface_names(out)
    assert blocks == [veth.host_if, "lo"]


def _interface_names(path: Path) -> list[str]:
    """IDB names, read with our own reader-free parser of the raw file."""
    import struct
    data = path.read_bytes()
    names, off = [], 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        if btype == 1:
            opt = off + 16
            while opt + 4 <= off + blen - 4:
                code, olen = struct.unpack_from("<HH", data, opt)
                if code == 0:
                    break
                if code == 2:
                    names.append(data[opt + 4:opt + 4 + olen].decode())
                opt += 4 + olen + (-olen & 3)
        off += blen
    return names


def test_classic_pcap_and_stdout_stream(peers, capture, tmp_path):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "out.pcap"
    cap = capture("-i", "lo", "-w", str(out), "-c", "2", f"udp port {port}")
    client.say("send 10")
    cap.finish()
    res = run(["tcpdump", "-n", "-r", str(out)])
    assert len(res.stdout.splitlines()) == 2           # the request and the reply, once each
    assert "UDP, length 10" in res.stdout
    assert open(out, "rb").read(4) == bytes.fromhex("d4c3b2a1")   # microsecond pcap, as tcpdump writes

    # ptcap -w - | tcpdump -n -r -
    pt = subprocess.Popen(ptcap_argv("-i", "lo", "-w", "-", "-c", "2", f"udp port {port}"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    td = subprocess.Popen(["tcpdump", "-n", "-r", "-"], stdin=pt.stdout, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    pt.stdout.close()
    _wait_listening(pt)
    client.say("send 10")
    lines = td.communicate(timeout=WAIT_TIMEOUT)[0].splitlines()
    pt.wait(timeout=10)
    assert len(lines) == 2 and all("UDP, length 10" in l for l in lines)


def _wait_listening(proc: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline().decode()
        if line.removeprefix("ptcap: ").startswith("listening on") or not line:
            return


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_file_stays_readable(peers, capture, tmp_path, sig):
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    out = tmp_path / "out.pcapng"
    cap = capture("-i", "lo", "-w", str(out), f"udp port {port}")
    for _ in range(3):
        client.say("send 10")
    wait_for(lambda: len(file_packets(out)) >= 6, what="6 packets in the file")
    _, err = cap.stop(sig)
    assert cap.proc.returncode == 0
    # 3 requests and 3 replies, once each on lo
    assert "6 packets captured" in err
    assert "6 packets received by filter" in err
    assert "0 packets dropped by kernel" in err
    assert len(tshark_fields(out, "frame.number")) == 6
    assert wait_clean() == []


def test_ring_overflow_is_counted_as_dropped_by_kernel(peers, capture, tmp_path):
    """A stopped reader and a flood: what didn't fit is counted in the kernel, and
    captured + dropped = received."""
    port = str(free_port())
    peers("udp-server", port, "127.0.0.1")
    flood = peers("udp-flood", "127.0.0.1", port, "20000")
    out = tmp_path / "out.pcapng"
    cap = capture("-i", "lo", "-Q", "out", "-B", "1024", "-w", str(out), f"udp port {port}")
    cap.send(signal.SIGSTOP)
    flood.say("go")
    cap.send(signal.SIGCONT)
    wait_for(lambda: counters(counters_map(cap.proc.pid))[1] > 0, what="the kernel's count of dropped packets")
    _, err = cap.stop()
    counts = {}
    for line in err.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].isdigit():
            counts[" ".join(words[2:])] = int(words[0])
    assert counts["dropped by kernel"] > 0
    assert counts["captured"] + counts["dropped by kernel"] == counts["received by filter"]
    assert len(tshark_fields(out, "frame.number")) == counts["captured"]


@pytest.mark.parametrize("how", ["count", "sigint", "sigterm", "sigkill", "error"])
def test_nothing_left_attached(how, peers, capture, tmp_path):
    assert wait_clean() == [], "kernel not clean before the test"
    if how == "error":
        # fails after attaching: the output cannot be written
        res = subprocess.run(ptcap_argv("-i", "lo", "-w", "/dev/full"), capture_output=True, text=True,
                             timeout=START_TIMEOUT)
        assert res.returncode == 14         # tcpdump's status for output it cannot write
        assert res.stderr.strip().splitlines()[-1].startswith("ptcap: ")
        assert "Traceback" not in res.stderr
    else:
        port = str(free_port())
        peers("udp-server", port, "127.0.0.1")
        client = peers("udp-client", "127.0.0.1", port)
        args = ["-i", "any", "-w", str(tmp_path / "o.pcapng")]
        if how == "count":
            args += ["-c", "2", f"udp port {port}"]
        cap = capture(*args)
        assert len(wait_clean(0)) > 0      # something is attached while it runs
        client.say("send 5")
        if how == "count":
            cap.finish()
        else:
            cap.stop({"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[how])
    assert wait_clean() == []


def test_errors_are_one_line(tmp_path):
    def ptcap(*args, **kw):
        return subprocess.run(ptcap_argv(*args), capture_output=True, text=True, timeout=START_TIMEOUT, **kw)

    res = ptcap("-i", "eth9", "-c", "1")
    assert (res.returncode, res.stderr) == (1, "ptcap: eth9: No such device exists\n")

    res = ptcap("-i", "lo", "-w", "/nonexistent/dir/x.pcapng")
    assert (res.returncode, res.stderr) == (1, "ptcap: /nonexistent/dir/x.pcapng: No such file or directory\n")

    res = ptcap("-i", "lo", "-c", "1", env={**os.environ, "PTCAP_BTF": str(tmp_path / "none")})
    assert res.returncode == 1
    assert res.stderr.startswith("ptcap: this kernel has no BTF") and res.stderr.count("\n") == 1

    for bad, words in ((("-s", "abc"), "invalid snaplen abc"), (("--bogus",), "unrecognized option '--bogus'"),
                       (("-Q", "sideways"), "unknown capture direction `sideways'"),
                       (("-s", "99999999"), "invalid snaplen 99999999 (must be >= 0 and <= 262144)"),
                       (("-B", "0"), "invalid packet buffer size 0")):
        res = ptcap(*bad)
        assert res.returncode == 1 and res.stderr.startswith("ptcap: ") and words in res.stderr
        assert res.stderr.count("\n") == 1, res.stderr

    # printed lines that cannot be written (a full disk): one line, exit 1, from -r and live
    with open("/dev/full", "w") as full:
        res = subprocess.run(ptcap_argv("-r", str(ROOT / "tests/data/live/lo.pcap")), stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=START_TIMEOUT)
        # -r of a file tcpdump reads as it is: tcpdump's own words and exit status (14)
        assert (res.returncode, res.stderr.splitlines()[-1]) == (14, "ptcap: Unable to write output: No space left on device")
        port = str(free_port())
        live = subprocess.Popen(ptcap_argv("-i", "lo", "-c", "1", f"udp port {port}"), stdout=full,
                                stderr=subprocess.PIPE, text=True)
        while "listening on" not in live.stderr.readline():
            pass
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("127.0.0.1", int(port)))
        s.close()
        err = live.communicate(timeout=START_TIMEOUT)[1]
        # as tcpdump says it live too
        assert (live.returncode, err.splitlines()[-1]) == (14, "ptcap: Unable to write output: No space left on device")
        assert "Traceback" not in err

    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    res = subprocess.run(nobody + ptcap_argv("-i", "lo", "-c", "1"), capture_output=True, text=True,
                         timeout=START_TIMEOUT, cwd="/")
    assert res.returncode == 1
    assert res.stderr.startswith("ptcap: You don't have permission to capture")
    assert res.stderr.count("\n") == 1
    assert wait_clean() == []


def test_live_lines_name_interface_process_and_direction(peers):
    """Without -w: tcpdump's line with the interface, COMM.PID and In/Out."""
    port = str(free_port())
    server = peers("udp-server", port, "127.0.0.1")
    client = peers("udp-client", "127.0.0.1", port)
    proc = subprocess.Popen(ptcap_argv("-n", "-i", "lo", "--loopback-twice", "-c", "4", f"udp port {port}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_listening_text(proc)
    client.say("send 33")
    out, err = proc.communicate(timeout=WAIT_TIMEOUT)
    lines = out.splitlines()
    assert len(lines) == 4, out
    cport = client.ready.split()[2]
    comm = open(f"/proc/{client.pid}/comm").read().strip()
    scomm = open(f"/proc/{server.pid}/comm").read().strip()
    pattern = (r"^\d\d:\d\d:\d\d\.\d{6} lo (\S+) (In|Out) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): UDP, length 33, "
               r"(Receiver|Sender) \[(\S+)\]")
    import re
    seen = [re.match(pattern, line) for line in lines]
    assert all(seen), lines
    got = [(m.group(1), m.group(2), m.group(3), m.group(5), m.group(6)) for m in seen]
    c, s = f"{comm}.{client.pid}", f"{scomm}.{server.pid}"
    # --loopback-twice: each packet leaving (its sender's) and arriving (its receiver's)
    assert got == [(c, "Out", cport, "Receiver", s), (s, "In", cport, "Sender", c),
                   (s, "Out", port, "Receiver", c), (c, "In", port, "Sender", s)]
    assert "4 packets captured" in err


def _wait_listening_text(proc: subprocess.Popen) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        if line.removeprefix("ptcap: ").startswith("listening on") or not line:
            return


def test_version_reports_libraries_and_hooks():
    res = subprocess.run(ptcap_argv("--version"), capture_output=True, text=True, timeout=START_TIMEOUT)
    assert res.returncode == 0
    assert res.stdout.startswith("ptcap version ")
    assert "libpcap version 1." in res.stdout and "libbpf version 1." in res.stdout
    usable = res.stdout.split("kernel hooks usable:")[1].splitlines()[0].split(", ")
    # who sends: the tracepoint where the kernel has it (6.2 on), else fentry on the function
    from ptcap.kernel import btf
    if btf.vmlinux().tracepoint_args("sock_send_length") is not None:
        assert "tp_btf/sock_send_length" in usable, usable
    else:
        assert "fentry/sock_sendmsg" in usable and "tp_btf/sock_send_length" not in usable, usable
        assert "kernel hook unavailable: tp_btf/sock_send_length: this kernel has no such tracepoint" \
            in res.stdout.splitlines(), res.stdout
    assert "tp_btf/sched_process_exec" in usable, usable
    assert wait_clean() == []


BROKEN_PROGRAM = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 20); } ptcap_events SEC(".maps");
SEC("tc")
int ptcap_tc_ingress(struct __sk_buff *skb)
{
	/* reads past the end of the packet without a bounds check: the verifier says no */
	return *(volatile __u32 *)(long)skb->data;
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_load_failure_names_the_program_and_the_verifiers_reason(tmp_path):
    from conftest import ROOT
    src = tmp_path / "broken.bpf.c"
    src.write_text(BROKEN_PROGRAM)
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-I", str(ROOT / "bpf"), "-c", str(src),
                    "-o", str(tmp_path / "capture.bpf.o")], check=True)
    shutil.copy(ROOT / "bpf" / "build" / "records.bpf.o", tmp_path)     # the records agree
    res = subprocess.run(ptcap_argv("-i", "lo", "-c", "1"), capture_output=True, text=True, timeout=START_TIMEOUT,
                         env={**os.environ, "PTCAP_BPF_DIR": str(tmp_path)})
    assert res.returncode == 1
    first, *reason = res.stderr.splitlines()
    assert first == ("ptcap: loading program ptcap_tc_ingress in capture failed on Linux "
                     f"{os.uname().release}: Permission denied")
    assert reason and reason[0].startswith("  verifier: ")
    assert "invalid access to packet" in res.stderr
    assert "Traceback" not in res.stderr
    assert wait_clean() == []

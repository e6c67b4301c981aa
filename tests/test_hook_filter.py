"""The hook filter (pcap-filter translated to read the per-CPU scratch buffer instead of an
skb) gives libpcap's verdict, packet by packet, run in this kernel.

tp_btf programs cannot be test-run, so the very same instructions are loaded as a raw_tp
program (the filter never reads its context) and run with BPF_PROG_TEST_RUN: the scratch map
holds the corpus packet as bpf/hooks.bpf.c would have copied it, and the program the filter
tail-calls returns the snap length the filter stored, 0 when the filter rejected.
"""
from __future__ import annotations

import ctypes
import os
import struct
import subprocess

import pytest

from ptcap.filter import asm
from ptcap.kernel import bpf
from ptcap.filter import compiler as pf
from ptcap.filter import translate as pt
from ptcap.filter.asm import Jmp, Reg, Size
from ptcap.kernel import records
from ptcap.kernel.session import _possible_cpus
from ptcap.errors import PtcapError

from test_filter_diff import CORPUS, load_expressions, read_pcap

pytestmark = pytest.mark.root      # BPF_PROG_TEST_RUN


def run_filter(fd: int) -> int:
    """BPF_PROG_TEST_RUN of a raw_tp program without context: its return value."""
    return bpf.prog_test_run(fd, b"")[0]


class ScratchRig:
    """A scratch map, a prog array whose emit slot returns the stored snap length."""

    def __init__(self) -> None:
        self.ncpu = _possible_cpus()
        self.scratch = bpf.map_create(bpf.MapType.PERCPU_ARRAY, 4, records.SCRATCH.size, 1, name="ptcap_t_scr")
        self.progs = bpf.map_create(bpf.MapType.PROG_ARRAY, 4, 4, 3, name="ptcap_t_progs")
        emit = [
            asm.st(Size.W, Reg.R10, -8, 0), asm.mov64(Reg.R2, Reg.R10), asm.alu64(asm.Alu.ADD, Reg.R2, imm=-8),
            *asm.ld_map_fd(Reg.R1, self.scratch), asm.call(asm.Helper.map_lookup_elem),
            asm.jmp(Jmp.JEQ, Reg.R0, asm.Label("none"), imm=0),
            asm.ldx(Size.W, Reg.R0, Reg.R0, pt.SCRATCH_SNAP), asm.exit_(),
            asm.Label("none"), asm.mov64(Reg.R0, imm=0), asm.exit_(),
        ]
        self.emit = bpf.prog_load(bpf.ProgType.RAW_TRACEPOINT, asm.assemble(emit), name="ptcap_t_emit")
        bpf.map_update(self.progs, struct.pack("<I", 2), struct.pack("<I", self.emit))

    def load(self, prog: pf.ClassicProgram, may_goto: bool | None = None) -> int:
        """The filter as a capture loads it on this kernel, or with may_goto as said."""
        if may_goto is None:
            may_goto = bpf.has_may_goto()
        code = pt.hook_filter_program(prog, scratch_fd=self.scratch, prog_array_fd=self.progs, index=2,
                                      may_goto=may_goto)
        return bpf.prog_load(bpf.ProgType.RAW_TRACEPOINT, code, name="ptcap_t_flt")

    def put(self, packet: bytes, wire_len: int) -> None:
        """The packet as the hook program leaves it: at most SCRATCH_DATA bytes of it (every
        CPU's copy: the test may run on any)."""
        packet = packet[:pt.SCRATCH_DATA]
        head = struct.pack("<QIIII", 0, 0, wire_len, len(packet), 0)
        value = (head.ljust(pt.SCRATCH_HDR, b"\0") + packet).ljust(records.SCRATCH.size, b"\0")
        bpf.map_update(self.scratch, struct.pack("<I", 0), value * self.ncpu)

    def close(self) -> None:
        for fd in (self.emit, self.progs, self.scratch):
            os.close(fd)


@pytest.fixture(scope="module")
def rig():
    r = ScratchRig()
    yield r
    r.close()


@pytest.mark.parametrize("linktype", [pf.LINKTYPE_ETHERNET, pf.LINKTYPE_RAW])
def test_hook_filters_agree_with_libpcap(rig, linktype):
    frames = [data for data, _ in read_pcap(CORPUS / "packets.pcap")]
    assert len(frames) == 2636
    if linktype == pf.LINKTYPE_RAW:
        frames = [f[14:] for f in frames if f[12:14] in (b"\x08\x00", b"\x86\xdd")]
    programs = []
    try:
        for expr in load_expressions():
            try:
                prog = pf.compile_filter(expr, linktype)
            except PtcapError:
                assert linktype == pf.LINKTYPE_RAW, expr
                continue
            programs.append((expr, prog.offline(), rig.load(prog)))
        runs = accepted = 0
        disagreements = []
        for n, frame in enumerate(frames):
            rig.put(frame, len(frame))
            for expr, offline, fd in programs:
                kernel = run_filter(fd)
                want = offline.verdict(frame[:pt.SCRATCH_DATA], len(frame))
                runs += 1
                accepted += want != 0
                if kernel != want:
                    disagreements.append((expr, n, kernel, want))
    finally:
        for _, _, fd in programs:
            os.close(fd)
    assert len(programs) >= 200
    assert disagreements[:10] == []
    assert 0.02 * runs < accepted < 0.9 * runs


def test_reads_stop_at_the_copied_bytes(rig):
    """A load past what the hook copied rejects, as libpcap does past the captured bytes,
    even when the packet was longer on the wire."""
    prog = pf.compile_filter("udp[8:4] = 0x41424344", pf.LINKTYPE_RAW)
    fd = rig.load(prog)
    try:
        ip = bytes.fromhex("450000200001000040110000c0a80001c0a80002") + struct.pack("!HHHH", 1, 2, 12, 0)
        rig.put(ip + b"ABCD", 32)
        assert run_filter(fd) == 262144
        rig.put(ip + b"AB", 32)          # the rest not copied (nonlinear skb)
        assert run_filter(fd) == 0
    finally:
        os.close(fd)


# protochain on a kernel without may_goto (before 6.9, as Debian 12's 6.1): the loop is
# bounded by a round count instead. Forced here, so that a 6.18 host checks that path too.

def _ipv6_chain(tag: int, chain: list[int], last: int) -> bytes:
    """An Ethernet frame: IPv6 with extension headers `chain` (protocol numbers, in order),
    then `last` (UDP carries a payload); `tag` (flow label, sizes) tells the frames apart."""
    protos = chain + [last]
    body = b""
    for n, proto in enumerate(chain):
        nxt = protos[n + 1]
        if proto == 51:                  # AH: (payload length + 2) * 4 bytes
            body += bytes([nxt, 4, 0, 0]) + struct.pack("!II", 0x100, tag) + bytes(12)
        elif proto == 44:                # fragment: 8 bytes
            body += bytes([nxt, 0]) + struct.pack("!HI", 1, tag)
        else:                            # hop-by-hop, routing, destination: (length + 1) * 8
            units = (tag + n) % 2
            body += bytes([nxt, units]) + bytes(6 + 8 * units)
    if last == 17:
        body += struct.pack("!HHHH", 1024 + tag, 53, 12, 0) + b"ping"
    elif last != 59:
        body += bytes(20)
    # 2001:db8::1 > 2001:db8::2. libpcap's AH step sets X to the AH length, not X plus it
    # (tcpdump -d shows it), so a chain goes on at byte 24: a 0 there would loop for ever
    # in tcpdump 4.99.3 (libpcap 1.10.3 bounds no loop); 0x20 ends it.
    ip6 = struct.pack("!IHBB", (6 << 28) | tag, len(body), protos[0], 64) + \
        bytes.fromhex("20010db8000000000000000000000001" "20010db8000000000000000000000002")
    return bytes.fromhex("020000000002020000000001") + b"\x86\xdd" + ip6 + body


def _ipv4_ah(tag: int, last: int) -> bytes:
    ah = bytes([last, 4, 0, 0]) + struct.pack("!II", 0x100, tag) + bytes(12)
    udp = struct.pack("!HHHH", 1024 + tag, 53, 12, 0) + b"ping"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(ah) + len(udp), tag, 0, 64, 51, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + ah + udp


HBH, ROUTING, FRAGMENT, AH, DSTOPTS, NONE, UDP, TCP, ICMP6 = 0, 43, 44, 51, 60, 59, 17, 6, 58
CHAINS = [
    ([], UDP), ([HBH], UDP), ([HBH, DSTOPTS, ROUTING, FRAGMENT, DSTOPTS], UDP), ([HBH, AH], UDP),
    ([AH], TCP), ([DSTOPTS], ICMP6), ([HBH], NONE), ([DSTOPTS] * 20, UDP), ([ROUTING, AH, DSTOPTS], TCP),
    ([FRAGMENT] * 3, ICMP6), ([DSTOPTS] * pt.MAX_BACKWARD_JUMPS, UDP),
]
LOOP_FILTERS = ["ip6 protochain 17", "protochain 17", "ip6 protochain 58", "ip6 protochain 6",
                "ip6 protochain 44", "ip6 protochain 51", "ip6 protochain 60", "ip protochain 17",
                "ip protochain 6", "ip6 protochain 59", "protochain 17 or protochain 58",
                "ip6 protochain 17 and not ip6 protochain 44"]


def _frames() -> list[bytes]:
    frames = [_ipv6_chain(tag, chain, last) for tag, (chain, last) in enumerate(CHAINS)]
    frames += [_ipv4_ah(90, UDP), _ipv4_ah(91, TCP)]
    frames.append(_ipv6_chain(92, [HBH, DSTOPTS, ROUTING], UDP)[:14 + 40 + 8 + 4])  # chain cut short
    return frames


def _tcpdump_accepts(expr: str, frames: list[bytes], tmp_path) -> set[int]:
    """Which frames tcpdump -r keeps for expr (it writes them out, unchanged, in order)."""
    src, dst = tmp_path / "in.pcap", tmp_path / "out.pcap"
    src.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(
        struct.pack("<IIII", n, 0, len(f), len(f)) + f for n, f in enumerate(frames)))
    subprocess.run(["tcpdump", "-Z", "root", "-r", str(src), "-w", str(dst), expr],
                   check=True, capture_output=True, timeout=60)
    kept = [data for data, _ in read_pcap(dst)]
    return {frames.index(data) for data in kept}


def _loop_paths(rig, prog, may_goto: bool):
    """(name, fd, run) of the hook filter and the tc program, both translated with may_goto or not."""
    tc = pt.verdict_program(prog, bpf.ProgType.SCHED_CLS, may_goto=may_goto)
    hook = pt.hook_filter_program(prog, scratch_fd=rig.scratch, prog_array_fd=rig.progs, index=2,
                                  may_goto=may_goto)
    for code in (tc, hook):
        opcodes = {code[n] for n in range(0, len(code), 8)}
        assert (0xE5 in opcodes) == may_goto        # BPF_JMP | BPF_JCOND: 6.1 refuses it
    hook_fd = bpf.prog_load(bpf.ProgType.RAW_TRACEPOINT, hook, name="ptcap_t_flt")
    try:
        tc_fd = bpf.prog_load(bpf.ProgType.SCHED_CLS, tc, name="ptcap_t_tc")
    except bpf.BPFError:
        os.close(hook_fd)
        raise

    def run_hook(frame: bytes) -> int:
        rig.put(frame, len(frame))
        return run_filter(hook_fd)
    return [("hook", hook_fd, run_hook), ("tc", tc_fd, lambda frame: bpf.prog_test_run(tc_fd, frame)[0])]


def _ways_to_bound_loops() -> list[bool]:
    return [False, True] if bpf.has_may_goto() else [False]


@pytest.mark.parametrize("may_goto", _ways_to_bound_loops(), ids=lambda m: "may_goto" if m else "counted")
def test_protochain_follows_extension_headers_as_tcpdump_does(rig, may_goto, tmp_path):
    """IPv6 packets with chains of extension headers (and IPv4 with AH): each protochain
    filter keeps what tcpdump keeps, whichever way the loop is bounded."""
    frames = _frames()
    for expr in LOOP_FILTERS:
        want = _tcpdump_accepts(expr, frames, tmp_path)
        assert want and len(want) < len(frames), (expr, want)       # the packets tell them apart
        paths = _loop_paths(rig, pf.compile_filter(expr, pf.LINKTYPE_ETHERNET), may_goto)
        try:
            for name, _, verdict in paths:
                got = {n for n, frame in enumerate(frames) if verdict(frame)}
                assert got == want, (expr, name)
        finally:
            for _, fd, _ in paths:
                os.close(fd)


@pytest.mark.parametrize("may_goto", _ways_to_bound_loops(), ids=lambda m: "may_goto" if m else "counted")
def test_protochain_follows_at_most_max_backward_jumps_headers(rig, may_goto):
    """The documented bound (libpcap's own since 1.10.7): a chain of MAX_BACKWARD_JUMPS extension
    headers is followed to its end, one more is not (the packet is rejected), and a packet
    that would keep libpcap 1.10.3's protochain going round for ever is rejected too."""
    prog = pf.compile_filter("ip6 protochain 17", pf.LINKTYPE_ETHERNET)
    limit = pt.MAX_BACKWARD_JUMPS
    # addresses :: > :: make the AH step (see _ipv6_chain) go round HBH, HBH, HBH, AH for ever
    frame = _ipv6_chain(1, [HBH, AH, DSTOPTS], TCP)
    endless = frame[:14 + 8] + bytes(32) + frame[14 + 40:]
    paths = _loop_paths(rig, prog, may_goto)
    try:
        for name, _, verdict in paths:
            assert verdict(_ipv6_chain(1, [DSTOPTS] * limit, UDP)) == 262144, name
            assert verdict(_ipv6_chain(1, [DSTOPTS] * (limit + 1), UDP)) == 0, name
            assert verdict(_ipv6_chain(1, [DSTOPTS] * (limit + 1), DSTOPTS)) == 0, name
            assert verdict(endless) == 0, name
    finally:
        for _, fd, _ in paths:
            os.close(fd)

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

    def load(self, prog: pf.ClassicProgram) -> int:
        code = pt.hook_filter_program(prog, scratch_fd=self.scratch, prog_array_fd=self.progs, index=2)
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
    for expr in load_expressions():
        try:
            prog = pf.compile_filter(expr, linktype)
        except PtcapError:
            assert linktype == pf.LINKTYPE_RAW, expr
            continue
        programs.append((expr, prog.offline(), rig.load(prog)))
    try:
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

"""The translated filter gives libpcap's verdict, packet by packet, run in this kernel.

Every expression is compiled by libpcap; the eBPF we generate from it is loaded and run with
BPF_PROG_TEST_RUN on each corpus packet, and the result is compared with pcap_offline_filter
on the same bytes. Honest-comparison notes (the kernel test run shapes what it accepts):
  * frames shorter than 14 bytes, and IPv4/IPv6 frames whose L3 header is shorter than 20/40
    bytes, are refused by BPF_PROG_TEST_RUN (EINVAL); they are counted, and the refusal is
    checked to be exactly that rule;
  * the kernel sees only the bytes passed, so libpcap gets wirelen = caplen = those bytes;
    frames over 3000 bytes are cut to 3000 on both sides (the test run takes < 1 page).
"""
from __future__ import annotations

import errno
import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ptcap.filter import asm
from ptcap.kernel import bpf
from ptcap.filter import compiler as pf
from ptcap.filter import translate as pt
from ptcap.filter import libpcap
from ptcap.filter.asm import Jmp, Reg, Size
from ptcap.errors import PtcapError

CORPUS = Path("/work/shared/corpus/filters")
OURS = Path(__file__).parent / "data" / "filter_expressions.txt"
MAX_RUN = 3000

pytestmark = pytest.mark.root      # BPF_PROG_TEST_RUN


def read_pcap(path: Path) -> list[tuple[bytes, int]]:
    raw = path.read_bytes()
    magic = struct.unpack_from("<I", raw)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), "a little-endian classic pcap (micro- or nanosecond)"
    out, off = [], 24
    while off < len(raw):
        _, _, caplen, wirelen = struct.unpack_from("<IIII", raw, off)
        out.append((raw[off + 16:off + 16 + caplen], wirelen))
        off += 16 + caplen
    return out


def load_expressions() -> list[str]:
    exprs = []
    for path in (CORPUS / "expressions.txt", OURS):
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                exprs.append(line)
    return exprs


def refused_by_test_run(frame: bytes) -> bool:
    """BPF_PROG_TEST_RUN's own rule for skb programs (see module docstring)."""
    if len(frame) < 14:
        return True
    ethertype = frame[12:14]
    return (ethertype == b"\x08\x00" and len(frame) < 14 + 20) or \
           (ethertype == b"\x86\xdd" and len(frame) < 14 + 40)


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    packets = read_pcap(CORPUS / "packets.pcap")
    assert len(packets) == 2636
    return [data[:MAX_RUN] for data, _ in packets]


@dataclass
class Tally:
    expressions: int = 0
    runs: int = 0
    accepted: int = 0
    refused: int = 0
    disagreements: list = field(default_factory=list)


def differential(exprs: list[str], linktype: int, prog_type: int, frames: list[bytes],
                 snaplen: int = 262144) -> Tally:
    """Compile each expression for linktype, run kernel vs libpcap on every frame."""
    tally = Tally()
    raw_ip = linktype == pf.LINKTYPE_RAW
    for expr in exprs:
        try:
            prog = pf.compile_filter(expr, linktype, snaplen)
        except PtcapError:
            assert raw_ip, f"{expr!r} must compile for Ethernet"
            continue                 # ether/vlan/llc...: libpcap refuses them on raw IP
        tally.expressions += 1
        offline = prog.offline()
        code = pt.verdict_program(prog, prog_type, may_goto=bpf.has_may_goto())   # as captures load it
        fd = bpf.prog_load(prog_type, code, name="ptcap_fltest")
        try:
            for n, frame in enumerate(frames):
                # cgroup_skb test runs take an Ethernet frame and start the program at the IP header
                mine = frame[14:] if raw_ip else frame
                try:
                    kernel, _ = bpf.prog_test_run(fd, frame)
                except bpf.BPFError as e:
                    assert e.errno == errno.EINVAL and refused_by_test_run(frame), (expr, n, e)
                    tally.refused += 1
                    continue
                assert not refused_by_test_run(frame), f"frame {n} unexpectedly accepted by test run"
                want = offline.verdict(mine, len(mine))
                if raw_ip:
                    want = int(want != 0)   # cgroup_skb programs return 0/1
                tally.runs += 1
                tally.accepted += want != 0
                if kernel != want:
                    tally.disagreements.append((expr, n, kernel, want))
        finally:
            os.close(fd)
    return tally


def test_ethernet_filters_agree_with_libpcap(frames):
    exprs = load_expressions()
    assert len(exprs) >= 200
    t = differential(exprs, pf.LINKTYPE_ETHERNET, bpf.ProgType.SCHED_CLS, frames)
    print(f"\nEthernet/tc: {t.expressions} expressions x {len(frames)} frames: {t.runs} runs, "
          f"{t.accepted} accepted, {t.refused} refused by the test run, "
          f"{len(t.disagreements)} disagreements")
    assert t.expressions == len(exprs)
    assert t.disagreements == []
    assert 0.02 * t.runs < t.accepted < 0.9 * t.runs   # the corpus exercises both verdicts


def test_raw_ip_filters_agree_with_libpcap(frames):
    ip_frames = [f for f in frames if f[12:14] in (b"\x08\x00", b"\x86\xdd")]
    t = differential(load_expressions(), pf.LINKTYPE_RAW, bpf.ProgType.CGROUP_SKB, ip_frames)
    print(f"\nraw IP/cgroup_skb: {t.expressions} expressions x {len(ip_frames)} frames: {t.runs} runs, "
          f"{t.accepted} accepted, {len(t.disagreements)} disagreements")
    assert t.expressions >= 200
    assert t.disagreements == []
    assert t.accepted > 0.02 * t.runs


def test_snap_length_is_the_verdict(frames):
    exprs = ["tcp", "udp port 53", "ip6 or arp", ""]
    t = differential(exprs, pf.LINKTYPE_ETHERNET, bpf.ProgType.SCHED_CLS, frames[:400], snaplen=96)
    assert t.disagreements == [] and t.accepted > 0
    prog = pf.compile_filter("tcp", pf.LINKTYPE_ETHERNET, 96)
    assert prog.insns[-2] == (0x06, 0, 0, 96)


# -- random classic programs: every opcode, edge cases libpcap's compiler rarely produces ----
_ALU_OPS = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0]
_JMP_OPS = [0x10, 0x20, 0x30, 0x40]


def random_program(rng: random.Random, length: int) -> list[tuple[int, int, int, int]]:
    def value() -> int:
        return rng.choice([0, 1, 2, 4, 6, 0x0800, 0x86dd, 0x11, 31, 32, 33, 0x7fffffff,
                           0xffffffff, rng.getrandbits(32), rng.randrange(64)])

    def offset(ind: bool = False) -> int:
        far = 0xfff00000 if ind else 0xffd00000   # ld abs at >= SKF_LL_OFF is refused (own test)
        return rng.choice([rng.randrange(80), rng.randrange(1600), 0x7ffffffe,
                           0x80000000, far, rng.randrange(16)])

    # scratch memory is defined before use (libpcap never reads an unwritten slot)
    prog = []
    for i in range(16):
        prog += [(0x00, 0, 0, value()), (0x02, 0, 0, i)]
    prog.append((0x01, 0, 0, value()))
    body = length - 1
    for i in range(body):
        left = body - i - 1                # instructions after this one, before the final ret
        kind = rng.randrange(12)
        size = rng.choice([0x00, 0x08, 0x10])
        if kind == 0:
            prog.append((0x00 | 0x20 | size, 0, 0, offset()))            # ld abs
        elif kind == 1:
            prog.append((0x00 | 0x40 | size, 0, 0, offset(ind=True)))            # ld ind
        elif kind == 2:
            prog.append(rng.choice([(0xb1, 0, 0, offset()), (0x80, 0, 0, 0), (0x81, 0, 0, 0),
                                    (0x00, 0, 0, value()), (0x01, 0, 0, value())]))
        elif kind == 3:
            prog.append((rng.choice([0x60, 0x61, 0x02, 0x03]), 0, 0, rng.randrange(16)))
        elif kind in (4, 5):
            op = rng.choice(_ALU_OPS)
            if op in (0x60, 0x70):
                k = rng.randrange(32)
            elif op in (0x30, 0x90):
                k = rng.choice([1, 2, 3, 7, 0x100, 0xffffffff])
            else:
                k = value()
            prog.append((0x04 | op, 0, 0, k))
        elif kind == 6:
            prog.append((0x04 | 0x08 | rng.choice(_ALU_OPS), 0, 0, 0))   # alu x (x may be 0 or >= 32)
        elif kind == 7:
            prog.append(rng.choice([(0x84, 0, 0, 0), (0x07, 0, 0, 0), (0x87, 0, 0, 0)]))  # neg tax txa
        elif kind in (8, 9, 10):
            op = rng.choice(_JMP_OPS) | rng.choice([0x00, 0x08])
            prog.append((0x05 | op, rng.randint(0, left), rng.randint(0, left), value()))
        elif kind == 11:
            if left and rng.random() < 0.5:
                prog.append((0x05, 0, 0, rng.randint(0, left)))          # ja
            else:
                prog.append(rng.choice([(0x06, 0, 0, 0), (0x06, 0, 0, value()), (0x16, 0, 0, 0)]))
    prog.append(rng.choice([(0x16, 0, 0, 0), (0x06, 0, 0, 0xffff)]))
    return prog


def test_random_classic_programs_agree_with_libpcap(frames):
    rng = random.Random(20261124)
    sample = [f for f in frames if not refused_by_test_run(f)]
    arp = next(f for f in sample if f[12:14] == b"\x08\x06")
    sample = rng.sample(sample, 40) + [arp[:14], arp[:15], arp[:17]]   # loads run off short frames
    runs = disagreements = 0
    verdicts = set()
    for _ in range(300):
        insns = random_program(rng, rng.randint(8, 40))
        prog = pf.ClassicProgram(insns)
        offline = prog.offline()
        fd = bpf.prog_load(bpf.ProgType.SCHED_CLS, pt.verdict_program(prog, bpf.ProgType.SCHED_CLS),
                           name="ptcap_fuzz")
        try:
            for frame in sample:
                kernel, _ = bpf.prog_test_run(fd, frame)
                want = offline.verdict(frame, len(frame))
                runs += 1
                verdicts.add(want != 0)
                if kernel != want:
                    disagreements += 1
                    assert kernel == want, (prog.dump(1), frame.hex())
        finally:
            os.close(fd)
    assert disagreements == 0 and verdicts == {True, False}


def test_ancillary_offsets_are_refused_with_a_reason():
    prog = pf.ClassicProgram([(0x30, 0, 0, 0xFFFFF000 + 4), (0x16, 0, 0, 0)])  # ldb [SKF_AD_PROTOCOL]
    with pytest.raises(PtcapError, match="ancillary"):
        pt.translate(prog)


# -- the entry program: filter, cb[0], tail call -----------------------------------------
MARK = 0x50000000


def marker_program(prog_type: int, expect_cb0: int) -> bytes:
    """Stands in for the capture program: tells the test it ran and what cb[0] held."""
    if prog_type == bpf.ProgType.SCHED_CLS:
        return asm.assemble([asm.ldx(Size.W, Reg.R0, Reg.R1, pt.SKB_CB0),
                             asm.alu64(asm.Alu.ADD, Reg.R0, imm=MARK), asm.exit_()])
    bad = asm.Label("bad")   # cgroup_skb may only return 0/1: 1 = reached with the right cb[0]
    return asm.assemble([asm.ldx(Size.W, Reg.R2, Reg.R1, pt.SKB_CB0), asm.mov64(Reg.R0, imm=0),
                         asm.jmp(Jmp.JNE, Reg.R2, bad, imm=expect_cb0), asm.mov64(Reg.R0, imm=1),
                         bad, asm.exit_()])


@pytest.mark.parametrize("prog_type", [bpf.ProgType.SCHED_CLS, bpf.ProgType.CGROUP_SKB])
def test_entry_program_tail_calls_with_the_snap_length(frames, prog_type):
    linktype = pf.LINKTYPE_ETHERNET if prog_type == bpf.ProgType.SCHED_CLS else pf.LINKTYPE_RAW
    prog = pf.compile_filter("tcp port 443", linktype, snaplen=96)
    tcp443 = next(f for f in frames if not refused_by_test_run(f) and f[12:14] == b"\x08\x00"
                  and prog.matches(f[14:] if linktype == pf.LINKTYPE_RAW else f))
    other = next(f for f in frames if not refused_by_test_run(f) and f[12:14] == b"\x08\x00"
                 and not prog.matches(f[14:] if linktype == pf.LINKTYPE_RAW else f))
    if prog_type == bpf.ProgType.SCHED_CLS:
        accept, reject, reached, failed = 7, -1, MARK + 96, 7
    else:
        accept, reject, reached, failed = 0, 1, 1, 0   # distinguishable only through the marker
    array = bpf.map_create(bpf.MapType.PROG_ARRAY, 4, 4, 1, name="ptcap_fltest")
    fds = [array]
    try:
        entry = bpf.prog_load(prog_type, pt.entry_program(
            prog, prog_type=prog_type, prog_array_fd=array, index=0,
            accept_ret=accept, reject_ret=reject), name="ptcap_entry")
        fds.append(entry)
        # empty slot: the tail call falls through to accept_ret
        assert bpf.prog_test_run(entry, tcp443)[0] == failed
        marker = bpf.prog_load(prog_type, marker_program(prog_type, 96), name="ptcap_marker")
        fds.append(marker)
        bpf.map_update(array, struct.pack("<I", 0), struct.pack("<I", marker))
        assert bpf.prog_test_run(entry, tcp443)[0] == reached
        if prog_type == bpf.ProgType.SCHED_CLS:
            assert bpf.prog_test_run(entry, other)[0] == 0xFFFFFFFF   # TC_ACT_UNSPEC
        else:
            # reject_ret=1 here too, so load a stricter entry to see the non-match path
            strict = bpf.prog_load(prog_type, pt.entry_program(
                prog, prog_type=prog_type, prog_array_fd=array, index=0, accept_ret=1,
                reject_ret=0), name="ptcap_entry")
            fds.append(strict)
            assert bpf.prog_test_run(strict, other)[0] == 0
            assert bpf.prog_test_run(strict, tcp443)[0] == 1
    finally:
        for fd in fds:
            os.close(fd)


def test_disassembly_is_readable():
    prog = pf.compile_filter("tcp port 80", pf.LINKTYPE_ETHERNET)
    text = pt.disassemble(pt.verdict_program(prog, bpf.ProgType.SCHED_CLS))
    assert "call bpf_skb_load_bytes#26" in text
    assert "r7 = be16 r7" in text
    assert "if w7 == 0x50 goto pc+" in text
    assert text.rstrip().endswith("exit")
    array_text = pt.disassemble(pt.entry_program(prog, prog_type=3, prog_array_fd=9, index=1,
                                                 accept_ret=-1, reject_ret=-1))
    assert "r2 = map[fd:9]" in array_text and "call bpf_tail_call#12" in array_text
    assert "*(u32 *)(r6 +48) = r0" in array_text

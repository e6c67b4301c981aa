"""Classic BPF (as libpcap compiled a pcap-filter expression) translated into eBPF.

translate() turns a classic program into eBPF that computes the same verdict from the packet
as the hook sees it; entry_program() wraps that into the small program attached at the hook,
which tail-calls the clang-built capture program for accepted packets; hook_filter_program()
reads the packet from a kernel hook's scratch buffer instead.

Register use in the generated code (helpers clobber R1-R5, so cBPF state lives in R6-R8):
    R6 = ctx (struct __sk_buff *)   R7 = A   R8 = X   R0 = verdict at the end
    stack: fp-8 = 4-byte load buffer, fp-72..fp-12 = scratch memory M[0..15],
           fp-80 = where loops (protochain) re-read A and X bytewise, fp-96 = loop rounds

Loops: libpcap's protochain jumps back once per IPv6 extension (or AH) header it skips. Each
loop here rejects the packet at its round MAX_BACKWARD_JUMPS + 1, counted on the stack, on every
kernel: libpcap's own interpreter rejects at that backward jump of a packet (bpf_filter.c since
1.10.7), counted over all its loops; counting per loop keeps the verifier's work linear in the
number of loops. The verifier must see each loop end: where it knows may_goto (Linux 6.9+) the
count is re-read bytewise, so the loop's state converges and may_goto bounds it; elsewhere the
count stays a known constant and the verifier follows every round up to the bound.
"""
from __future__ import annotations

from ptcap.errors import PtcapError
from ptcap.filter import asm, libpcap
from ptcap.filter.asm import Alu, Jmp, Label, Reg, Size
from ptcap.filter.compiler import ClassicProgram
from ptcap.kernel import records

# struct __sk_buff offsets (uapi, stable)
SKB_LEN = 0
SKB_CB0 = 48
SCHED_CLS, CGROUP_SKB = 3, 8      # bpf prog types the entry program is built for

# classic BPF opcode fields (pcap/bpf.h)
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = range(8)
_W, _H, _B = 0x00, 0x08, 0x10
_IMM, _ABS, _IND, _MEM, _LEN, _MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0
_K, _X, _A = 0x00, 0x08, 0x10
_TAX, _TXA = 0x00, 0x80
_JA, _JEQ, _JGT, _JGE, _JSET = 0x00, 0x10, 0x20, 0x30, 0x40
_MEMWORDS = 16
# Linux classic BPF reads ancillary data at these "negative" offsets (SKF_LL_OFF and up)
_SKF_LL_OFF = 0xFFE00000

_A_REG, _X_REG, _CTX = Reg.R7, Reg.R8, Reg.R6
_BUF_OFF = -8
_LAUNDER_OFF = -80
_KEY_OFF = -88
_ROUNDS_OFF = -96
MAX_BACKWARD_JUMPS = 64     # libpcap's bound; here: headers one protochain follows (see above)

# Kernel hooks (bpf/hooks.bpf.c): the packet's first bytes sit in a per-CPU struct
# ptcap_scratch, whose address the filter keeps in R9 (bpf/ptcap.h layout)
_SCRATCH = Reg.R9
SCRATCH_LEN, SCRATCH_AVAIL, SCRATCH_SNAP = (records.SCRATCH.offset[f] for f in ("len", "avail", "snap"))
SCRATCH_HDR, SCRATCH_DATA = records.SCRATCH.offset["data"], records.SCRATCH.field_size["data"]


def _mem_off(i: int) -> int:
    return -8 - 4 * (_MEMWORDS - i)


_SIZE = {_W: (4, Size.W), _H: (2, Size.H), _B: (1, Size.B)}
_ALU_OPS = {0x00: Alu.ADD, 0x10: Alu.SUB, 0x20: Alu.MUL, 0x30: Alu.DIV, 0x40: Alu.OR,
            0x50: Alu.AND, 0x60: Alu.LSH, 0x70: Alu.RSH, 0x90: Alu.MOD, 0xa0: Alu.XOR}
_JMP_OPS = {_JEQ: Jmp.JEQ, _JGT: Jmp.JGT, _JGE: Jmp.JGE, _JSET: Jmp.JSET}


def _always_rejects(code: int, k: int) -> bool:
    """A load beyond any packet or a division by constant zero: classic BPF returns 0 here."""
    cls, mode = code & 0x07, code & 0xE0
    if cls == _LD and mode in (_ABS, _IND) or (cls == _LDX and mode == _MSH):
        return 0x7FFFFFFF < k and not (mode != _IND and k >= _SKF_LL_OFF)
    return cls == _ALU and code & 0x08 == _K and code & 0xF0 in (0x30, 0x90) and k == 0


class _Translator:
    def __init__(self, prog: ClassicProgram, scratch_fd: int | None = None, *,
                 may_goto: bool = False) -> None:
        self.prog = prog
        self.scratch_fd = scratch_fd        # packet in a scratch map value, not an skb
        self.may_goto = may_goto            # the kernel knows the may_goto instruction
        self.out: list[asm.Item] = []
        self.reject = Label("reject")
        self.done = Label("done")

    def label(self, i: int) -> Label:
        return Label(f"c{i}")

    def emit(self, *items: asm.Item | list[asm.Insn]) -> None:
        for item in items:
            if isinstance(item, list):
                self.out.extend(item)
            else:
                self.out.append(item)

    def bad(self, i: int, why: str) -> PtcapError:
        code, jt, jf, k = self.prog.insns[i]
        return PtcapError(f"cannot run this filter in the kernel: classic BPF instruction {i} "
                          f"({libpcap.insn_image((code, jt, jf, k), i).split(') ', 1)[-1].strip()}) {why}")

    def run(self) -> bytes:
        insns = self.prog.insns
        if not insns:
            raise PtcapError("empty classic BPF program")
        if insns[-1][0] & 0x07 != _RET:
            raise self.bad(len(insns) - 1, "is not a return: control could fall off the end")
        self.emit(asm.mov64(_CTX, Reg.R1))
        if self.scratch_fd is not None:
            self.emit(asm.st(Size.W, Reg.R10, _KEY_OFF, 0), asm.mov64(Reg.R2, Reg.R10),
                      asm.alu64(Alu.ADD, Reg.R2, imm=_KEY_OFF), asm.ld_map_fd(Reg.R1, self.scratch_fd),
                      asm.call(asm.Helper.map_lookup_elem), asm.jmp(Jmp.JEQ, Reg.R0, self.reject, imm=0),
                      asm.mov64(_SCRATCH, Reg.R0))
        self.emit(asm.mov32(_A_REG, imm=0), asm.mov32(_X_REG, imm=0))
        live = self.reachable()
        # loops (protochain): the targets of backward jumps, each one's rounds counted apart
        heads = {(i + 1 + k) & 0xFFFFFFFF for i, (c, _, _, k) in enumerate(insns)
                 if i in live and c & 0x07 == _JMP and c & 0xF0 == _JA and (i + 1 + k) & 0xFFFFFFFF <= i}
        if heads:       # also for a jump into a loop's middle: the count is never unset
            self.emit(self.count_rounds_from_zero())
        if any(c & 0x07 in (_ST, _STX) or (c & 0x07 in (_LD, _LDX) and c & 0xE0 == _MEM)
               for c, *_ in insns):
            # M[] starts at zero (libpcap never reads a slot before writing it, but the verifier must know)
            for off in range(_mem_off(0), _BUF_OFF, 8):
                self.emit(asm.st(Size.DW, Reg.R10, off, 0))
        for i, insn in enumerate(insns):
            if i in live:       # the verifier refuses unreachable code; cBPF may contain some
                self.emit(self.label(i))
                if i in heads:  # entered from before: a new loop; its back edge skips this
                    self.emit(*self.count_rounds_from_zero(), self.round(i))
                self.one(i, *insn)
        if any(isinstance(x, asm.Insn) and x.off == self.reject for x in self.out):
            self.emit(self.reject, asm.mov64(Reg.R0, imm=0))   # the verifier refuses unreachable code
        self.emit(self.done)
        try:
            return asm.assemble(self.out)
        except ValueError as e:
            raise PtcapError(f"filter too large for the kernel: {e}") from None

    def reachable(self) -> set[int]:
        insns, seen, todo = self.prog.insns, set(), [0]
        while todo:
            i = todo.pop()
            if i in seen or i >= len(insns):
                continue
            seen.add(i)
            code, jt, jf, k = insns[i]
            if code & 0x07 == _RET or _always_rejects(code, k):
                continue
            if code & 0x07 == _JMP:
                todo += [(i + 1 + k) & 0xFFFFFFFF] if code & 0xF0 == _JA else [i + 1 + jt, i + 1 + jf]
            else:
                todo.append(i + 1)
        return seen

    def target(self, i: int, rel: int) -> Label:
        t = (i + 1 + rel) & 0xFFFFFFFF      # 'ja' may wrap around: a backward jump
        if t >= len(self.prog.insns):
            raise self.bad(i, "jumps past the end of the program")
        return self.label(t)

    def load(self, i: int, size_bits: int, dst: int, mode: int, k: int) -> None:
        """dst = big-endian packet bytes at k (or X + k); out of bounds -> verdict 0."""
        nbytes, size = _SIZE[size_bits]
        if mode == _ABS:
            if k >= _SKF_LL_OFF:
                raise self.bad(i, "reads Linux ancillary data (a negative offset), which ptcap does not emulate")
            if k > 0x7FFFFFFF:      # beyond any packet: classic BPF rejects
                self.emit(asm.ja(self.reject))
                return
            self.emit(asm.mov32(Reg.R2, imm=k))
        else:
            if k > 0x7FFFFFFF:
                self.emit(asm.ja(self.reject))
                return
            # X + k without 32-bit wrap-around, as libpcap's bounds check sees it
            self.emit(asm.mov64(Reg.R2, _X_REG), asm.alu64(Alu.ADD, Reg.R2, imm=k),
                      asm.jmp(Jmp.JGT, Reg.R2, self.reject, imm=0x7FFFFFFF))
        if self.scratch_fd is not None:
            # within the bytes copied, and (for the verifier) within the map value
            self.emit(asm.mov64(Reg.R3, Reg.R2), asm.alu64(Alu.ADD, Reg.R3, imm=nbytes),
                      asm.ldx(Size.W, Reg.R4, _SCRATCH, SCRATCH_AVAIL),
                      asm.jmp(Jmp.JGT, Reg.R3, self.reject, Reg.R4),
                      asm.jmp(Jmp.JGT, Reg.R2, self.reject, imm=SCRATCH_DATA - nbytes),
                      asm.mov64(Reg.R3, _SCRATCH), asm.alu64(Alu.ADD, Reg.R3, Reg.R2),
                      asm.ldx(size, dst, Reg.R3, SCRATCH_HDR))
            if nbytes > 1:
                self.emit(asm.to_be(dst, nbytes * 8))
            return
        self.emit(asm.mov64(Reg.R1, _CTX), asm.mov64(Reg.R3, Reg.R10),
                  asm.alu64(Alu.ADD, Reg.R3, imm=_BUF_OFF), asm.mov64(Reg.R4, imm=nbytes),
                  asm.call(asm.Helper.skb_load_bytes),
                  asm.jmp(Jmp.JSLT, Reg.R0, self.reject, imm=0),
                  asm.ldx(size, dst, Reg.R10, _BUF_OFF))
        if nbytes > 1:
            self.emit(asm.to_be(dst, nbytes * 8))

    def one(self, i: int, code: int, jt: int, jf: int, k: int) -> None:
        cls = code & 0x07
        if cls in (_LD, _LDX):
            dst = _A_REG if cls == _LD else _X_REG
            mode, size = code & 0xE0, code & 0x18
            if mode == _IMM:
                self.emit(asm.mov32(dst, imm=k))
            elif mode == _MEM:
                self._check_mem(i, k)
                self.emit(asm.ldx(Size.W, dst, Reg.R10, _mem_off(k)))
            elif mode == _LEN and self.scratch_fd is not None:
                self.emit(asm.ldx(Size.W, dst, _SCRATCH, SCRATCH_LEN))
            elif mode == _LEN:
                self.emit(asm.ldx(Size.W, dst, _CTX, SKB_LEN))
            elif cls == _LD and mode in (_ABS, _IND) and size in _SIZE:
                self.load(i, size, dst, mode, k)
            elif cls == _LDX and mode == _MSH and size == _B:
                self.load(i, _B, dst, _ABS, k)
                if not _always_rejects(code, k):
                    self.emit(asm.alu32(Alu.AND, dst, imm=0xF), asm.alu32(Alu.LSH, dst, imm=2))
            else:
                raise self.bad(i, "is not a valid load")
        elif cls in (_ST, _STX):
            self._check_mem(i, k)
            self.emit(asm.stx(Size.W, Reg.R10, _mem_off(k), _A_REG if cls == _ST else _X_REG))
        elif cls == _ALU:
            self.alu(i, code & 0xF0, code & 0x08, k)
        elif cls == _JMP:
            op = code & 0xF0
            if op == _JA:
                target = self.target(i, k)
                if int(target.name[1:]) <= i:
                    self.back_edge()
                    target = self.round(int(target.name[1:]))
                self.emit(asm.ja(target))
                return
            if op not in _JMP_OPS:
                raise self.bad(i, "is not a valid jump")
            t, f = self.target(i, jt), self.target(i, jf)
            src = _X_REG if code & 0x08 else None
            if jt == 0 and jf == 0:
                return
            if jf == 0:
                self.emit(asm.jmp(_JMP_OPS[op], _A_REG, t, src, k, wide=False))
            elif jt == 0:
                self.emit(asm.jmp(_JMP_OPS[op], _A_REG, self.label(i + 1), src, k, wide=False), asm.ja(f))
            else:
                self.emit(asm.jmp(_JMP_OPS[op], _A_REG, t, src, k, wide=False), asm.ja(f))
        elif cls == _RET:
            rval = code & 0x18
            if rval == _K:
                if k == 0:
                    self.emit(asm.ja(self.reject))
                    return
                self.emit(asm.mov32(Reg.R0, imm=k))
            elif rval == _A:
                self.emit(asm.mov32(Reg.R0, _A_REG))
            else:
                self.emit(asm.mov32(Reg.R0, _X_REG))
            self.emit(asm.ja(self.done))
        else:  # MISC
            if code & 0xF8 == _TAX:
                self.emit(asm.mov32(_X_REG, _A_REG))
            elif code & 0xF8 == _TXA:
                self.emit(asm.mov32(_A_REG, _X_REG))
            else:
                raise self.bad(i, "is not a valid misc instruction")

    def alu(self, i: int, op: int, src_x: int, k: int) -> None:
        a = _A_REG
        if op == 0x80:                                   # NEG
            self.emit(asm.Insn(asm.Class.ALU | Alu.NEG, a))
            return
        if op not in _ALU_OPS:
            raise self.bad(i, "is not a valid ALU operation")
        ebpf_op = _ALU_OPS[op]
        if not src_x:
            if ebpf_op in (Alu.DIV, Alu.MOD) and k == 0:
                self.emit(asm.ja(self.reject))           # classic BPF: division by zero rejects
            elif ebpf_op in (Alu.LSH, Alu.RSH):
                self.emit(asm.alu32(ebpf_op, a, imm=k & 31))  # libpcap shifts in C: x86 masks the count
            else:
                self.emit(asm.alu32(ebpf_op, a, imm=k))
            return
        if ebpf_op in (Alu.DIV, Alu.MOD):
            self.emit(asm.jmp(Jmp.JEQ, _X_REG, self.reject, imm=0, wide=False))
        elif ebpf_op in (Alu.LSH, Alu.RSH):
            # libpcap: a shift by X >= 32 gives 0
            ok = Label(f"shift{i}")
            self.emit(asm.jmp(Jmp.JLT, _X_REG, ok, imm=32, wide=False), asm.mov32(a, imm=0),
                      asm.ja(self.label(i + 1)), ok)
        self.emit(asm.alu32(ebpf_op, a, _X_REG))

    def round(self, head: int) -> Label:
        return Label(f"round{head}")

    def count_rounds_from_zero(self) -> list[asm.Insn]:
        # a known 0: the verifier checks the bound against it (6.1 without may_goto)
        return [asm.mov64(Reg.R2, imm=0), asm.stx(Size.DW, Reg.R10, _ROUNDS_OFF, Reg.R2)]

    def back_edge(self) -> None:
        """Count a round of a loop, rejecting past MAX_BACKWARD_JUMPS (see the module's doc)."""
        rounds = Reg.R2
        self.emit(asm.ldx(Size.W, rounds, Reg.R10, _ROUNDS_OFF))
        if self.may_goto:
            self.launder(rounds)
        self.emit(asm.jmp(Jmp.JGE, rounds, self.reject, imm=MAX_BACKWARD_JUMPS, wide=False),
                  asm.alu32(Alu.ADD, rounds, imm=1),
                  asm.stx(Size.W, Reg.R10, _ROUNDS_OFF, rounds))
        if self.may_goto:
            self.emit(asm.may_goto(self.reject))
        # A and X re-read bytewise: the verifier forgets their ranges, each round looks alike
        for reg in (_A_REG, _X_REG):
            self.launder(reg)

    def launder(self, reg: int) -> None:
        self.emit(asm.stx(Size.W, Reg.R10, _LAUNDER_OFF, reg),
                  asm.ldx(Size.B, reg, Reg.R10, _LAUNDER_OFF))
        for n in (1, 2, 3):
            self.emit(asm.ldx(Size.B, Reg.R1, Reg.R10, _LAUNDER_OFF + n),
                      asm.alu32(Alu.LSH, Reg.R1, imm=8 * n), asm.alu32(Alu.OR, reg, Reg.R1))

    def _check_mem(self, i: int, k: int) -> None:
        if k >= _MEMWORDS:
            raise self.bad(i, f"uses scratch memory slot {k} (only 0-15 exist)")


def translate(prog: ClassicProgram, *, may_goto: bool = False) -> bytes:
    """eBPF computing prog's verdict: expects ctx in R1, leaves the verdict in R0 and
    ctx in R6, and ends by falling through to whatever code is appended after it.
    may_goto: the kernel knows that instruction (ptcap.kernel.bpf.has_may_goto()); without
    it a loop costs the verifier more, the verdicts are the same."""
    return _Translator(prog, may_goto=may_goto).run()


def _tail_call(prog_array_fd: int, index: int) -> list[asm.Insn]:
    """bpf_tail_call(ctx, prog_array, index): falls through only if the slot is empty."""
    return [asm.mov64(Reg.R1, _CTX), *asm.ld_map_fd(Reg.R2, prog_array_fd), asm.mov64(Reg.R3, imm=index),
            asm.call(asm.Helper.tail_call)]


def hook_filter_program(prog: ClassicProgram, *, scratch_fd: int, prog_array_fd: int,
                        index: int, may_goto: bool = False) -> bytes:
    """The filter of a kernel hook (bpf/hooks.bpf.c): judge the packet the hook program
    copied into the scratch map, put the verdict (snap length) in its `snap` and tail-call
    the emit program; return 0 either way (tracing programs' return value is ignored)."""
    done = Label("out")
    tail = [
        asm.jmp(Jmp.JEQ, Reg.R0, done, imm=0),
        asm.stx(Size.W, _SCRATCH, SCRATCH_SNAP, Reg.R0),
        *_tail_call(prog_array_fd, index),
        done,
        asm.mov64(Reg.R0, imm=0),
        asm.exit_(),
    ]
    return _Translator(prog, scratch_fd, may_goto=may_goto).run() + asm.assemble(tail)


def verdict_program(prog: ClassicProgram, prog_type: int, *, may_goto: bool = False) -> bytes:
    """A loadable program returning the classic BPF verdict (for tests and debugging).

    SCHED_CLS returns the raw verdict (the snap length); CGROUP_SKB programs may only
    return 0 or 1, so there the verdict is reduced to accept (1) / reject (0).
    """
    tail: list[asm.Item] = []
    if prog_type == CGROUP_SKB:
        tail = [asm.jmp(Jmp.JEQ, Reg.R0, Label("out"), imm=0), asm.mov64(Reg.R0, imm=1), Label("out")]
    return translate(prog, may_goto=may_goto) + asm.assemble(tail + [asm.exit_()])


def entry_program(prog: ClassicProgram, *, prog_type: int, prog_array_fd: int, index: int,
                  accept_ret: int, reject_ret: int, cb_values: tuple[int, ...] = (),
                  may_goto: bool = False) -> bytes:
    """The program attached at the hook: filter, then tail-call the capture program.

    An accepted packet's verdict (the filter's snap length) goes to __sk_buff.cb[0], and
    `cb_values` (constants of this attachment, at most 4) to cb[1], cb[2], ...;
    tc and cgroup_skb programs may both write cb[0..4].
    """
    del prog_type
    if len(cb_values) > 4:
        raise ValueError("__sk_buff.cb has room for 4 values after the verdict")
    reject = Label("reject")
    tail = [
        asm.jmp(Jmp.JEQ, Reg.R0, reject, imm=0),
        asm.stx(Size.W, _CTX, SKB_CB0, Reg.R0),
        # through a register: a BPF_ST store into the context is refused before 6.3 (EACCES)
        *(insn for i, value in enumerate(cb_values)
          for insn in (asm.mov64(Reg.R0, imm=value), asm.stx(Size.W, _CTX, SKB_CB0 + 4 * (i + 1), Reg.R0))),
        *_tail_call(prog_array_fd, index),
        asm.mov64(Reg.R0, imm=accept_ret),      # only if the tail call failed (empty slot)
        asm.exit_(),
        reject,
        asm.mov64(Reg.R0, imm=reject_ret),
        asm.exit_(),
    ]
    return translate(prog, may_goto=may_goto) + asm.assemble(tail)


def disassemble(insns: bytes) -> str:
    return asm.disassemble(insns)

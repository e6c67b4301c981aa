"""An eBPF assembler and disassembler: enough to build the pcap-filter entry program at run time.

Instructions are 8 bytes (opcode, dst:4|src:4, off:s16, imm:s32); ld_imm64 takes two slots.
Jumps may name a Label instead of an offset; assemble() resolves them.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_INSN = struct.Struct("<BBhi")


class Class(enum.IntEnum):
    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


class Size(enum.IntEnum):
    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18


class Mode(enum.IntEnum):
    IMM = 0x00
    MEM = 0x60


class Src(enum.IntEnum):
    K = 0x00
    X = 0x08


class Alu(enum.IntEnum):
    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90
    XOR = 0xa0
    MOV = 0xb0
    ARSH = 0xc0
    END = 0xd0


class Jmp(enum.IntEnum):
    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xa0
    JLE = 0xb0
    JSLT = 0xc0
    JSLE = 0xd0
    JCOND = 0xe0      # with src_reg 0: may_goto (Linux 6.9+)


class Reg(enum.IntEnum):
    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10


class Helper(enum.IntEnum):
    map_lookup_elem = 1
    tail_call = 12
    skb_load_bytes = 26


END_TO_BE = 0x08            # BPF_END source bit: convert to big-endian
PSEUDO_MAP_FD = 1           # ld_imm64 src_reg: imm is a map fd


@dataclass(frozen=True, slots=True)
class Label:
    name: str


@dataclass(slots=True)
class Insn:
    """One instruction; off may be a Label (jumps) until assembled."""

    code: int
    dst: int = 0
    src: int = 0
    off: int | Label = 0
    imm: int = 0

    def encode(self) -> bytes:
        if isinstance(self.off, Label):
            raise ValueError(f"unresolved label {self.off.name}")
        return _INSN.pack(self.code, (self.src << 4) | self.dst, self.off, _s32(self.imm))

    @property
    def slots(self) -> int:
        return 2 if self.code == (Class.LD | Size.DW | Mode.IMM) else 1


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


# -- constructors -------------------------------------------------------------------------
def alu32(op: Alu, dst: int, src: int | None = None, imm: int = 0) -> Insn:
    """32-bit ALU: dst op= src (register) or dst op= imm when src is None."""
    if src is None:
        return Insn(Class.ALU | op | Src.K, dst, 0, 0, imm)
    return Insn(Class.ALU | op | Src.X, dst, src)


def alu64(op: Alu, dst: int, src: int | None = None, imm: int = 0) -> Insn:
    if src is None:
        return Insn(Class.ALU64 | op | Src.K, dst, 0, 0, imm)
    return Insn(Class.ALU64 | op | Src.X, dst, src)


def mov64(dst: int, src: int | None = None, imm: int = 0) -> Insn:
    return alu64(Alu.MOV, dst, src, imm)


def mov32(dst: int, src: int | None = None, imm: int = 0) -> Insn:
    return alu32(Alu.MOV, dst, src, imm)


def to_be(dst: int, bits: int) -> Insn:
    """dst = htobe{bits}(dst), upper bits cleared."""
    return Insn(Class.ALU | Alu.END | END_TO_BE, dst, 0, 0, bits)


def ldx(size: Size, dst: int, src: int, off: int) -> Insn:
    return Insn(Class.LDX | Mode.MEM | size, dst, src, off)


def stx(size: Size, dst: int, off: int, src: int) -> Insn:
    return Insn(Class.STX | Mode.MEM | size, dst, src, off)


def st(size: Size, dst: int, off: int, imm: int) -> Insn:
    return Insn(Class.ST | Mode.MEM | size, dst, 0, off, imm)


def jmp(op: Jmp, dst: int, target: int | Label, src: int | None = None, imm: int = 0,
        *, wide: bool = True) -> Insn:
    """Conditional jump; wide=False compares the low 32 bits only (BPF_JMP32)."""
    cls = Class.JMP if wide else Class.JMP32
    if src is None:
        return Insn(cls | op | Src.K, dst, 0, target, imm)
    return Insn(cls | op | Src.X, dst, src, target)


def ja(target: int | Label) -> Insn:
    return Insn(Class.JMP | Jmp.JA, 0, 0, target)


def may_goto(target: int | Label) -> Insn:
    """Fall through while the kernel's loop budget lasts, else jump: a loop the verifier accepts."""
    return Insn(Class.JMP | Jmp.JCOND, 0, 0, target)


def call(helper: int) -> Insn:
    return Insn(Class.JMP | Jmp.CALL, 0, 0, 0, int(helper))


def exit_() -> Insn:
    return Insn(Class.JMP | Jmp.EXIT)


def ld_imm64(dst: int, value: int) -> list[Insn]:
    value &= 0xFFFFFFFFFFFFFFFF
    return [Insn(Class.LD | Size.DW | Mode.IMM, dst, 0, 0, value & 0xFFFFFFFF),
            Insn(0, 0, 0, 0, value >> 32)]


def ld_map_fd(dst: int, fd: int) -> list[Insn]:
    return [Insn(Class.LD | Size.DW | Mode.IMM, dst, PSEUDO_MAP_FD, 0, fd), Insn(0)]


# -- assembly -----------------------------------------------------------------------------
Item = Insn | Label


def assemble(items: list[Item]) -> bytes:
    """Resolve labels (each Label item marks the position of the next instruction) and encode."""
    where: dict[str, int] = {}
    pc = 0
    for item in items:
        if isinstance(item, Label):
            if item.name in where:
                raise ValueError(f"label {item.name} defined twice")
            where[item.name] = pc
        else:
            pc += 1
    out = bytearray()
    pc = 0
    for item in items:
        if isinstance(item, Label):
            continue
        insn = item
        if isinstance(insn.off, Label):
            if insn.off.name not in where:
                raise ValueError(f"undefined label {insn.off.name}")
            rel = where[insn.off.name] - pc - 1
            if not -0x8000 <= rel <= 0x7FFF:
                raise ValueError(f"jump to {insn.off.name} is too far ({rel} instructions)")
            insn = Insn(insn.code, insn.dst, insn.src, rel, insn.imm)
        out += insn.encode()
        pc += 1
    return bytes(out)


def decode(code: bytes) -> list[Insn]:
    if len(code) % 8:
        raise ValueError("eBPF code length is not a multiple of 8")
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = _INSN.unpack_from(code, i)
        out.append(Insn(op, regs & 0xF, regs >> 4, off, imm))
    return out


# -- disassembly (bpftool's "xlated" style) ----------------------------------------------
_ALU_SYM = {Alu.ADD: "+=", Alu.SUB: "-=", Alu.MUL: "*=", Alu.DIV: "/=", Alu.OR: "|=",
            Alu.AND: "&=", Alu.LSH: "<<=", Alu.RSH: ">>=", Alu.MOD: "%=", Alu.XOR: "^=",
            Alu.MOV: "=", Alu.ARSH: "s>>="}
_JMP_SYM = {Jmp.JEQ: "==", Jmp.JGT: ">", Jmp.JGE: ">=", Jmp.JSET: "&", Jmp.JNE: "!=",
            Jmp.JSGT: "s>", Jmp.JSGE: "s>=", Jmp.JLT: "<", Jmp.JLE: "<=", Jmp.JSLT: "s<",
            Jmp.JSLE: "s<="}
_SIZE_C = {Size.W: "u32", Size.H: "u16", Size.B: "u8", Size.DW: "u64"}


def _helper_name(n: int) -> str:
    try:
        return f"bpf_{Helper(n).name}#{n}"
    except ValueError:
        return f"#{n}"


def _imm(v: int) -> str:
    return f"{v:#x}" if v >= 0 else f"-{-v:#x}"


def _one(insn: Insn, pc: int, nxt: Insn | None) -> str:
    cls, op = insn.code & 0x07, insn.code & 0xF0
    d, s = insn.dst, insn.src
    if cls in (Class.ALU, Class.ALU64):
        r = "w" if cls == Class.ALU else "r"
        if op == Alu.END:
            kind = "be" if insn.code & END_TO_BE else "le"
            return f"r{d} = {kind}{insn.imm} r{d}"
        if op == Alu.NEG:
            return f"{r}{d} = -{r}{d}"
        rhs = f"{r}{s}" if insn.code & Src.X else _imm(insn.imm)
        return f"{r}{d} {_ALU_SYM.get(op, '?=')} {rhs}"
    if cls in (Class.JMP, Class.JMP32):
        if op == Jmp.EXIT:
            return "exit"
        if op == Jmp.CALL:
            return f"call {_helper_name(insn.imm)}"
        if op == Jmp.JA:
            return f"goto pc{insn.off:+d}"
        if op == Jmp.JCOND:
            return f"may_goto pc{insn.off:+d}"
        r = "w" if cls == Class.JMP32 else "r"
        rhs = f"{r}{s}" if insn.code & Src.X else _imm(insn.imm)
        return f"if {r}{d} {_JMP_SYM.get(op, '?')} {rhs} goto pc{insn.off:+d}"
    size = _SIZE_C[Size(insn.code & 0x18)]
    if cls == Class.LDX:
        return f"r{d} = *({size} *)(r{s} {insn.off:+d})"
    if cls == Class.STX:
        return f"*({size} *)(r{d} {insn.off:+d}) = r{s}"
    if cls == Class.ST:
        return f"*({size} *)(r{d} {insn.off:+d}) = {_imm(insn.imm)}"
    if insn.code == (Class.LD | Size.DW | Mode.IMM):
        if s == PSEUDO_MAP_FD:
            return f"r{d} = map[fd:{insn.imm}]"
        hi = nxt.imm & 0xFFFFFFFF if nxt else 0
        return f"r{d} = {(hi << 32) | (insn.imm & 0xFFFFFFFF):#x} ll"
    return f"<unknown opcode {insn.code:#04x}>"


def disassemble(code: bytes) -> str:
    """One line per instruction: '  pc: (op) text', as bpftool prints xlated programs."""
    insns = decode(code)
    lines = []
    pc = 0
    while pc < len(insns):
        insn = insns[pc]
        nxt = insns[pc + 1] if pc + 1 < len(insns) else None
        lines.append(f"{pc:4d}: ({insn.code:02x}) {_one(insn, pc, nxt)}")
        pc += insn.slots
    return "\n".join(lines) + "\n"

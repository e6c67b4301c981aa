"""pcap-filter(7) expressions: libpcap compiles them (pcap_compile on a dead handle of the
link type the program will see), for live captures, kernel hooks, -r and -d alike; the
classic program is then translated into eBPF by ptcap.filter.translate."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from ptcap.filter import libpcap
from ptcap.kernel.records import LinkType
from ptcap.errors import PtcapError

LINKTYPE_ETHERNET, LINKTYPE_RAW = LinkType.ETHERNET, LinkType.RAW


@dataclass
class ClassicProgram:
    """A classic BPF program as libpcap compiled it."""

    insns: list[tuple[int, int, int, int]]          # (code, jt, jf, k)
    linktype: int = LINKTYPE_ETHERNET
    snaplen: int = 262144
    expression: str = field(default="", compare=False)

    def dump(self, level: int) -> str:
        """The program as tcpdump -d (1), -dd (2) or -ddd (3) prints it."""
        if level >= 3:
            lines = [str(len(self.insns))] + [f"{c} {jt} {jf} {k}" for c, jt, jf, k in self.insns]
        elif level == 2:
            lines = [f"{{ {c:#x}, {jt}, {jf}, 0x{k:08x} }}," for c, jt, jf, k in self.insns]
        else:
            lines = [libpcap.insn_image(insn, n) for n, insn in enumerate(self.insns)]
        return "".join(line + "\n" for line in lines)

    _offline: libpcap.BpfProgram | None = field(default=None, init=False, repr=False, compare=False)

    def offline(self) -> libpcap.BpfProgram:
        """The program as libpcap runs it in user space (pcap_offline_filter), made once."""
        if self._offline is None:
            self._offline = libpcap.BpfProgram.from_instructions(self.insns)
        return self._offline

    def matches(self, data: bytes, wire_len: int | None = None) -> bool:
        """libpcap's own verdict on one packet."""
        return self.offline().matches(data, len(data) if wire_len is None else wire_len)


def compile_filter(expression: str, linktype: int, snaplen: int = 262144,
                   optimize: bool = True, file_order: str | None = None) -> ClassicProgram:
    """The one compile of a pcap-filter expression, for live captures, hooks, -r and -d:
    pcap_compile(optimize=1, or 0 for -O) on a dead handle of the link type; PtcapError in
    tcpdump's words.

    Netmask 0, as tcpdump 4.99 passes it live and with -r (it looks the netmask up only with
    -f): 'ip broadcast' compiles and -d output is byte-identical to tcpdump's.
    With `file_order` (the byte order of a file being read, "<" or ">"), on a savefile handle
    as tcpdump -r compiles: for DLT_NULL the program differs.
    """
    handle = libpcap.open_dead(linktype, snaplen) if file_order is None else \
        libpcap.open_savefile(linktype, snaplen, file_order)
    with handle:
        prog = libpcap.compile(handle, expression, optimize, netmask=0)
    try:
        insns = prog.instructions()
    finally:
        prog.free()
    return ClassicProgram(insns, linktype, snaplen, expression)


def read_filter_file(path: str | os.PathLike) -> str:
    """tcpdump -F: the whole file is the expression; '#' starts a comment up to end of line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PtcapError(f"can't open {path}: {e.strerror}") from None
    text = raw.decode(errors="replace")
    # tcpdump blanks each comment with spaces (keeping the newline), so words either side stay apart
    out = []
    for line in text.split("\n"):
        cut = line.find("#")
        out.append(line if cut < 0 else line[:cut] + " " * (len(line) - cut))
    return "\n".join(out)


def compile_filters(expression: str, linktypes, snaplen: int = 262144,
                    optional=()) -> dict[int, ClassicProgram]:
    """The link-type rule: a filter is compiled for what byte 0 is where it runs (each
    capture interface's link type, RAW for cgroup_skb, the file's for -r, Ethernet and raw IP
    for a hook). For a link type in `optional` (a hook's raw-IP packets), an expression that
    cannot apply to it (ether, arp, vlan) rejects those packets instead of failing."""
    out = {}
    for linktype in linktypes:
        try:
            out[linktype] = compile_filter(expression, linktype, snaplen)
        except PtcapError:
            if linktype not in optional:
                raise
            out[linktype] = ClassicProgram(_REJECT_ALL, linktype, snaplen, expression)
    return out


_REJECT_ALL = [(0x06, 0, 0, 0)]                       # ret #0


def expression_from_args(args: argparse.Namespace) -> str:
    """The one -F reader: -F FILE wins over command-line words, as in tcpdump."""
    if getattr(args, "filter_file", None):
        return read_filter_file(args.filter_file)
    return " ".join(getattr(args, "expression", None) or [])

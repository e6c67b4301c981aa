"""-d/-dd/-ddd: the compiled classic program as tcpdump prints it; --debug-filter: the eBPF too."""
from __future__ import annotations

import argparse
import sys

from ptcap.filter import libpcap
from ptcap.filter.compiler import compile_filter, expression_from_args
from ptcap.filter.translate import disassemble, verdict_program
from ptcap.kernel.bpf import has_may_goto
from ptcap.kernel.interfaces import filter_linktype


def dump_main(args: argparse.Namespace) -> int:
    interfaces = getattr(args, "interfaces", None) or []
    backend = getattr(args, "backend", "tc") or "tc"
    expression = expression_from_args(args)
    if getattr(args, "read", None) is not None:     # -d -r FILE: for the file, as tcpdump
        linktype, snaplen, order = _file_link(args.read)
    else:
        order = None
        if not interfaces and backend == "tc":
            sys.stderr.write("Warning: assuming Ethernet\n")
            sys.stderr.flush()
        linktype = filter_linktype(interfaces[0] if interfaces else None, backend)
        snaplen = getattr(args, "snaplen", 262144) or 262144
        if snaplen <= 0 or snaplen > 262144:
            snaplen = 262144
    prog = compile_filter(expression, linktype, snaplen, optimize=not getattr(args, "no_optimize", False),
                          file_order=order)
    out = []
    if getattr(args, "dump_filter", 0):
        out.append(prog.dump(args.dump_filter))
    if getattr(args, "debug_filter", False):
        name = libpcap.datalink_name(linktype)[0]
        out.append(f"; eBPF for {'cgroup_skb' if backend == 'cgroup-skb' else 'tc'} (link type {name}): "
                   f"R6 = skb, R7 = A, R8 = X, verdict in R0\n")
        out.append(disassemble(verdict_program(prog, 0, may_goto=has_may_goto())))
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    return 0


def _file_link(path: str) -> tuple[int, int, str]:
    """The file's link type, snapshot length and byte order; the first two said as tcpdump
    says them on reading it."""
    from ptcap.formats.reader import is_stdin, open_capture
    reader, f = open_capture(path)
    if not is_stdin(f):
        f.close()
    try:
        name, desc = libpcap.datalink_name(reader.linktype)
        link = f"{name} ({desc})" if desc else name
    except Exception:       # noqa: BLE001 (a link type libpcap does not name: its number)
        link = str(reader.linktype)
    sys.stderr.write(f"reading from file {path}, link-type {link}, snapshot length {reader.snaplen}\n")
    sys.stderr.flush()
    return reader.linktype, reader.snaplen, reader.byte_order

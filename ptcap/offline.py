"""'ptcap -r FILE': read a capture, filter it offline with libpcap, print it as tcpdump does."""
from __future__ import annotations

import argparse
import sys

from .errors import PtcapError
from .printer import Printer, PrintOptions
from .reader import open_capture


def _expression(args: argparse.Namespace) -> str:
    if getattr(args, "filter_file", None):
        try:
            with open(args.filter_file) as f:
                # tcpdump drops '#' comments from -F files
                return " ".join(line.split("#", 1)[0] for line in f).strip()
        except OSError as e:
            raise PtcapError(f"can't open {args.filter_file}: {e.strerror}") from None
    return " ".join(getattr(args, "expression", None) or []).strip()


def read_file(args: argparse.Namespace) -> int:
    options = PrintOptions.from_args(args)
    reader, f = open_capture(args.read)
    try:
        from .libpcap import datalink_name
        try:
            name, desc = datalink_name(reader.linktype)
            link = f"{name} ({desc})" if desc else name
        except PtcapError:
            link = str(reader.linktype)
        sys.stderr.write(f"reading from file {args.read}, link-type {link}, snapshot length {reader.snaplen}\n")
        if reader.linktype == 276:
            sys.stderr.write("Warning: interface names might be incorrect\n")
        sys.stderr.flush()
        program = None
        expression = _expression(args)
        if expression:
            from .libpcap import compile_for
            program = compile_for(reader.linktype, expression, reader.snaplen)
        limit = args.count if getattr(args, "count", None) else 0
        count_only = getattr(args, "count_only", False)
        out = sys.stdout
        if not getattr(args, "line_buffered", False):
            try:
                out.reconfigure(line_buffering=False, write_through=False)
            except (AttributeError, ValueError):
                pass
        printer = Printer(options, out)
        write = out.write
        fmt = printer.format_packet
        line_buffered = getattr(args, "line_buffered", False)
        pending: list[str] = []  # write in batches: one write per packet costs more than the join
        matched = 0
        try:
            for pkt in reader:
                if program is not None and not program.matches(pkt.data, pkt.orig_len):
                    continue
                matched += 1
                if not count_only:
                    pending.append(fmt(pkt))
                    if line_buffered or len(pending) >= 256:
                        write("".join(pending))
                        pending.clear()
                        if line_buffered:
                            out.flush()
                if limit and matched >= limit:
                    break
        finally:
            if pending:
                write("".join(pending))
        out.flush()
        if count_only:
            sys.stdout.write(f"{matched} packet{'s' if matched != 1 else ''}\n")
        return 0
    finally:
        if f is not sys.stdin.buffer:
            f.close()

"""'ptcap -r FILE': read a capture, filter it offline with libpcap, print it as tcpdump does."""
from __future__ import annotations

import argparse
import sys

from ptcap.errors import PtcapError
from ptcap.filter.compiler import compile_filters, expression_from_args
from ptcap.pipeline.packet import Direction
from ptcap.formats.pcapng import PacketWriter
from ptcap.printer import Printer, PrintOptions
from ptcap.formats.reader import open_capture


def _selected(args: argparse.Namespace):
    """The process, container and direction selectors, applied to what the file says of each
    packet (its process comments, its direction flag); None when none was given."""
    pids, names, uids = set(args.pid or ()), set(args.pname or ()), set(args.uid or ())
    cid, cname, pod = args.container_id or "", args.container_name or "", args.pod_name or ""
    direction = {"in": Direction.IN, "out": Direction.OUT}.get(args.direction)
    if not (pids or names or uids or cid or cname or pod or direction):
        return None

    def keep(pkt) -> bool:
        if direction is not None and pkt.direction != direction:
            return False
        ctx = pkt.context
        if not (pids or names or uids or cid or cname or pod):
            return True
        if ctx is None or not ctx.pid:
            return False
        if (pids or names) and ctx.pid not in pids and ctx.comm not in names and ctx.tname not in names:
            return False
        if uids and ctx.uid not in uids:
            return False
        if cid and not (ctx.container_id and ctx.container_id.startswith(cid)):
            return False
        if cname and ctx.container_name != cname.lstrip("/"):
            return False
        if pod and f"{ctx.pod_name}.{ctx.pod_namespace or 'default'}" != pod:
            return False
        return True
    return keep


def _file_writer(args: argparse.Namespace, linktype: int, snaplen: int):
    """-r FILE -w OUT: where the selected packets are written again, as tcpdump does."""
    if args.write == "-":
        out = sys.stdout.buffer
    else:
        try:
            out = open(args.write, "wb")
        except OSError as e:
            raise PtcapError(f"{args.write}: {e.strerror}") from None
    return PacketWriter(out, args.write.endswith(".pcap"), linktype, snaplen,
                        nano=getattr(args, "ts_precision", "micro") == "nano")


def read_file(args: argparse.Namespace) -> int:
    options = PrintOptions.from_args(args)
    reader, f = open_capture(args.read)
    writer = None
    try:
        from ptcap.filter.libpcap import datalink_name
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
        expression = expression_from_args(args)
        if expression.strip():
            program = compile_filters(expression, (reader.linktype,), reader.snaplen)[reader.linktype]
        limit = args.count if getattr(args, "count", None) else 0
        count_only = getattr(args, "count_only", False)
        out = sys.stdout
        if not getattr(args, "line_buffered", False):
            try:
                out.reconfigure(line_buffering=False, write_through=False)
            except (AttributeError, ValueError):
                pass
        keep = _selected(args)
        if getattr(args, "write", None):
            writer = _file_writer(args, reader.linktype, reader.snaplen)
        printing = writer is None or (getattr(args, "print_too", False) and args.write != "-")
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
                if keep is not None and not keep(pkt):
                    continue
                matched += 1
                if writer is not None:
                    try:
                        writer.write(pkt)
                    except OSError as e:
                        raise PtcapError(f"{args.write}: {e.strerror}") from None
                if printing and not count_only:
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
        if writer is not None:
            try:
                writer.flush()
                if writer.out is not sys.stdout.buffer:
                    writer.out.close()
            except OSError as e:
                raise PtcapError(f"{args.write}: {e.strerror}") from None
        if count_only:
            sys.stdout.write(f"{matched} packet{'s' if matched != 1 else ''}\n")
        return 0
    finally:
        if f is not sys.stdin.buffer:
            f.close()

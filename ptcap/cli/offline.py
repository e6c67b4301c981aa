"""'ptcap -r FILE': tcpdump prints the file; ptcap adds the process information it carries."""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading

from ptcap.errors import PtcapError
from ptcap.filter.compiler import compile_filter, expression_from_args
from ptcap.sinks.tcpdump_child import PrintFlags, check_flags, child_user, spawn

# The reader, the fields and the decoder are imported where used: a file that tcpdump reads
# alone (classic pcap, the usual case) starts faster without them.


def _selected(args: argparse.Namespace):
    """The process, container and direction selectors, applied to what the file says of each
    packet (its process comments, its direction flag); None when none was given."""
    pids, names, uids = set(args.pid or ()), set(args.pname or ()), set(args.uid or ())
    cid, cname, pod = args.container_id or "", args.container_name or "", args.pod_name or ""
    direction = None
    if args.direction in ("in", "out"):
        from ptcap.pipeline.packet import Direction
        direction = {"in": Direction.IN, "out": Direction.OUT}[args.direction]
    if not (pids or names or uids or cid or cname or pod or direction):
        return None

    def keep(pkt) -> bool:
        if direction is not None and pkt.direction != direction:
            return False
        ctx = pkt.context
        if not (pids or names or uids or cid or cname or pod):
            return True
        if ctx is None:
            return False
        # either end of a local conversation, as the capture selected it (with -Q, its own)
        return matches(ctx) or (direction is None and ctx.peer is not None and matches(ctx.peer))

    def matches(ctx) -> bool:
        if not ctx.pid:
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


_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
                b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34"}


def read_file(args: argparse.Namespace) -> int:
    """Print a file with tcpdump. A file whose packets carry no process information (classic
    pcap; pcapng without ptcap's or ptcpdump's comments) goes to tcpdump as it is, with every
    flag and the filter: its output is tcpdump's by construction. Otherwise ptcap reads it,
    filters it, and feeds a tcpdump child packet by packet, adding its fields to the lines."""
    flags = PrintFlags.from_args(args)
    child_user(flags.user)              # -Z checked before anything is read
    parts = None                        # every part (no --context)
    if getattr(args, "context", None) is not None:
        from ptcap.sinks.lines import parts_from_args
        parts = parts_from_args(args)
    keep = _selected(args)
    if not getattr(args, "write", None) and keep is None:
        f, head, stream = _open_raw(args.read)
        if not flags.oneline and (head[:4] in _PCAP_MAGICS or (parts is not None and not parts) or
                                  (f is not None and not _has_context(f))):
            return _pass_through(args, flags, f, head, stream)
        if f is not None:
            f.close()
            return _decode_in_ptcap(args, flags, parts, keep, has_context=True)
        head, unmarked = _peek_link_type(head, stream)
        if unmarked:
            return _pass_through(args, flags, None, head, stream)
        return _decode_in_ptcap(args, flags, parts, keep, head, stream)
    return _decode_in_ptcap(args, flags, parts, keep)


class _Kept:
    """A stream whose bytes read are kept, to be sent again."""

    def __init__(self, f) -> None:
        self.f, self.kept = f, []

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.kept.append(data)
        return data

    def read1(self, n: int = -1) -> bytes:
        data = self.f.read1(n) if hasattr(self.f, "read1") else self.f.read(n)
        self.kept.append(data)
        return data


def _peek_link_type(head: bytes, stream) -> tuple[bytes, bool]:
    """pcapng on a pipe, read up to its first interface: (the bytes read, whether ptcap cannot
    add its fields to that link type's lines). Then tcpdump reads it all itself, as it reads a
    file without process information: ptcap's reader took C_HDLC, SLIP, 802.11 ... and refused
    to print them."""
    from ptcap.formats.reader import CaptureReader
    from ptcap.sinks.markers import MARKABLE
    kept = _Kept(stream)
    try:
        linktype = CaptureReader(kept, "-", head).linktype
    except PtcapError:
        linktype = None                 # ptcap's reader says it, as it did
    return head + b"".join(kept.kept), linktype is not None and linktype not in MARKABLE


def read_files(args: argparse.Namespace) -> int:
    """-V LIST: each file named in LIST (one a line) read as -r reads it, in turn."""
    try:
        with open(args.read_list, encoding="utf-8", errors="surrogateescape") as f:
            names = [line.rstrip("\r\n") for line in f]
    except IsADirectoryError:
        names = []
    except OSError as e:
        raise PtcapError(f"Unable to open file: {e.strerror}") from None
    if not names:
        raise PtcapError(f"Nothing in {args.read_list}")
    if getattr(args, "write", None) or getattr(args, "count_only", False):
        raise PtcapError("-V reads files to print them: with -w or --count, give one file with -r")
    for name in names:
        args.read = name
        if not name:
            raise PtcapError(": No such file or directory")
        status = read_file(args)
        if status:
            return status
    return 0


def _open_raw(path: str):
    """(the open file, its first bytes, None); for stdin or a pipe (a FIFO, `<(...)`), which
    cannot be read again from the start: (None, the bytes read from it, the stream)."""
    from ptcap.formats.reader import stdin
    if path == "-":
        return None, _read_some(stdin(), 4), stdin()
    try:
        f = open(path, "rb", buffering=0)
    except IsADirectoryError as e:      # libpcap opens it and fails on the read
        raise PtcapError(f"error reading dump file: {e.strerror}") from None
    except OSError as e:
        raise PtcapError(f"{path}: {e.strerror}") from None
    head = _read_some(f, 4)
    if not f.seekable():
        return None, head, f
    f.seek(0)
    return f, head, None


def _read_some(f, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _has_context(f) -> bool:
    """Does any packet of this pcapng file carry process information that ptcap can add to
    tcpdump's lines? (A read error is left for tcpdump to say; a link type ptcap has no
    marker for is said, and its lines are tcpdump's alone: they were none, exit 1.)"""
    from ptcap.formats.reader import CaptureReader
    from ptcap.sinks.markers import MARKABLE
    try:
        reader = CaptureReader(f, "")
        for pkt in reader:
            if pkt.context is not None:
                if pkt.linktype in MARKABLE:
                    return True
                if _unknown_to_libpcap(pkt.linktype):
                    return False        # tcpdump refuses it in its words: that one line
                sys.stderr.write(f"ptcap: link-type {pkt.linktype}: ptcap cannot add its fields to tcpdump's "
                                 "lines for this link type; they are tcpdump's alone\n")
                return False
    except PtcapError:
        return False
    finally:
        f.seek(0)
    return False


def _unknown_to_libpcap(linktype: int) -> bool:
    """A link type libpcap refuses to compile for: tcpdump says so and reads nothing."""
    try:
        compile_filter("", linktype)
    except PtcapError:
        return True
    return False


def _path_has_context(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.seekable() and _has_context(f)
    except OSError:
        return False


def _pass_through(args: argparse.Namespace, flags: PrintFlags, f, head: bytes, stream=None) -> int:
    """tcpdump reads the file itself (from a descriptor ptcap opened; from a pipe for stdin)."""
    argv = list(flags.argv)
    if flags.number:
        argv.append("-#")
    if getattr(args, "line_buffered", False):
        argv.append("-l")
    if getattr(args, "count", None) is not None:
        argv += ["-c", str(args.count)]
    if getattr(args, "count_only", False):
        argv.append("--count")
    argv += ["-r", "-"]
    expression = expression_from_args(args).strip()
    if expression:
        argv.append(expression)
    user = child_user(flags.user)
    sys.stdout.flush()
    stdin = f if f is not None else subprocess.PIPE
    proc = spawn(argv, user, stdin, sys.stdout.fileno(), subprocess.PIPE)
    if f is not None:
        f.close()
    feeder = None
    if proc.stdin is not None:
        feeder = threading.Thread(target=_feed, args=(proc.stdin, head, stream), daemon=True)
        feeder.start()
    name = args.read
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        if line.startswith("reading from file -,"):
            line = f"reading from file {name}," + line[len("reading from file -,"):]
        elif line.startswith("tcpdump: "):
            line = "ptcap: " + line[len("tcpdump: "):]
        sys.stderr.write(line)
        sys.stderr.flush()
    status = proc.wait()
    proc.stderr.close()
    if status < 0:
        raise PtcapError(f"tcpdump (the decoder) was killed by signal {-status}")
    return status                       # tcpdump's own: 14 when its output went away (| head)


def _feed(pipe, head: bytes, source) -> None:
    try:
        pipe.write(head)
        while True:
            chunk = source.read1(1 << 20) if hasattr(source, "read1") else source.read(1 << 20)
            if not chunk:
                break
            pipe.write(chunk)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _packets(reader):
    """The reader's packets; an error in the middle worded as tcpdump's (pcap_loop: ...)."""
    it = iter(reader)
    while True:
        try:
            pkt = next(it)
        except StopIteration:
            return
        except PtcapError as e:
            raise PtcapError(f"pcap_loop: {e}") from None
        yield pkt


def _decode_in_ptcap(args: argparse.Namespace, flags: PrintFlags, parts, keep, head: bytes = b"",
                     stream=None, has_context: bool = False) -> int:
    """`has_context`: the file is known to carry process information (read_file looked)."""
    from ptcap.cli.rewrite import LimitReached, Rewriter
    from ptcap.filter.libpcap import datalink_name
    from ptcap.formats.reader import CaptureReader, is_stdin, open_capture
    from ptcap.meta.context import Part
    from ptcap.sinks.blockfeed import BlockPrinter
    from ptcap.sinks.lines import Additions
    from ptcap.sinks.tcpdump import Decoder
    if parts is None:
        parts = Part.ALL
    if stream is not None and not is_stdin(stream):     # a pipe, its start read
        try:
            reader, f = CaptureReader(stream, args.read, head), stream
        except BaseException:
            stream.close()
            raise
    else:
        reader, f = open_capture(args.read, head)
    writer = None
    decoder = None
    try:
        try:
            name, desc = datalink_name(reader.linktype)
            link = f"{name} ({desc})" if desc else name
        except PtcapError:
            link = str(reader.linktype)
        sys.stderr.write(f"reading from file {args.read}, link-type {link}, snapshot length {reader.snaplen}\n")
        if reader.linktype == 276:
            sys.stderr.write("Warning: interface names might be incorrect\n")
        sys.stderr.flush()
        expression = expression_from_args(args).strip()
        # as tcpdump, before the first packet is read, and an empty filter too: libpcap refuses
        # a link type it does not know ("unknown data link type 65535 (min 104, max 289)")
        programs: dict[int, object] = {reader.linktype: compile_filter(
            expression, reader.linktype, reader.snaplen, file_order=reader.byte_order)}
        limit = args.count if getattr(args, "count", None) else 0
        count_only = getattr(args, "count_only", False)
        if getattr(args, "write", None):
            writer = Rewriter(args, reader.linktype, reader.snaplen, reader.linktype_ext)
        printing = not count_only and (writer is None or (getattr(args, "print_too", False) and args.write != "-"))
        # a file of ptcap's or ptcpdump's with processes in it: every packet's line says its
        # interface and direction, as when it was captured; packets of other files (and of
        # a pipe) without process information print as tcpdump's lines
        ours = reader.application.startswith(("ptcap", "ptcpdump")) and stream is None and \
            not is_stdin(f) and (has_context or _path_has_context(args.read))
        additions = Additions(parts, flags.verbose, live=ours, oneline=flags.oneline)
        start_ts, matched = None, 0
        if printing:
            check_flags(flags, child_user(flags.user), reader.linktype)
            sys.stdout.flush()
            # the file's own blocks, unless its snapshot length is below a marker's (the
            # child would refuse the marker): then packet by packet, under a larger one
            if not (expression or keep or limit or writer or stream is not None) and reader.format == "pcapng" \
                    and reader.snaplen >= 128:
                printer = BlockPrinter(reader, flags, additions, sys.stdout.buffer)
                matched = printer.run()
                sys.stdout.flush()
                if not printer.switched:
                    return 0
                start_ts = printer.last_ts or None  # the rest packet by packet (another link type)
            decoder = Decoder(flags, sys.stdout.buffer, reader.snaplen, lossless=True, start_ts=start_ts)
            decoder._number = matched
            if not f.seekable():
                _print_while_waiting(reader, decoder)
        try:
            for pkt in _packets(reader):
                if expression:
                    program = programs.get(pkt.linktype)
                    if program is None:
                        program = programs[pkt.linktype] = compile_filter(expression, pkt.linktype, reader.snaplen,
                                                                          file_order=reader.byte_order)
                    if not program.matches(pkt.data, pkt.orig_len):
                        continue
                if keep is not None and not keep(pkt):
                    continue
                matched += 1
                if writer is not None:
                    try:
                        writer.write(pkt)
                    except LimitReached as e:   # -G -W: the last file is done, as tcpdump ends
                        sys.stderr.write(f"{e}\n")
                        break
                if decoder is not None:
                    pre, suf, after = additions(pkt.context, pkt.ifname, pkt.direction)
                    decoder.put(pkt.ts_ns, pkt.linktype, pkt.data, pkt.orig_len, pre, suf, after)
                    if matched % 256 == 0:
                        decoder.wake()
                if limit and matched >= limit:
                    break
        finally:
            if decoder is not None:     # what was read before an error is printed
                d, decoder = decoder, None
                d.close()
        if writer is not None:
            w, writer = writer, None
            w.finish()
        if count_only:
            sys.stdout.write(f"{matched} packet{'s' if matched != 1 else ''}\n")
        return 0
    finally:
        if writer is not None:          # what was read before an error is kept
            try:
                writer.finish()
            except PtcapError:
                pass
        if not is_stdin(f):
            f.close()


def _print_while_waiting(reader, decoder) -> None:
    """A pipe (stdin, a FIFO): before a read that would wait, the lines of the packets read
    so far are printed, as tcpdump -r - prints a packet when it comes."""
    import select

    def wait(fd: int) -> None:
        decoder.wake()              # the packets to the child, then its lines pushed out
        decoder.wake()
        while not select.select([fd], [], [], 0)[0]:
            decoder.pump(0.2)       # its lines as they come, until the pipe has more
    reader.before_waiting(wait)

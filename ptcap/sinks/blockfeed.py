"""'ptcap -r FILE.pcapng' printed whole: one tcpdump child reads the file's own blocks as they
are (no packet is encoded again), with a marker block after every group of packets (see
sinks/child: a group is cut at tcpdump's -# numbers, a doubtful group is printed again packet
by packet); ptcap adds its fields to each packet's lines.

One thread feeds the child (the blocks between two markers go as one slice of the read
buffer), the caller's thread reads its output, cuts it and writes the lines.
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import io
import os
import struct
import subprocess
import sys
import threading

from ptcap.errors import PtcapError
from ptcap.formats.pcapng_reader import MixedLinkTypes
from ptcap.formats.reader import CaptureReader
from ptcap.sinks.child import GROUP, PIPE_SIZE, between_markers, calibrate, cut_group, numbered
from ptcap.sinks.markers import make_marker
from ptcap.sinks.merge import merge, merge_lines, per_packet, ts_words
from ptcap.sinks.tcpdump import Decoder
from ptcap.sinks.tcpdump_child import PrintFlags, child_user, said_by_ptcap, spawn

_WRITE = 1 << 20
_F_SETPIPE_SZ = 1031


@dataclasses.dataclass
class _Group:
    first: int                  # tcpdump's -# number of its first packet
    adds: list                  # ((pre, suf, after), n) for n packets in a row
    count: int                  # its packets
    blocks: list                # the slices sent, for printing it again
    header: bytes               # the section and interface blocks it is read under
    prev: bytes                 # interface id and time stamp of the packet before it


class BlockPrinter:
    """Print a pcapng file's packets with ptcap's fields (`additions(ctx, ifname, direction)`)."""

    def __init__(self, reader: CaptureReader, flags: PrintFlags, additions, out) -> None:
        self.reader = reader
        self.flags = flags
        self.additions = additions
        self.out = out
        self.order = "<"
        self.frame, self.secret = make_marker(reader.linktype, flags.numeric > 0)
        self.groups: collections.deque[_Group] = collections.deque()
        self.ready = threading.Condition()
        self.failure: BaseException | None = None
        self.switched = False           # stopped at an interface of another link type
        self.quiet = False
        self.printed = 0
        self.last_ts = 0                # of the last packet sent, nanoseconds
        argv = [*flags.argv, "-r", "-"]
        self.numbers = numbered(flags.argv)
        if self.numbers:
            argv.insert(0, "-#")
        if flags.line_buffered:
            argv.insert(0, "-l")
        self.proc = spawn(argv, child_user(flags.user), subprocess.PIPE, subprocess.PIPE, subprocess.PIPE,
                          bulk=not flags.line_buffered)
        for fd in (self.proc.stdin.fileno(), self.proc.stdout.fileno()):  # fewer, bigger writes
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass

    # ---- feeding (a thread of its own)
    def _marker(self, prev: bytes) -> bytes:
        frame = self.frame
        pad = (-len(frame)) & 3
        total = 32 + len(frame) + pad
        o = self.order
        return (struct.pack(o + "II", 6, total) + prev + struct.pack(o + "II", len(frame), len(frame))
                + frame + b"\0" * pad + struct.pack(o + "I", total))

    def _feed(self) -> None:
        fd = self.proc.stdin.fileno()
        order = self.order = self.reader.byte_order
        out: list = []                  # what goes to the child next
        size = 0
        run = [None, 0, 0]              # blocks read and not yet in `out`: buffer, start, end
        header = b""                    # the section's header and interface blocks
        adds: list = []                 # the open group: ((pre, suf, after), n) runs
        count = 0                       # and its packets
        blocks: list = []               # and its slices
        group_header = b""
        first = 0                       # -# number of its first packet
        sent = 0                        # packets and markers sent (tcpdump's count)
        prev = group_prev = b""         # interface id and time stamp of the last packet
        ifaces = self.reader.interfaces
        cache: dict = {}
        additions = self.additions

        def flush_run(in_group: bool = True) -> None:
            nonlocal size
            buf, start, end = run
            if buf is not None and end > start:
                piece = memoryview(buf)[start:end]
                out.append(piece)
                if in_group:
                    blocks.append(piece)
                size += end - start
            run[0] = None

        def end_group() -> None:
            nonlocal adds, blocks, sent, size, count
            flush_run()
            mark = self._marker(prev)
            with self.ready:
                self.groups.append(_Group(first, adds, count, blocks, group_header, group_prev))
                self.ready.notify()
            out.append(mark)
            size += len(mark)
            sent += 1
            adds, blocks, count = [], [], 0

        try:
            last_known = last_ifid = last_adds = None
            for buf, start, end, ifid, known, ts in self.reader.raw_blocks(GROUP):
                if ifid == -2:                              # a run of packet blocks
                    if not sent:                            # two markers first: calibration
                        if run[0] is not buf or start != run[2]:
                            flush_run(False)
                            run[0], run[1], run[2] = buf, start, start
                        flush_run(False)                    # the blocks before the packets
                        mark = self._marker(buf[start + 8:start + 20])
                        out += [mark, mark]
                        size += 2 * len(mark)
                        sent = 2
                        prev = buf[start + 8:start + 20]
                    packets = 0
                    for m in known:
                        packets += m[2]
                    if adds and count + packets > GROUP:
                        end_group()
                    if not adds:
                        first, group_prev, group_header = sent + 1, prev, header
                    if run[0] is not buf or start != run[2]:
                        flush_run(bool(adds))
                        run[0], run[1] = buf, start
                    run[2] = end
                    for m_ifid, m_known, m_count in known:
                        if m_known is not last_known or m_ifid != last_ifid:
                            hit = cache.get((m_ifid, id(m_known)))
                            if hit is None or hit[0] is not m_known:
                                name = ifaces[m_ifid][2] if m_ifid < len(ifaces) else ""
                                hit = cache[(m_ifid, id(m_known))] = (m_known, additions(m_known[1], name,
                                                                                         m_known[0]))
                            last_known, last_ifid, last_adds = m_known, m_ifid, hit[1]
                        adds.append((last_adds, m_count))
                    count += packets
                    sent += packets
                    prev = ts
                    if count >= GROUP:
                        end_group()
                        if size >= _WRITE:
                            self._write(fd, out)
                            out.clear()
                            size = 0
                    continue
                if run[0] is not buf or start != run[2]:
                    flush_run(bool(adds))
                    run[0], run[1] = buf, start
                run[2] = end
                if known is None:                           # no packet
                    if start == 0 and not header:
                        header = bytes(buf[:end])           # what the reader read first
                    elif buf[start:start + 4] == b"\x0a\x0d\x0d\x0a":
                        order = self.order = self.reader.byte_order
                        ifaces = self.reader.interfaces     # a new section: its own
                        last_known = None
                        header = bytes(buf[start:end])
                    elif struct.unpack_from(order + "I", buf, start)[0] == 1:
                        header += bytes(buf[start:end])
                    continue
                if ts is None:                              # simple or obsolete packet block
                    ts = prev or struct.pack(order + "III", 0, 0, 0)
                if not adds:
                    if not sent:                            # two markers first: calibration
                        if start > run[1]:                  # after the blocks before the packet
                            out.append(memoryview(buf)[run[1]:start])
                            size += start - run[1]
                        run[1] = start
                        out += [self._marker(ts), self._marker(ts)]
                        sent = 2
                        prev = ts
                    first, group_prev, group_header = sent + 1, prev, header
                if known is last_known and ifid == last_ifid:
                    adds.append((last_adds, 1))
                else:
                    hit = cache.get((ifid, id(known)))
                    if hit is None or hit[0] is not known:
                        name = ifaces[ifid][2] if ifid < len(ifaces) else ""
                        hit = cache[(ifid, id(known))] = (known, additions(known[1], name, known[0]))
                    last_known, last_ifid, last_adds = known, ifid, hit[1]
                    adds.append((last_adds, 1))
                count += 1
                sent += 1
                prev = ts
                if count >= GROUP:
                    end_group()
                    if size >= _WRITE:
                        self._write(fd, out)
                        out.clear()
                        size = 0
        except MixedLinkTypes:
            self.switched = True
        except BaseException as e:      # said by the reading thread, after what was printed
            self.failure = e
        finally:
            try:
                if adds:
                    end_group()
                else:
                    flush_run(False)
                self._write(fd, out)
            except OSError:
                pass
            with self.ready:
                self.groups.append(None)
                self.ready.notify()
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.last_ts = self._ns(prev) if prev else 0

    def _ns(self, ts: bytes) -> int:
        _ifid, hi, lo = struct.unpack(self.order + "III", ts)
        ifaces = self.reader.interfaces
        _lt, _snap, _name, num, den, offset = ifaces[_ifid] if _ifid < len(ifaces) else (0, 0, "", 1000, 1, 0)
        return ((hi << 32) | lo) * num // den + offset

    @staticmethod
    def _write(fd: int, parts: list) -> None:
        data = b"".join(parts)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    # ---- printing (the caller's thread)
    def run(self) -> int:
        """Print everything; the packets printed. Raises what the reading raised, after."""
        feeder = threading.Thread(target=self._feed, name="ptcap-blocks", daemon=True)
        feeder.start()
        err = threading.Thread(target=self._stderr, daemon=True)
        err.start()
        try:
            self._read()
        except BaseException:
            self.quiet = True           # the child's complaints of its closed output are ours
            raise
        finally:
            self.proc.stdout.close()
            feeder.join()
            status = self.proc.wait()
            err.join()
        if isinstance(self.failure, PtcapError):
            raise PtcapError(f"pcap_loop: {self.failure}")   # as the reader's errors are said
        if self.failure is not None:
            raise self.failure
        if status != 0 and not self.switched and status != -13:
            raise PtcapError(f"tcpdump (the decoder) exited with status {status}")
        return self.printed

    def _stderr(self) -> None:
        for raw in self.proc.stderr:
            if said_by_ptcap(raw) or not raw.strip() or self.quiet:
                continue
            sys.stderr.write(raw.decode(errors="replace"))
            sys.stderr.flush()
        self.proc.stderr.close()

    def _next_group(self) -> _Group | None:
        with self.ready:
            while not self.groups:
                self.ready.wait()
            return self.groups.popleft()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        buf = b""
        token = None
        extra = lead = 0
        words = ts_words(self.flags)
        number = self.flags.number
        oneline = self.flags.oneline
        write = self.out.write
        while True:
            data = os.read(fd, 1 << 20)
            if not data:
                return
            buf += data
            if token is None:
                found = calibrate(buf, self.secret)
                if found is None:
                    continue
                token, lead, extra, buf = found
            pieces = buf.split(token)
            buf = pieces.pop()
            parts = []
            for piece in pieces:
                group = self._next_group()
                if group is None:
                    return
                text = between_markers(piece, extra, lead)
                cut = cut_group(text, group.first, group.count, self.numbers)
                texts, single = cut if cut is not None else (self._again(group), False)
                adds = per_packet(group.adds)
                if single and not number:
                    parts.append(merge_lines(texts, adds, words, oneline))
                    self.printed += len(texts)
                    continue
                for t, (pre, suf, after) in zip(texts, adds):
                    if single:
                        t += b"\n"
                    if pre or suf or after or oneline:
                        t = merge(t, pre, suf, after, words, oneline)
                    if number:
                        self.printed += 1
                        t = b"%5d  %s" % (self.printed, t)
                    parts.append(t)
                if not number:
                    self.printed += group.count
            if parts:
                write(b"".join(parts))
                if self.flags.line_buffered:
                    self.out.flush()

    def _again(self, group: _Group) -> list[bytes]:
        """A group whose cut would be a guess: each packet printed by a Decoder (careful)."""
        data = group.header + b"".join(bytes(b) for b in group.blocks)
        reader = CaptureReader(io.BytesIO(data), "")
        sink = io.BytesIO()
        decoder = Decoder(dataclasses.replace(self.flags, number=False, line_buffered=False), sink,
                          lossless=True, start_ts=self._ns(group.prev), collect=True)
        for pkt in reader:
            decoder.put(pkt.ts_ns, pkt.linktype, pkt.data, pkt.orig_len)
        decoder.close()
        if len(decoder.texts) != group.count:
            raise PtcapError("tcpdump printed another number of packets than it was given")
        return decoder.texts

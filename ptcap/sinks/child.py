"""One tcpdump child for one link type: the pcap stream ptcap sends it (each packet followed by
a marker, see sinks/markers) and its output, cut at the markers' lines into each packet's text."""
from __future__ import annotations

import collections
import fcntl
import os
import struct
import subprocess

from ptcap.errors import PtcapError
from ptcap.sinks.markers import make_marker
from ptcap.sinks.tcpdump_child import NSEC_MAGIC, spawn

PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031
_REC = struct.Struct("<IIII")


class Child:
    """One `tcpdump -r -` for one link type: what was sent to it and its unparsed output."""

    def __init__(self, decoder: "Decoder", linktype: int) -> None:
        self.linktype = linktype
        self.frame, self.secret = make_marker(linktype, decoder.flags.numeric > 0)
        n = len(self.frame)
        frame = self.frame
        mark = struct.Struct("<IIII")
        self._mark_pack = lambda sec, nsec: mark.pack(sec, nsec, n, n) + frame
        argv = [*decoder.flags.argv, "-r", "-"]
        if decoder.flags.line_buffered:
            argv.insert(0, "-l")
        self.proc = spawn(argv, decoder.user, subprocess.PIPE, subprocess.PIPE, subprocess.PIPE)
        self.stdin = self.proc.stdin.fileno()
        self.stdout = self.proc.stdout.fileno()
        self.stderr = self.proc.stderr.fileno()
        for fd in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(fd, False)
        for fd in (self.stdin, self.stdout):
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
        self.pending: collections.deque[bytes] = collections.deque([struct.pack(
            "<IHHiIII", NSEC_MAGIC, 2, 4, 0, 0, max(decoder.snaplen, 128), linktype)])
        self.pending_bytes = len(self.pending[0])
        self.expect: collections.deque = collections.deque()  # one entry per marker sent
        self.buf = b""
        self.token: bytes | None = None     # the marker line from its secret on, newline included
        self.extra = 0                      # lines a marker prints after that one
        self.lead = 0                       # and before it
        self.last_ts = 0
        self.err = b""
        self.stdin_open = True
        self.eof = False
        first = decoder.first_ts
        self.marker(first, None)
        self.marker(first, None)            # two: calibration
        if decoder.last_ts != first:
            self.marker(decoder.last_ts, None)  # -ttt: the delta of the next packet

    def marker(self, ts: int, entry) -> None:
        sec, nsec = divmod(ts, 1_000_000_000)
        rec = _REC.pack(sec, nsec, len(self.frame), len(self.frame)) + self.frame
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        self.expect.append(entry)
        self.last_ts = ts

    def packet(self, ts: int, data: bytes, orig_len: int, entry) -> None:
        """The packet's record and, after it, a marker with its time stamp (the hot path)."""
        sec, nsec = divmod(ts, 1_000_000_000)
        mark = self._mark_pack(sec, nsec)
        self.pending.append(_REC.pack(sec, nsec, len(data), orig_len) + data + mark)
        self.pending_bytes += len(data) + len(mark) + 16
        self.expect.append(entry)
        self.last_ts = ts

    def flush_input(self) -> int:
        """Write what the pipe takes, a megabyte at a time; the bytes written."""
        pending = self.pending
        written = 0
        while pending and self.stdin_open:
            if len(pending) > 1 and len(pending[0]) < (1 << 20):
                take, size = [], 0
                while pending and size < (1 << 20):
                    chunk = pending.popleft()
                    take.append(chunk)
                    size += len(chunk)
                data = b"".join(take)
            else:
                data = pending.popleft()
            try:
                n = os.write(self.stdin, data)
            except BlockingIOError:
                n = 0
            except OSError:             # the child is gone: _died() says so
                self.stdin_open = False
                n = 0
            written += n
            self.pending_bytes -= n
            if n < len(data):
                pending.appendleft(data[n:])
                break
        return written

    def close_input(self) -> None:
        if self.stdin_open:
            self.stdin_open = False
            try:
                os.close(self.stdin)
            except OSError:
                pass
            self.proc.stdin = None

    def parse(self, data: bytes):
        """Yield (entry, text) for every packet whose marker has been printed."""
        buf = self.buf + data
        if self.token is None:
            buf = self._calibrate(buf)
            if self.token is None:
                self.buf = buf
                return
        pieces = buf.split(self.token)
        self.buf = pieces.pop()
        extra = self.extra
        lead = self.lead
        expect = self.expect.popleft
        for piece in pieces:
            start = 0
            for _ in range(extra):
                start = piece.index(b"\n", start) + 1
            end = piece.rfind(b"\n") + 1        # the rest is the marker's line up to its secret
            for _ in range(lead):               # and the marker's lines before that one
                end = piece.rfind(b"\n", 0, end - 1) + 1
            entry = expect()
            if entry is not None:
                yield entry, piece[start:end] if end > start else b""

    def _calibrate(self, buf: bytes) -> bytes:
        """The first two markers: which line carries the secret (`lead` lines before it), the
        text from the secret to that line's end (the token), and the lines after it (`extra`)."""
        at = buf.find(self.secret)
        if at < 0:
            if buf.count(b"\n") > 8:
                raise PtcapError("tcpdump's output does not show ptcap's marker packets: "
                                 f"{buf[:200].decode(errors='replace')!r}")
            return buf
        line = buf.rfind(b"\n", 0, at) + 1
        eol = buf.find(b"\n", at)
        if eol < 0:
            return buf
        token = buf[at:eol + 1]
        second = buf.find(token, eol + 1)
        if second < 0:
            return buf
        lead = buf.count(b"\n", 0, line)
        start2 = buf.rfind(b"\n", 0, second) + 1
        for _ in range(lead):
            start2 = buf.rfind(b"\n", 0, start2 - 1) + 1
        self.extra = buf.count(b"\n", eol + 1, start2)
        self.lead = lead
        self.token = token
        self.expect.popleft()
        self.expect.popleft()
        return buf[second + len(token):]       # the second marker's extra lines start it


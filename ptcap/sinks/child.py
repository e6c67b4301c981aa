"""One tcpdump child for one link type: the pcap stream ptcap sends it and its output, cut into
each packet's text.

A *grouped* child (the usual one) is sent packets back to back and a marker (sinks/markers)
after each group of them; it runs with -#, and a group's text (between two markers, which no
payload can forge) is cut at the lines that start with the packets' numbers. tcpdump starts
every packet's text on a line of its own with its number, so each number has its real line;
a payload can add lines that look like a number's, but then that number has two candidates
and the cut would be a guess: the group is not cut but printed again by a *careful* child,
which is sent a marker after every packet (and is slower: tcpdump prints twice the packets).

An *entry* is (sequence number, note, ptcap's fields, n): n packets in a row with the same
fields, numbered from the sequence number on, the note before the first (expand() gives one
entry per packet).
"""
from __future__ import annotations

import collections
import fcntl
import os
import re
import struct
import subprocess

from ptcap.errors import PtcapError
from ptcap.formats.pcapng import pcap_time
from ptcap.sinks.markers import make_marker
from ptcap.sinks.tcpdump_child import NSEC_MAGIC, spawn

PIPE_SIZE = 1 << 20
GROUP = 512                     # packets between two markers, at most
PUSH = 128                      # markers that fill tcpdump's 4 KiB output buffer (a line is > 32 bytes)
_F_SETPIPE_SZ = 1031
_REC = struct.Struct("<IIII")
_NUMBERED = re.compile(rb" *([0-9]+)  ")     # a line that starts like tcpdump's -# number


def numbered(argv: list[str]) -> bool:
    """Does a grouped child print -# numbers? Only with flags that print packets on several
    lines: without them a group of one line per packet is cut at its lines."""
    return any(flag in ("-v", "-x", "-X", "-A") for flag in argv)


def cut_group(text: bytes, first: int, n: int, numbers: bool) -> tuple[list[bytes], bool] | None:
    """The texts of packets first..first+n-1 (their -# numbers removed) from a group's output,
    and whether each is one line (then without its newline); None when the cut would be a
    guess. n lines are n packets of one line each (tcpdump ends every packet with a newline);
    more lines are cut at the numbers, unless a line other than a packet's first looks like
    one of these packets' numbers."""
    if text.count(b"\n") == n:
        lines = text.split(b"\n")
        lines.pop()
        if numbers:
            if first + n <= 100000:
                lines = [line[7:] for line in lines]
            else:
                lines = [line[len(b"%5d  " % number):] for number, line in enumerate(lines, first)]
        return lines, True
    if not numbers:
        return None
    prefix = b"%5d  " % first
    if not text.startswith(prefix):
        return None
    out = []
    start = len(prefix)
    find = text.find
    for number in range(first + 1, first + n):
        prefix = b"\n%5d  " % number
        at = find(prefix, start)
        if at < 0:
            return None
        out.append(text[start:at + 1])
        start = at + len(prefix)
    out.append(text[start:])
    last = first + n - 1
    match = _NUMBERED.match
    for piece in out:
        for line in piece.split(b"\n")[1:]:
            m = match(line)
            if m is not None and first <= int(m.group(1)) <= last:
                return None
    return out, False


def expand(entries) -> list:
    """One entry per packet."""
    out = []
    for seq, note, adds, n in entries:
        out.append((seq, note, adds, 1))
        if n > 1:
            out += [(seq + i, b"", adds, 1) for i in range(1, n)]
    return out


def split_records(data: bytes):
    """(time stamp, record) of each pcap record (nanosecond time stamps) in `data`."""
    pos = 0
    unpack = _REC.unpack_from
    while pos < len(data):
        sec, nsec, caplen, _orig = unpack(data, pos)
        end = pos + 16 + caplen
        yield sec * 1_000_000_000 + nsec, data[pos:end]
        pos = end


def calibrate(buf: bytes, secret: bytes) -> tuple[bytes, int, int, bytes] | None:
    """From a child's first output, the first two markers': the text from the secret to its
    line's end (the token), the lines a marker prints before that line (lead) and after it
    (extra), and the output after the second marker's line; None until both are there."""
    at = buf.find(secret)
    if at < 0:
        if buf.count(b"\n") > 8:
            raise PtcapError("tcpdump's output does not show ptcap's marker packets: "
                             f"{buf[:200].decode(errors='replace')!r}")
        return None
    line = buf.rfind(b"\n", 0, at) + 1
    eol = buf.find(b"\n", at)
    if eol < 0:
        return None
    token = buf[at:eol + 1]
    second = buf.find(token, eol + 1)
    if second < 0:
        return None
    lead = buf.count(b"\n", 0, line)
    start2 = buf.rfind(b"\n", 0, second) + 1
    for _ in range(lead):
        start2 = buf.rfind(b"\n", 0, start2 - 1) + 1
    return token, lead, buf.count(b"\n", eol + 1, start2), buf[second + len(token):]


def between_markers(piece: bytes, extra: int, lead: int) -> bytes:
    """What tcpdump printed between two markers, from the piece of output between two tokens
    (the first marker's extra lines start it; the second's lead lines and line end it)."""
    start = 0
    for _ in range(extra):
        start = piece.index(b"\n", start) + 1
    end = piece.rfind(b"\n") + 1
    for _ in range(lead):
        end = piece.rfind(b"\n", 0, end - 1) + 1
    return piece[start:end] if end > start else b""


class Child:
    """One `tcpdump -r -` for one link type: what was sent to it and its unparsed output."""

    def __init__(self, decoder: "Decoder", linktype: int, careful: bool = False) -> None:
        self.linktype = linktype
        self.careful = careful
        self.frame, self.secret = make_marker(linktype, decoder.flags.numeric > 0)
        n = len(self.frame)
        frame = self.frame
        mark = struct.Struct("<IIII")
        self._mark_pack = lambda sec, nsec: mark.pack(sec, nsec, n, n) + frame
        argv = [*decoder.flags.argv, "-r", "-"]
        self.numbers = not careful and numbered(decoder.flags.argv)
        if self.numbers:
            argv.insert(0, "-#")
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
        # per marker sent: None, an entry (careful), or (first number, time stamp before, group,
        # its records, its packets)
        self.expect: collections.deque = collections.deque()
        self.group: list[tuple] = []        # entries of the packets not yet closed by a marker
        self.group_count = 0                # and how many packets they are
        self.group_raw: list[bytes] = []    # and their pcap records
        self.group_prev = 0                 # the time stamp before the group's first packet
        self.sent = 0                       # packets and markers sent: tcpdump's -# count
        self.ambiguous: list[tuple] = []    # (time stamp before, group) to print again carefully
        self.buf = b""
        self.token: bytes | None = None     # the marker line from its secret on, newline included
        self.extra = 0                      # lines a marker prints after that one
        self.lead = 0                       # and before it
        self.last_ts = 0
        self.err = b""
        self.stdin_open = True
        self.eof = False
        self.pushed = True                  # nothing printed since the last push()
        first = decoder.first_ts
        self.marker(first, None)
        self.marker(first, None)            # two: calibration
        if decoder.last_ts != first:
            self.marker(decoder.last_ts, None)  # -ttt: the delta of the next packet

    def push(self) -> None:
        """The capture is idle: markers enough to fill tcpdump's output buffer (4 KiB to a
        pipe), so the lines of packets it printed come out now and not with the next ones."""
        if self.pushed:
            return
        for _ in range(PUSH):
            self.marker(self.last_ts, None)
        self.pushed = True

    def marker(self, ts: int, entry) -> None:
        if self.group:
            self.end_group()
        sec, nsec = pcap_time(ts)
        rec = self._mark_pack(sec, nsec)
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        self.expect.append(entry)
        self.sent += 1
        self.last_ts = ts

    def end_group(self) -> None:
        """A marker after the packets sent since the last one (grouped children)."""
        group, self.group = self.group, []
        raw, self.group_raw = self.group_raw, []
        count, self.group_count = self.group_count, 0
        rec = self._mark_pack(*pcap_time(self.last_ts))
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        self.expect.append((self.sent - count + 1, self.group_prev, group, raw, count))
        self.sent += 1

    def packet(self, ts: int, data: bytes, orig_len: int, entry) -> None:
        """Queue one packet (its entry's n is 1)."""
        self.pushed = False
        sec, nsec = pcap_time(ts)
        rec = _REC.pack(sec, nsec, len(data), orig_len) + data
        if self.careful:
            self.again(ts, rec, entry)
            return
        self.pending.append(rec)
        self.pending_bytes += len(rec)
        group = self.group
        if not group:
            self.group_prev = self.last_ts
        group.append(entry)
        self.group_raw.append(rec)
        self.group_count += 1
        self.sent += 1
        self.last_ts = ts
        if self.group_count >= GROUP:
            self.end_group()

    def records(self, data: bytes, entries: list, count: int, first_ts: int, last_ts: int) -> None:
        """Queue `count` packets given as pcap records back to back, their entries, and the
        first and last time stamps: a ring batch's worth in one write (at most GROUP packets)."""
        self.pushed = False
        if self.careful or self.group_count + count > GROUP:
            if self.group:
                self.end_group()
            if self.careful:
                for entry, (ts, rec) in zip(expand(entries), split_records(data)):
                    self.again(ts, rec, entry)
                return
        self.pending.append(data)
        self.pending_bytes += len(data)
        if not self.group:
            self.group_prev = self.last_ts
        self.group += entries
        self.group_raw.append(data)
        self.group_count += count
        self.sent += count
        self.last_ts = last_ts
        if self.group_count >= GROUP:
            self.end_group()

    def again(self, ts: int, rec: bytes, entry) -> None:
        """A packet's record and, after it, a marker with its time stamp (careful children)."""
        self.pushed = False
        mark = self._mark_pack(*pcap_time(ts))
        self.pending.append(rec + mark)
        self.pending_bytes += len(rec) + len(mark)
        self.expect.append(entry)
        self.last_ts = ts

    def outstanding(self) -> list:
        """The entries of the packets sent and not printed yet."""
        out = []
        for item in self.expect:
            if item is None:
                continue
            if self.careful:
                out.append(item)
            else:
                out += expand(item[2])
        out += expand(self.group)
        return out

    def flush_input(self) -> int:
        """Write what the pipe takes, a megabyte at a time; the bytes written."""
        pending = self.pending
        written = 0
        if self.group and not pending:
            self.end_group()
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
            if self.group and not pending:      # the child has everything: close the group
                self.end_group()
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
        """Yield (entries, texts, one line each) for every group whose marker has been printed."""
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
            entry = expect()
            if entry is None:
                continue
            text = between_markers(piece, extra, lead)
            if self.careful:
                yield [entry], [text], False
                continue
            first, prev, group, raw, count = entry
            cut = cut_group(text, first, count, self.numbers)
            if cut is None:
                self.ambiguous.append((prev, group, raw))
                continue
            yield group, cut[0], cut[1]

    def _calibrate(self, buf: bytes) -> bytes:
        found = calibrate(buf, self.secret)
        if found is None:
            return buf
        self.token, self.lead, self.extra, rest = found
        self.expect.popleft()
        self.expect.popleft()
        return rest

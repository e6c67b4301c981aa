"""tcpdump as ptcap's one decoder: packets go as pcap over a pipe to `tcpdump -r -` children
running unprivileged (sinks/tcpdump_child), and ptcap merges its own fields (interface, process,
direction, the ParentProc/Container/Pod suffixes, the -v blocks) into their lines.

Alignment never depends on the text tcpdump prints for a packet. ptcap sends *markers*
(sinks/markers): tiny packets whose printed lines carry secrets drawn for this run, so each
child's output (sinks/child) is cut where a payload (-A of a packet that reproduces tcpdump's
own lines, numbers and time stamps) cannot forge a cut. A marker carries the previous packet's
time stamp (so -ttt deltas stay right), its lines are removed, and packet numbers (-#) are
ptcap's own count.

The children are fed and read by one I/O thread: the capture thread only queues packets,
so a slow or dead tcpdump never stalls it. Beyond a bounded backlog, packets are counted
and not printed; a child that dies is restarted; either gap is said on the output, where it
happened.
"""
from __future__ import annotations

import os
import select
import sys
import time

from ptcap.errors import PtcapError
from ptcap.sinks.child import Child, expand, split_records
from ptcap.sinks.linewriter import LineWriter
from ptcap.sinks.merge import Span, merge, merge_lines, per_packet, ts_words
from ptcap.sinks.tcpdump_child import PrintFlags, child_user, said_by_ptcap

BACKLOG_BYTES = 16 << 20        # queued for a child beyond this: counted, not printed
STUCK_SECONDS = 5.0             # at the end of a live capture, a child silent this long is left


class Decoder:
    """Feed packets with ptcap's additions; their lines come out on `out`, in order.

    put() queues a packet for its link type's child; pump() moves bytes between ptcap and
    the children without blocking (the capture calls it after every batch and when idle). A
    live capture (lossless=False) never waits: beyond `backlog` bytes queued for a child, a
    packet is counted and not printed. A file (lossless=True) waits instead. Lines are written
    to `out` by a thread of their own, so a slow terminal or pipe never blocks the capture.
    """

    def __init__(self, flags: PrintFlags, out, snaplen: int = 262144, lossless: bool = False,
                 backlog: int = BACKLOG_BYTES, start_ts: int | None = None, collect: bool = False) -> None:
        self.flags = flags
        self.user = child_user(flags.user)
        self.out = out
        self.snaplen = snaplen
        self.lossless = lossless
        self.backlog = backlog
        self.first_ts = self.last_ts = start_ts or 0    # start_ts: the packet before (-ttt)
        self._started = start_ts is not None
        self.collect = collect          # each packet's text kept in `texts`, not written
        self.texts: list[bytes] = []
        self.children: dict[int, Child] = {}
        self.careful: dict[int, Child] = {}     # children that print a group again, packet by packet
        self._skipped = 0               # packets not printed: a child or the output behind
        self._skipped_said = 0
        self._seq = 0
        self._next = 0                  # next sequence number to write out
        self._done: dict[int, bytes | tuple[bytes, bytes]] = {}   # (note, text) to number
        self._number = 0
        self._woken = 0                 # self._seq at the last wake()
        self._ts_words = ts_words(flags)
        self.restarts = 0
        self._closed = False
        self._writer = LineWriter(out)

    # ---- the capture's side
    def put(self, ts_ns: int, linktype: int, data: bytes, orig_len: int,
            pre: bytes = b"", suf: bytes = b"", after: bytes = b"", adds: tuple | None = None) -> bool:
        """Queue one packet, with ptcap's fields (or `adds`: the three as a tuple); False when it
        will not be printed (a child or the output behind)."""
        writer = self._writer
        while True:
            child = self.children.get(linktype)
            if child is None:
                if self._seq == 0 and not self._started:
                    self.first_ts = self.last_ts = ts_ns
                child = self.children[linktype] = Child(self, linktype)
            if child.pending_bytes <= self.backlog and writer.queued <= self.backlog:
                break
            if not self.lossless:
                self._skipped += 1
                return False
            self.pump(0.05)
        if child.last_ts != self.last_ts:
            child.marker(self.last_ts, None)        # another child printed the previous packet
        note = b""
        if self._skipped != self._skipped_said:
            note = self._skip_note()
        seq = self._seq
        self._seq += 1
        child.packet(ts_ns, data, orig_len, (seq, note, adds or (pre, suf, after), 1))
        self.last_ts = ts_ns
        if child.pending_bytes > (1 << 18):
            self.pump(0)
        return True

    def put_records(self, linktype: int, data: bytes, runs: list, first_ts: int, last_ts: int) -> bool:
        """Queue packets of one link type given as pcap records back to back (nanosecond time
        stamps; at most a group's worth), with ptcap's fields as runs: ((pre, suf, after), n)
        for n packets in a row; False when they will not be printed (a child or the output
        behind: counted)."""
        count = sum(n for _fields, n in runs)
        writer = self._writer
        while True:
            child = self.children.get(linktype)
            if child is None:
                if self._seq == 0 and not self._started:
                    self.first_ts = self.last_ts = first_ts
                child = self.children[linktype] = Child(self, linktype)
            if child.pending_bytes <= self.backlog and writer.queued <= self.backlog:
                break
            if not self.lossless:
                self._skipped += count
                return False
            self.pump(0.05)
        if child.last_ts != self.last_ts:
            child.marker(self.last_ts, None)        # another child printed the previous packet
        seq = self._seq
        self._seq += count
        entries = []
        for fields, n in runs:
            entries.append((seq, b"", fields, n))
            seq += n
        if self._skipped != self._skipped_said:
            entries[0] = (entries[0][0], self._skip_note(), *entries[0][2:])
        child.records(data, entries, count, first_ts, last_ts)
        self.last_ts = last_ts
        if child.pending_bytes > (1 << 18):
            self.pump(0)
        return True

    def _skip_note(self) -> bytes:
        n = self._skipped - self._skipped_said
        self._skipped_said = self._skipped
        return f"ptcap: {n} packet{'s' if n != 1 else ''} not printed: tcpdump fell behind\n".encode()

    def wake(self) -> None:
        """Between batches: pump(); when no packet came since the last wake, the children
        push out the lines their output buffer holds (sinks/child: Child.push)."""
        if self._seq == self._woken and not self.flags.line_buffered:
            for child in self._all():
                child.push()
        self._woken = self._seq
        self.pump(0)

    def pump(self, timeout: float = 0.0) -> None:
        """Write what the children take, read what they printed, write it out in order;
        wait at most `timeout` seconds for a child."""
        self._writer.check()
        children = self._all()
        if not children:
            return
        poller = select.poll()
        fds: dict[int, tuple[Child, str]] = {}
        for child in children:
            if child.pending or child.group:
                child.flush_input()
            if not child.eof:
                poller.register(child.stdout, select.POLLIN)
                poller.register(child.stderr, select.POLLIN)
                fds[child.stdout] = (child, "out")
                fds[child.stderr] = (child, "err")
            if child.pending and child.stdin_open:
                poller.register(child.stdin, select.POLLOUT)
                fds[child.stdin] = (child, "in")
        for fd, _ev in poller.poll(int(timeout * 1000)):
            child, kind = fds[fd]
            if kind == "out":
                self._read_out(child)
            elif kind == "err":
                self._read_err(child)
            else:
                child.flush_input()
        self._write_out()
        for child in children:
            if child.eof and (child.expect or not self._closed):
                self._died(child)

    def _all(self) -> list[Child]:
        return [*self.children.values(), *self.careful.values()]

    def _again(self, child: Child) -> None:
        """Groups whose cut would be a guess: printed again by a careful child of the link type."""
        careful = self.careful.get(child.linktype)
        if careful is None:
            careful = self.careful[child.linktype] = Child(self, child.linktype, careful=True)
        for prev, group, raw in child.ambiguous:
            if careful.last_ts != prev:
                careful.marker(prev, None)      # -ttt: the delta of the group's first packet
            for entry, (ts, rec) in zip(expand(group), split_records(b"".join(raw))):
                careful.again(ts, rec, entry)
        child.ambiguous.clear()

    def close(self) -> None:
        """Print everything queued, stop the children."""
        self._closed = True
        try:
            progress, since = None, time.monotonic()
            for child in self.children.values():
                if child.group:
                    child.end_group()
            while any(c.pending for c in self._all() if c.stdin_open) or \
                    any(not c.eof for c in self._all()):
                if not any(c.pending for c in self.children.values() if c.stdin_open):
                    for child in self.children.values():
                        child.close_input()
                if all(c.eof for c in self.children.values()) and \
                        not any(c.pending for c in self.careful.values() if c.stdin_open):
                    for child in self.careful.values():     # last: a group may still need one
                        child.close_input()
                self.pump(0.05)
                now = (sum(c.pending_bytes for c in self._all()), self._seq - self._next)
                if now != progress:
                    progress, since = now, time.monotonic()
                elif not self.lossless and time.monotonic() - since > STUCK_SECONDS:
                    self._give_up()
                    break
            self._write_out()
            if self._skipped != self._skipped_said:
                self._writer.put(self._skip_note())
        finally:
            for child in self._all():
                child.close_input()
                if child.proc.poll() is None:
                    child.proc.kill()
                child.proc.wait()
                for f in (child.proc.stdout, child.proc.stderr):
                    f.close()
            self.children.clear()
            self.careful.clear()
            self._writer.close()

    def _give_up(self) -> None:
        """At the end of a live capture, a child that prints nothing more is not waited for."""
        lost = 0
        for child in self._all():
            for entry in child.outstanding():
                self._done.setdefault(entry[0], b"")
                lost += 1
            child.expect.clear()
            child.group, child.group_raw, child.group_count = [], [], 0
            child.eof = True
        self._write_out()
        self._writer.put(f"ptcap: {lost} packet{'s' if lost != 1 else ''} not printed: "
                         f"tcpdump stopped printing\n".encode())

    @property
    def skipped(self) -> int:
        return self._skipped

    # ---- output
    def _read_out(self, child: Child) -> None:
        done = self._done
        words = self._ts_words
        number, oneline = self.flags.number, self.flags.oneline
        while True:
            try:
                data = os.read(child.stdout, 1 << 18)
            except BlockingIOError:
                return
            if not data:
                child.eof = True
                return
            for entries, texts, single in child.parse(data):
                first, end = entries[0][0], entries[-1][0] + entries[-1][3]
                count = len(texts)
                if single and not number and end - first == count and not any(e[1] for e in entries):
                    adds = per_packet([(e[2], e[3]) for e in entries])
                    done[first] = Span(merge_lines(texts, adds, words, oneline), count)
                    continue
                if len(entries) != count:
                    entries = expand(entries)
                for (seq, note, (pre, suf, after), _n), text in zip(entries, texts):
                    if single:
                        text += b"\n"
                    if pre or suf or after or oneline:
                        text = merge(text, pre, suf, after, words, oneline)
                    if number:
                        done[seq] = (note, text)
                    else:
                        done[seq] = note + text if note else text
            if child.ambiguous:
                self._again(child)

    def _read_err(self, child: Child) -> None:
        while True:
            try:
                data = os.read(child.stderr, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                return
            child.err += data
            lines = child.err.split(b"\n")
            child.err = lines.pop()
            for line in lines:
                if said_by_ptcap(line) or not line:
                    continue
                sys.stderr.write(line.decode(errors="replace") + "\n")
                sys.stderr.flush()

    def _write_out(self) -> None:
        done = self._done
        if not done:
            return
        parts = []
        nxt = self._next
        while nxt in done:
            item = done.pop(nxt)
            if item.__class__ is Span:
                parts.append(item.text)
                nxt += item.count
                continue
            if item.__class__ is tuple:     # -#: numbered in the order printed
                self._number += 1
                parts.append(b"%s%5d  %s" % (item[0], self._number, item[1]))
            else:
                parts.append(item)
            nxt += 1
        self._next = nxt
        if self.collect:
            self.texts += parts
        elif parts:
            self._writer.put(b"".join(parts))

    def _died(self, child: Child) -> None:
        """A child exited before it printed everything it was sent: say so, start another."""
        status = child.proc.wait()
        lost = child.outstanding()
        how = f"signal {-status}" if status < 0 else f"status {status}"
        if child.token is None:         # it never printed a marker: restarting would not help
            err = child.err.decode(errors="replace").strip()
            raise PtcapError(f"tcpdump (the decoder) exited ({how}) before it printed anything"
                             + (f": {err}" if err else ""))
        for f in (child.proc.stdout, child.proc.stderr):
            f.close()
        table = self.careful if child.careful else self.children
        del table[child.linktype]
        self.restarts += 1
        n = len(lost)
        note = (f"ptcap: tcpdump (the decoder) exited ({how}) and was restarted; "
                f"{n} packet{'s' if n != 1 else ''} not printed\n").encode()
        if lost:
            for i, entry in enumerate(lost):
                self._done[entry[0]] = note if i == 0 else b""
        else:
            self._write_out()
            if not self._done:
                self._writer.put(note)
        if not self._closed and not child.careful:     # a careful one starts when needed
            self.children[child.linktype] = Child(self, child.linktype)

"""The engine loop: ring batches → process records to the table, packet records through the
join → every sink; until stopped (signal, -c, the command's end, a sink that is done).

Two ways to take what the ring holds, one result: a single sink that takes the kernel's records
framed (a file; tcpdump's lines, as pcap records described in runs) is fed by the native drain
(ptcap.pipeline.drain: no Python per packet); anything else (several sinks, no drain library)
gets joined Batch objects."""
from __future__ import annotations

import os
import signal
import time
from typing import Callable, Sequence

from ptcap.kernel.records import DIR_AT, KEY_AT, KEY_END
from ptcap.pipeline import drain as native
from ptcap.pipeline.decoder import split
from ptcap.pipeline.packet import Batch, Sink
from ptcap.pipeline.stop import Stop

PATIENCE_SECONDS = 0.25     # how long a record may wait in the ring, by default (a sink may allow
                            # more: a file, tcpdump -w's second): an idle capture backs off to one
                            # wake-up per patience, doubling its wait after each empty poll ...
BUSY_SHARE = 5              # ... from a fifth of it while records come (0.05 s by default), the
                            # kernel side waking it sooner when the ring fills (bpf/ring.h)
COMMAND_GRACE = 0.2     # after `-- CMD` exits, how long its last packets may still come
_NO_LIMIT = 1 << 62


def _signal_wakeup(ring) -> Callable[[], None] | None:
    """A signal (Ctrl-C) ends the ring's wait at once, not after its timeout: Python writes
    to a pipe the wait also watches. Returns what undoes it (None: not the main thread)."""
    if ring is None:
        return None
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:          # not the main thread: waits end by their timeout
        os.close(r)
        os.close(w)
        return None
    ring.wake_on(r)

    def undo() -> None:
        signal.set_wakeup_fd(old)
        os.close(r)
        os.close(w)
    return undo


class Engine:
    """`session` is a ptcap.kernel.session.Session; `join` the join stage (its packets(buf,
    offsets) makes a joined Batch, context(key) a record key's context, and it calls each of
    its `forgotten` with a key whose context it dropped); `processes` what learns from process
    records (a ProcessTable), `command` the `-- CMD` child (poll() gives its status once it
    ended). `captured` counts the packets the sinks were given (still right after a
    BrokenPipeError from a sink)."""

    def __init__(self, session, join, sinks: Sequence[Sink], stop: Stop, processes=None,
                 limit: int | None = None, command=None, tickers: Sequence[Callable[[], None]] = ()) -> None:
        self.session, self.join, self.sinks, self.stop = session, join, sinks, stop
        self.processes, self.limit, self.command, self.tickers = processes, limit, command, tickers
        self.captured = 0
        self.drain: native.Drain | None = None
        self._stale = False         # the drain holds options of a context the join dropped

    def _native(self) -> native.Drain | None:
        """The drain for the one sink that takes framed records, when the library is there."""
        if len(self.sinks) != 1 or self.session.ring is None:
            return None
        framing = getattr(self.sinks[0], "framing", lambda: None)()
        lib = native.library() if framing is not None else None
        if lib is None:
            return None
        ring = self.session.ring
        drain = native.Drain(lib, ring.map_fd, ring.size, framing)
        self.join.forgotten.append(self._forget)
        return drain

    def _forget(self, key: bytes) -> None:
        self._stale = True

    def run(self) -> int:
        """Run until stopped; returns self.captured."""
        self.drain = self._native()
        wake = _signal_wakeup(self.session.ring)
        try:
            return self._loop(self._take_native if self.drain is not None else self._take)
        finally:
            if wake is not None:
                wake()
            if self.drain is not None:
                self.join.forgotten.remove(self._forget)
                self.drain.close()
                self.drain = None

    def _loop(self, take: Callable[[], int]) -> int:
        session, sinks, stop, limit, command = self.session, self.sinks, self.stop, self.limit, self.command
        ring = session.ring
        command_done_at = None
        draining = False
        last_sync = time.monotonic()
        # what every sink allows (a file: longer); while `-- CMD` runs, the default, so that
        # its end is seen soon
        longest = PATIENCE_SECONDS
        if sinks and command is None:
            longest = min((sink.wait_seconds or PATIENCE_SECONDS) for sink in sinks)
        busy = poll = longest / BUSY_SHARE
        while True:
            if command is not None and command_done_at is None and command.poll() is not None:
                command_done_at = time.monotonic()
            if command_done_at is not None and time.monotonic() - command_done_at > COMMAND_GRACE:
                stop.requested = True     # the command is done; its last packets have had time to pass
            if stop.requested and not draining:
                session.detach()      # nothing new comes in; what is queued is still read
                draining = True
            if not draining:
                ring.wait(poll)
            seen = take() if draining or ring.pending() else 0
            poll = busy if seen else min(poll * 2, longest)
            now = time.time()
            for sink in sinks:
                sink.tick(now)
                if sink.finished:
                    stop.requested = True
            if not seen and draining:
                return self.captured
            if not draining:
                session.refresh()
                for tick in self.tickers:
                    tick()
            if limit is not None and self.captured >= limit:
                session.detach()
                return self.captured
            mono = time.monotonic()
            if mono - last_sync > 1.0:
                session.sync_clock()
                last_sync = mono

    def _take(self) -> int:
        """The Python path: one ring batch, split, joined, to every sink; returns its records."""
        ring, limit = self.session.ring, self.limit
        buf, offsets = ring.batch()
        try:
            records = split(buf, offsets, self.processes) if offsets else offsets
            if records:
                if limit is not None and self.captured + len(records) >= limit:
                    records = records[: limit - self.captured]
                    self.stop.requested = True
                packets: Batch = self.join.packets(buf, records)
                self.captured += len(packets)
                for sink in self.sinks:
                    sink.write(packets)
        finally:
            ring.release()
        return len(offsets)

    def _take_native(self) -> int:
        """The native path: everything ready, framed by the drain and written by the sink;
        Python only for process records and keys seen for the first time."""
        drain, sink, ring = self.drain, self.sinks[0], self.session.ring
        buf, base = ring.mapping, ring.data_offset
        EMPTY, EVENT, UNKNOWN, COUNT, ERROR = (native.Stop.EMPTY, native.Stop.EVENT, native.Stop.UNKNOWN,
                                               native.Stop.COUNT, native.Stop.ERROR)
        check_lost = getattr(self.processes, "check_lost", None)
        if check_lost is not None:
            check_lost()        # a process event lost: what follows is marked (may be stale)
        seen = 0
        while True:
            if self._stale:
                drain.clear()
                self._stale = False
            left = _NO_LIMIT if self.limit is None else self.limit - self.captured
            fd = sink.direct()
            run = drain.run(left, sink.room(), fd)
            stop = run.stop
            if stop == ERROR:
                self.captured += run.packets
                sink.failed(run.err)
            if run.packets:
                self.captured += run.packets
                seen += run.packets
                if fd >= 0:
                    sink.wrote(run.out_len)
                elif run.runs:
                    sink.write_runs(drain.output(run.out_len), drain.runs(run.runs), self.join.context)
                else:
                    sink.write_framed(drain.output(run.out_len), run.packets)
            if stop == EMPTY:
                break
            if stop == EVENT:
                events = drain.events()
                split(buf, [base + off for off in events], self.processes)
                drain.skip(len(events))
                seen += len(events)
            elif stop == UNKNOWN:
                at = base + run.record
                key, direction = buf[at + KEY_AT:at + KEY_END], buf[at + DIR_AT]
                drain.put(key, direction, sink.options(self.join.context(key), direction))
            elif stop == COUNT:
                self.stop.requested = True
                break
            elif sink.finished:      # the -W files are all written
                break
        ring.follow(run.cons)
        return seen

"""The engine loop: ring batches → process records to the table, packet records through the
join → every sink; until stopped (signal, -c, the command's end, a sink that is done)."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from ptcap.pipeline.decoder import split
from ptcap.pipeline.packet import Batch, Sink

POLL_SECONDS = 0.05     # longest a record waits in the ring when traffic is light
COMMAND_GRACE = 0.2     # after `-- CMD` exits, how long its last packets may still come
BATCH_NAP = 0.002
SMALL_BATCH = 256


class Stop:
    """Set by a signal handler (SIGINT/SIGTERM/SIGHUP): the loop finishes the batch it has,
    drains what is queued and returns."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum=None, frame=None) -> None:
        self.requested = True


class Engine:
    """`session` is a ptcap.kernel.session.Session, `join` the join stage (ring batch and
    packet offsets → a joined Batch), `processes` what learns from process records (a ProcessTable),
    `command` the `-- CMD` child (poll() gives its status once it ended). `captured` counts
    the packets the sinks were given (still right after a BrokenPipeError from a sink)."""

    def __init__(self, session, join: Callable[[object, list[int]], Batch], sinks: Sequence[Sink],
                 stop: Stop, processes=None, limit: int | None = None, command=None,
                 tickers: Sequence[Callable[[], None]] = ()) -> None:
        self.session, self.join, self.sinks, self.stop = session, join, sinks, stop
        self.processes, self.limit, self.command, self.tickers = processes, limit, command, tickers
        self.captured = 0

    def run(self) -> int:
        """Run until stopped; returns self.captured."""
        session, sinks, stop, limit, command = self.session, self.sinks, self.stop, self.limit, self.command
        ring = session.ring
        command_done_at = None
        draining = False
        last_sync = time.monotonic()
        small_batch = False
        while True:
            if command is not None and command_done_at is None and command.poll() is not None:
                command_done_at = time.monotonic()
            if command_done_at is not None and time.monotonic() - command_done_at > COMMAND_GRACE:
                stop.requested = True     # the command is done; its last packets have had time to pass
            if stop.requested and not draining:
                session.detach()      # nothing new comes in; what is queued is still read
                draining = True
            if not draining:
                # epoll on a ring is level-triggered: it returns at once while anything is
                # queued, so after a small batch, nap briefly and take a bigger one next time
                if small_batch:
                    time.sleep(BATCH_NAP)
                else:
                    ring.wait(POLL_SECONDS)
            buf, offsets = ring.batch()
            small_batch = 0 < len(offsets) < SMALL_BATCH
            try:
                records = split(buf, offsets, self.processes) if offsets else offsets
                if records:
                    if limit is not None and self.captured + len(records) >= limit:
                        records = records[: limit - self.captured]
                        stop.requested = True
                    packets = self.join(buf, records)
                    self.captured += len(packets)
                    for sink in sinks:
                        sink.write(packets)
            finally:
                ring.release()
            now = time.time()
            for sink in sinks:
                sink.tick(now)
                if sink.finished:
                    stop.requested = True
            if not offsets and draining:
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

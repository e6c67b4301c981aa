"""The thread that writes tcpdump's lines to ptcap's output, so that a slow reader of the
lines never holds up the capture's thread (ptcap/sinks/tcpdump.py: Decoder)."""
from __future__ import annotations

import collections
import os
import threading

from ptcap.errors import OutputError


class LineWriter:
    """Writes the lines to ptcap's stdout from a thread of its own; `queued` is what waits."""

    def __init__(self, out) -> None:
        self.out = out
        self._queue: collections.deque = collections.deque()
        self._put = 0                   # bytes queued: the capture's thread only
        self._done = 0                  # bytes written: the writer thread only
        self._ready = threading.Event()
        self._stop = False
        self.failure: BaseException | None = None
        try:
            self._fd: int | None = out.fileno()
        except (AttributeError, OSError, ValueError):     # not a file (io.UnsupportedOperation is an OSError)
            self._fd = None
        self._thread = threading.Thread(target=self._run, name="ptcap-lines", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._put - self._done

    def put(self, data: bytes) -> None:
        self._put += len(data)
        self._queue.append(data)
        self._ready.set()

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._ready.wait()
            self._ready.clear()
            while queue:
                parts = [queue.popleft()]
                while queue and len(parts) < 1024:
                    parts.append(queue.popleft())
                data = b"".join(parts)
                try:
                    self._write(data)
                except OSError as e:            # a reader gone, a full disk: as tcpdump says it
                    self.failure = OutputError(f"Unable to write output: {e.strerror}", e.errno)
                    return
                except BaseException as e:
                    self.failure = e
                    return
                self._done += len(data)
            if self._stop and not queue:
                return

    def _write(self, data: bytes) -> None:
        """All of `data`, or the error. Not through the buffered file: a write the reader cut
        short (it left mid-write: `| head -1`) kept the rest in the file's buffer and said
        nothing, so with no later line ptcap never learnt that its output had gone."""
        out, fd = self.out, self._fd
        if fd is None:
            out.write(data)
            out.flush()
            return
        out.flush()                     # what others wrote there first
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def close(self) -> None:
        self._stop = True
        self._ready.set()
        self._thread.join()
        self.check()

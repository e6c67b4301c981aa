"""Where a capture's own messages go: the stream its front end gives it (stderr for the
CLI, the log for the extcap), never a swapped sys.stderr."""
from __future__ import annotations

import logging
import os
import threading
from typing import TextIO


class HeldLog(logging.StreamHandler):
    """'ptcap: ...' lines on `report`, held until the capture is set up (release_log()): a
    capture that fails to start says one line, its error, and not what the runtime watchers
    said meanwhile."""

    def __init__(self, report: TextIO) -> None:
        super().__init__(report)
        self.setFormatter(logging.Formatter("ptcap: %(message)s"))
        self._held: list[logging.LogRecord] | None = []
        self._hold_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._hold_lock:
            if self._held is not None:
                self._held.append(record)
                return
        super().emit(record)

    def let_out(self) -> None:
        with self._hold_lock:
            held, self._held = self._held or [], None
        for record in held:
            super().emit(record)


def log_to(report: TextIO) -> None:
    """Resolvers say once, at info level, what they cannot reach: as 'ptcap: ...' lines on
    `report` (unless the front end already decided where the log goes), held until
    release_log()."""
    log = logging.getLogger("ptcap")
    if not log.handlers:
        log.addHandler(HeldLog(report))
        log.setLevel(logging.INFO)
        log.propagate = False


def release_log() -> None:
    """The capture is set up: what was held may be told now, and later lines at once."""
    for h in logging.getLogger("ptcap").handlers:
        if isinstance(h, HeldLog):
            h.let_out()


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def silence(stream) -> None:
    """Point `stream`'s descriptor at /dev/null (its reader or terminal is gone): what it still
    buffers goes nowhere, and the interpreter's last flush cannot fail (a message, status 120)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass

"""Where a sink's bytes go: a regular file, or a pipe, FIFO or socket whose reader may leave
while nothing is being written (ptcap | head, -w - | head -c 10, Wireshark's fifo)."""
from __future__ import annotations

import os
import select
import stat

_GONE = select.POLLERR | select.POLLHUP      # a pipe without readers: POLLERR; a socket: POLLHUP


class Destination:
    def __init__(self, fd: int) -> None:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            mode = 0
        self.regular = stat.S_ISREG(mode)
        self._poller = None
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            self._poller = select.poll()
            self._poller.register(fd, _GONE)

    def reader_gone(self) -> bool:
        """The reader has left (a terminal that hangs up is SIGHUP's to say, not this)."""
        return self._poller is not None and any(events & _GONE for _fd, events in self._poller.poll(0))

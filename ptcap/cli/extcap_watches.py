"""What ends an extcap capture besides a signal: Wireshark closing its end of the fifo,
and the death of the process that started the extcap."""
from __future__ import annotations

import logging
import os
import select
import signal
import threading

from ptcap.cli.extcap_privileges import PR_SET_PDEATHSIG, prctl

log = logging.getLogger("ptcap.extcap")


class FifoWatch:
    """Stops the capture (as SIGTERM would) when Wireshark closes its end of the fifo, even
    when no packet is being written that would meet the broken pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fifo-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLERR)
        while not self._done.is_set():
            for _fd, events in poller.poll(100):
                if events & (select.POLLERR | select.POLLHUP) and not self._done.is_set():
                    log.info("the fifo's reader went away: stopping")
                    self._done.set()
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    def stop(self) -> None:
        """Before the fd is closed: a poll on a closed fd must not be taken for a gone reader."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


class ParentWatch:
    """Ends the capture, as SIGTERM does, when the process that started the extcap (tshark
    or Wireshark; dumpcap is its sibling) dies by any signal: the kernel's parent-death
    signal, and a poll of the parent's pid for the parent that is gone before it is set."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parent-watch", daemon=True)

    def start(self) -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            if os.getppid() != self.parent:
                log.info("the process that started the capture (pid %d) is gone: stopping", self.parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()

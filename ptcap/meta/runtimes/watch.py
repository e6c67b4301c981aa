"""Following a runtime's containers as they come and go: one thread per runtime that lists
the running containers, then reads the runtime's event stream into the registry.

The rule for every runtime is here, once: a runtime that does not answer is said to be
unreachable once (its availability.Reach: the one Outage policy) and tried again every
RETRY_SECONDS; a stream that ends (the runtime restarted) is subscribed again, and the containers listed again, at once. A runtime
that is absent costs one failed connect every RETRY_SECONDS, in a thread that sleeps.
"""
from __future__ import annotations

import threading
import time

from ptcap.errors import short_error
from ptcap.meta.runtimes import priority
from ptcap.meta.runtimes.availability import RETRY_SECONDS, Reach, RuntimeUnavailable, log

# after a followed runtime's stream ends (a restart), how long it is looked for every
# RESTART_POLL seconds before falling back to every RETRY_SECONDS
RESTART_WINDOW = 60.0
RESTART_POLL = 0.5


class Watcher:
    """Subclasses give follow(): subscribe, list (learn()), then read events until the stream
    ends or stop is set; and interrupt(): make a blocked read return (close the stream)."""

    name = "runtime"

    def __init__(self, reach: Reach, registry) -> None:
        self.reach = reach
        self.registry = registry
        self.stopping = threading.Event()
        self.primed = threading.Event()         # the first listing is done (or failed)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ptcap-{self.name}-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        priority.raise_this_thread()        # a brief container is readable only while it lives
        lost_at = None          # when the stream of a runtime we were following ended
        while not self.stopping.is_set():
            restarting = lost_at is not None and time.monotonic() - lost_at < RESTART_WINDOW
            self._following = False
            try:
                if not restarting:
                    self.reach.check(say=False)
                self.follow()
                error = None        # the stream ended: the runtime went away
            except RuntimeUnavailable as e:
                error = e
            except Exception as e:      # noqa: BLE001 (connection, protocol, API errors)
                error = e
                if not self.stopping.is_set():
                    # a runtime that is not here at all is said only when a container needs it
                    self.reach.failed(short_error(e), quiet=self.reach.absent())
            if self._following:
                lost_at = time.monotonic()
                restarting = True
            self.primed.set()
            self.stopping.wait(RESTART_POLL if restarting or error is None else RETRY_SECONDS)

    _following = False
    _listed_before = False

    def listed(self) -> None:
        """Called by follow() once the running containers are in the registry and its
        events are being read."""
        self.reach.ok()
        if self._listed_before:
            log.info("%s: reached %s again: following its containers", self.reach.what, self.reach.address)
        self._following = self._listed_before = True
        self.primed.set()

    def follow(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        pass

    def stop(self) -> None:
        self.stopping.set()
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

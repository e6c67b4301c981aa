"""Following a runtime's containers as they come and go: one thread per runtime that lists
the running containers, then reads the runtime's event stream into the registry.

The rule for every runtime is here, once: a runtime that does not answer is said to be
unreachable once (its Reach) and tried again every RETRY_SECONDS; a stream that ends (the
runtime restarted) is subscribed again, and the containers listed again, at once. A runtime
that is absent costs one failed connect every RETRY_SECONDS, in a thread that sleeps.
"""
from __future__ import annotations

import threading

from ptcap.meta.runtimes.common import RETRY_SECONDS, Reach, RuntimeUnavailable, short_error


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
        while not self.stopping.is_set():
            try:
                self.reach.check()
                self.follow()
                # the stream ended without an error: the runtime went away; follow it again
                retry = 0.2
            except RuntimeUnavailable:
                retry = RETRY_SECONDS
            except Exception as e:      # noqa: BLE001 (connection, protocol, API errors)
                if not self.stopping.is_set():
                    self.reach.failed(short_error(e))
                retry = RETRY_SECONDS
            self.primed.set()
            self.stopping.wait(retry)

    def listed(self) -> None:
        """Called by follow() once the running containers are in the registry."""
        self.reach.ok()
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

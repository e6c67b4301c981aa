"""A container runtime (or API server) that may not answer: the error its clients raise, and
the one policy they all follow: say it once at info level, then leave it alone for a while.

Outage is the policy (per key: one pod, one address); Reach is an Outage named after one
runtime's address, shared by that runtime's resolver and its event watcher, so that a runtime
that is down is said to be unreachable once in all."""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Hashable

log = logging.getLogger("ptcap")

RETRY_SECONDS = 10.0


class RuntimeUnavailable(Exception):
    """The runtime's address does not answer; `where`: which runtime, at which address."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where


class Outage:
    """When a service last failed (per key: one pod, one address) and whether the user was told.

    Every packet may ask a runtime about its container: a runtime that is down must cost one
    failed call per RETRY_SECONDS, and one line in the log for the whole capture. Safe to share
    between threads (a runtime's resolver and its event watcher)."""

    def __init__(self, retry_seconds: float = RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self._down_since: dict[Hashable, float] = {}
        self._said = False
        self._lock = threading.Lock()

    def resting(self, key: Hashable = None) -> bool:
        """True while a failure of `key` is recent enough that asking again is pointless."""
        since = self._down_since.get(key)
        return since is not None and time.monotonic() - since < self.retry_seconds

    def failed(self, message: str, *args: object, key: Hashable = None, quiet: bool = False) -> None:
        """Record a failure; the first one (unless `quiet`) is logged with message % args."""
        with self._lock:
            self._down_since[key] = time.monotonic()
            say = not self._said and not quiet
            if say:
                self._said = True
        if say:
            log.info(message, *args)

    def recovered(self, key: Hashable = None) -> None:
        self._down_since.pop(key, None)


class Reach(Outage):
    """The Outage of one runtime at one address, with what stays empty while it is down."""

    def __init__(self, what: str, address: str, consequence: str) -> None:
        super().__init__()
        self.what = what                    # "docker", "containerd", "the CRI runtime"
        self.address = address
        self.consequence = consequence
        self._detail = ""

    def check(self, say: bool = True) -> None:
        """Raise RuntimeUnavailable while the runtime is left alone after a failure. A failure
        kept quiet (a runtime not on this host, found by its watcher) is said now, once, when
        something needs the runtime (`say`)."""
        if self.resting():
            if say and not self._said and self._detail:
                super().failed("%s: cannot reach %s (%s): %s", self.what, self.address, self._detail,
                               self.consequence)
            raise RuntimeUnavailable(f"cannot reach {self.what} at {self.address}", f"{self.what} at {self.address}")

    def absent(self) -> bool:
        """No socket at the runtime's address: the runtime is not installed or not running
        here, which is not worth a line on every capture of a host without containers."""
        path = self.address.removeprefix("unix://")
        if not path.startswith("/"):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            try:
                s.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                return True         # no socket, or one nobody listens on (a stopped runtime)
            except OSError:
                return False
        return False

    def failed(self, detail: str, quiet: bool = False) -> RuntimeUnavailable:  # type: ignore[override]
        """Note a failure (said once, unless quiet); the exception to raise."""
        self._detail = detail
        super().failed("%s: cannot reach %s (%s): %s", self.what, self.address, detail,
                       self.consequence, quiet=quiet)
        return RuntimeUnavailable(f"cannot reach {self.what} at {self.address}: {detail}",
                                  f"{self.what} at {self.address}")

    def ok(self) -> None:
        self.recovered()

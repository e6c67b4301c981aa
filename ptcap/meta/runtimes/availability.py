"""A container runtime (or API server) that may not answer: the error its clients raise, and
the one policy they all follow: say it once at info level, then leave it alone for a while."""
from __future__ import annotations

import logging
import time
from typing import Hashable

log = logging.getLogger("ptcap")

RETRY_SECONDS = 10.0


class RuntimeUnavailable(Exception):
    """The runtime's address does not answer."""


class Outage:
    """When a service last failed (per key: one pod, one address) and whether the user was told.

    Every packet may ask a runtime about its container: a runtime that is down must cost one
    failed call per RETRY_SECONDS, and one line in the log for the whole capture."""

    def __init__(self, retry_seconds: float = RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self._down_since: dict[Hashable, float] = {}
        self._said = False

    def resting(self, key: Hashable = None) -> bool:
        """True while a failure of `key` is recent enough that asking again is pointless."""
        since = self._down_since.get(key)
        return since is not None and time.monotonic() - since < self.retry_seconds

    def failed(self, message: str, *args: object, key: Hashable = None, quiet: bool = False) -> None:
        """Record a failure; the first one (unless `quiet`) is logged with message % args."""
        self._down_since[key] = time.monotonic()
        if not self._said and not quiet:
            log.info(message, *args)
            self._said = True

    def recovered(self, key: Hashable = None) -> None:
        self._down_since.pop(key, None)

"""What every container runtime client shares: the container record, the error for a
runtime that does not answer, and the rule for one that is down (say it once, try later)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("ptcap")

RETRY_SECONDS = 10.0


@dataclass(slots=True)
class ContainerInfo:
    id: str
    name: str = ""
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    pid: int = 0            # its init process (0 when not running)
    runtime: str = "docker"
    namespace: str = ""     # containerd's namespace
    sandbox: str = ""       # the CRI pod sandbox it runs in


class RuntimeUnavailable(Exception):
    """The runtime's address does not answer."""


class Reach:
    """Whether a runtime answers. One that fails is said to be unreachable once (at info
    level, with what stays empty because of it) and left alone for RETRY_SECONDS; the
    resolver and the event watcher of a runtime share one, so it is said once in all."""

    def __init__(self, what: str, address: str, consequence: str) -> None:
        self.what = what                    # "docker", "containerd", "the CRI runtime"
        self.address = address
        self.consequence = consequence
        self._down_since: float | None = None
        self._said = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise RuntimeUnavailable while the runtime is left alone after a failure."""
        down = self._down_since
        if down is not None and time.monotonic() - down < RETRY_SECONDS:
            raise RuntimeUnavailable(f"cannot reach {self.what} at {self.address}")

    def failed(self, detail: str, quiet: bool = False) -> RuntimeUnavailable:
        """Note a failure (said once, unless quiet); the exception to raise."""
        with self._lock:
            self._down_since = time.monotonic()
            say = not self._said and not quiet
            if say:
                self._said = True
        if say:
            log.info("%s: cannot reach %s (%s): %s", self.what, self.address, detail, self.consequence)
        return RuntimeUnavailable(f"cannot reach {self.what} at {self.address}: {detail}")

    def ok(self) -> None:
        self._down_since = None


def short_error(e: BaseException) -> str:
    """The first line of an error, at most 160 characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) < 160 else text[:157] + "..."

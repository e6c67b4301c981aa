"""The request that ends a capture: set by a signal handler (or by the engine itself, -c), read
by the engine loop. Its own module, free of imports, so that the CLI can install it before it
imports anything heavy."""
from __future__ import annotations


class Stop:
    """Set by a signal handler (SIGINT/SIGTERM/SIGHUP): the loop finishes the batch it has,
    drains what is queued and returns. `signal` is the signal that asked (None: no signal)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def __call__(self, signum=None, frame=None) -> None:
        self.requested = True
        if signum is not None:
            self.signal = signum

"""SIGINT, SIGTERM and SIGHUP ask the capture to stop: it drains what is queued and exits."""
from __future__ import annotations

import signal

from ptcap.pipeline.engine import Stop


def stop_on_signals() -> Stop:
    stop = Stop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    return stop

"""SIGINT, SIGTERM and SIGHUP ask the capture to stop: it drains what is queued and exits.

The CLI installs the handlers first thing (early()), before its heavy imports, so that a Ctrl-C
or SIGTERM during start-up is a stop like any other, never a KeyboardInterrupt traceback."""
from __future__ import annotations

import signal

from ptcap.pipeline.stop import Stop

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_early: Stop | None = None


def _install(stop: Stop) -> None:
    for sig in _SIGNALS:
        # as tcpdump: a SIGHUP ignored by nohup stays ignored
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        signal.signal(sig, stop)


def early() -> None:
    """Catch the stop signals from now on; the capture that starts takes them over
    (stop_on_signals), anything else gives them back (give_back). The `ptcap` command starts
    Python with them blocked (install.sh's launcher): one that came while Python started (its
    site's .pth files, the imports before this) is pending, and delivered here, to the Stop."""
    global _early
    _early = Stop()
    _install(_early)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def stop_on_signals() -> Stop:
    """The Stop the signals set: early()'s (a signal that came during start-up already set
    it), else a new one."""
    global _early
    stop, _early = _early, None
    if stop is None or signal.getsignal(signal.SIGINT) is not stop:
        stop = Stop()
        _install(stop)
    return stop


def give_back() -> None:
    """Not a capture (-r, --version, ...): the default handlers again, and a signal that came
    meanwhile delivered to them (Ctrl-C: KeyboardInterrupt; SIGTERM: the end)."""
    global _early
    stop, _early = _early, None
    if stop is None:
        return
    for sig in _SIGNALS:
        if signal.getsignal(sig) is stop:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    if stop.signal is not None:
        signal.raise_signal(stop.signal)

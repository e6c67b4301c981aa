"""The time stamp that starts each line: -t (none) … -ttttt, micro- or nanoseconds."""
from __future__ import annotations

import time


class Clock:
    """Formats packet times as tcpdump does; keeps the first and previous times for -ttt/-ttttt."""

    __slots__ = ("mode", "nano", "first", "prev", "_sec", "_prefix")

    def __init__(self, mode: int, nano: bool) -> None:
        self.mode = mode
        self.nano = nano
        self.first = None
        self.prev = None
        self._sec = None
        self._prefix = ""

    def _frac(self, ns: int) -> str:
        return f"{ns:09d}" if self.nano else f"{ns // 1000:06d}"

    def stamp(self, ts_ns: int) -> str:
        mode = self.mode
        if mode == 0 or mode == 4:
            sec, ns = divmod(ts_ns, 1_000_000_000)
            if sec != self._sec:
                t = time.localtime(sec)
                self._sec = sec
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S" if mode == 4 else "%H:%M:%S", t)
            return f"{self._prefix}.{ns:09d} " if self.nano else f"{self._prefix}.{ns // 1000:06d} "
        if mode == 1:
            return ""
        if mode == 2:
            sec, ns = divmod(ts_ns, 1_000_000_000)
            return f"{sec}.{self._frac(ns)} "
        # -ttt: since the previous packet; -ttttt: since the first
        if mode == 3:
            base = self.prev if self.prev is not None else ts_ns
            self.prev = ts_ns
        else:
            if self.first is None:
                self.first = ts_ns
            base = self.first
        delta = ts_ns - base
        sign = " "
        if delta < 0:
            sign, delta = "-", -delta
        sec, ns = divmod(delta, 1_000_000_000)
        h, rem = divmod(sec, 3600)
        m, s = divmod(rem, 60)
        return f"{sign}{h:02d}:{m:02d}:{s:02d}.{self._frac(ns)} "

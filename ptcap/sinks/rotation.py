"""Output file rotation as tcpdump does it: -C size, -W count, -G seconds, and its file names.

tcpdump's names: with -C alone the first file is FILE, then FILE1, FILE2, ...; with -W the
number is always there, zero-padded to the digits of W-1 (FILE0..FILE9 for -W 10) and the
files are reused in a ring; with -G the name is first passed through strftime(3).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ptcap.errors import PtcapError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgG]?)$")


def parse_size(text: str) -> int:
    """-C: millions of bytes, or bytes with a k/m/g suffix (powers of 1024), as tcpdump."""
    m = _SIZE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise PtcapError(f"invalid file size {text}")
    value, unit = float(m.group(1)), m.group(2).lower()
    scale = {"": 1_000_000, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[unit]
    return int(value * scale)


def _digits(count: int) -> int:
    """How many digits tcpdump pads file numbers to for -W count (digits of count-1)."""
    n, chars = count - 1, 0
    while n > 0:
        chars += 1
        n //= 10
    return chars


@dataclass
class Rotation:
    path: str
    size: int | None = None        # -C, bytes
    count: int | None = None       # -W
    seconds: int | None = None     # -G

    def __post_init__(self) -> None:
        if self.count is not None and self.count <= 0:
            raise PtcapError(f"invalid number of output files {self.count}")
        if self.seconds is not None and self.seconds <= 0:
            raise PtcapError(f"invalid number of seconds {self.seconds}")
        if self.count is not None and self.size is None and self.seconds is None:
            raise PtcapError("-W requires -C or -G")
        self._number = 0           # -C file number within the current -G period
        self._files = 0            # files started (for -G -W: stop after W)
        self._started = 0.0

    @property
    def active(self) -> bool:
        return self.size is not None or self.seconds is not None

    def first(self) -> str:
        self._started = time.time()
        self._files = 1
        return self._name()

    def _name(self) -> str:
        base = time.strftime(self.path, time.localtime(self._started)) if self.seconds else self.path
        chars = _digits(self.count) if self.count else 0
        number = self._number % self.count if self.count and self.size else self._number
        if number == 0 and chars == 0:
            return base
        return f"{base}{number:0{chars}d}"

    def time_is_up(self, now: float) -> bool:
        return bool(self.seconds) and now - self._started >= self.seconds

    def next_for_size(self) -> str:
        self._number += 1
        self._files += 1
        return self._name()

    def next_for_time(self, now: float) -> str | None:
        """The next -G file, or None when -W files have been written (capture ends)."""
        if self.count and not self.size and self._files >= self.count:
            return None
        self._started = now - (now - self._started) % self.seconds
        self._number = 0
        self._files += 1
        return self._name()

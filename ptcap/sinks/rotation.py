"""Output file rotation as tcpdump does it: -C size, -W count, -G seconds, and its file names.

tcpdump's names: with -C alone the first file is FILE, then FILE1, FILE2, ...; with -W the
number is always there, zero-padded to the digits of W-1 (FILE0..FILE9 for -W 10) and the
files are reused in a ring; with -G the name is first passed through strftime(3).
"""
from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ptcap.errors import PtcapError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)(?:([kKmMgG])[bB]?)?$")


def parse_size(text: str) -> int:
    """-C: millions of bytes, or bytes with a k/m/g suffix (powers of 1024), as tcpdump; also
    ptcpdump's kb/mb/gb."""
    m = _SIZE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise PtcapError(f"invalid file size {text}")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
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
        if self.seconds is not None and self.seconds < 0:
            raise PtcapError(f"invalid number of seconds {self.seconds}")
        self.seconds = self.seconds or None     # -G 0: no time rotation, as in tcpdump
        if self.count is not None and self.size is None and self.seconds is None:
            self.count = None       # tcpdump ignores -W without -C or -G: one file, its name
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
        chars = _digits(self.count) if self.count and self.size else 0    # -G -W alone: no number
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


class Closer:
    """Closes the files a rotation is done with on a thread of its own: on a disk, closing a
    file just written can wait for its blocks to be allocated (ext4 does so for a file it
    truncated first, as -W does when it reuses a name), and the reader must not wait. Once a
    file is closed, -z's command is started on it (tcpdump's postrotate-command)."""

    def __init__(self, postrotate: str | None = None) -> None:
        self._files: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None
        self._postrotate = postrotate
        self._commands: list[subprocess.Popen] = []

    def close(self, f, name: str | None = None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ptcap-closer", daemon=True)
            self._thread.start()
        self._files.put((f, name))

    def _run(self) -> None:
        while True:
            item = self._files.get()
            if item is None:
                return
            f, name = item
            try:
                f.close()
            except OSError as e:
                self._error = self._error or e
                continue
            if self._postrotate and name:
                self._start(name)

    def _start(self, name: str) -> None:
        self._commands = [c for c in self._commands if c.poll() is None]
        command = postrotate(self._postrotate, name)
        if command is not None:
            self._commands.append(command)

    def finish(self) -> None:
        """Wait for every file handed over to be closed and for -z's commands on them (a
        compressor cut short would leave half a file); raise the first close that failed."""
        if self._thread is not None:
            self._files.put(None)
            self._thread.join()
            self._thread = None
        for command in self._commands:
            command.wait()
        self._commands = []
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def postrotate(command: str, name: str) -> subprocess.Popen | None:
    """-z: `command name` as tcpdump runs it, found on PATH, at the lowest priority so it
    does not disturb the capture; in a process group of its own, so the Ctrl-C that ends the
    capture does not cut it short (ptcap waits for it). One that cannot start is said in
    tcpdump's words, and the capture goes on."""
    try:
        child = subprocess.Popen([command, name], process_group=0, stdin=subprocess.DEVNULL, close_fds=True)
    except OSError as e:
        sys.stderr.write(f"compress_savefile: execlp({command}, {name}) failed: {e.strerror}\n")
        sys.stderr.flush()
        return None
    with contextlib.suppress(OSError):      # gone already: nothing to lower
        os.setpriority(os.PRIO_PROCESS, child.pid, 19)
    return child

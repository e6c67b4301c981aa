"""The loopback flood the benchmarks share: bench/flood.c built, and what the flood needs
around it (a socket that takes the datagrams and never reads them, an idle process whose
pid selects nothing)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent


def build_flooder(workdir: Path) -> Path:
    exe = workdir / "flood"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "flood.c")], check=True)
    return exe


@contextlib.contextmanager
def quiet_target(port: int) -> Iterator[int]:
    """127.0.0.1:port bound by a socket that never reads; yields the pid of a process that
    sends nothing (for `--pid` that matches no packet). Both are gone afterwards."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", port))
    idle = subprocess.Popen(["sleep", "infinity"])
    try:
        yield idle.pid
    finally:
        idle.kill()
        idle.wait()
        sink.close()

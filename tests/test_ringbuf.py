"""The ring buffer's shared positions: what the kernel sees while ptcap reads."""
from __future__ import annotations

import mmap
import os
import time

from ptcap.kernel import bpf
from ptcap.kernel.ringbuf import RingBuffer

import pytest

pytestmark = pytest.mark.root      # real BPF, namespaces, daemons

SIZE = 1 << 20
SECONDS = 1.0


def _watch_consumer(map_fd: int, ready_w: int, result_w: int) -> None:
    """Child: watch the consumer position as the kernel would, count every step backwards."""
    page = mmap.mmap(map_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
    pos = memoryview(page)[:8].cast("Q")
    os.write(ready_w, b"r")
    backwards = reads = last = 0
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        for _ in range(1000):
            value = pos[0]
            if value < last:
                backwards += 1
            last = value
        reads += 1000
    os.write(result_w, f"{backwards} {reads}".encode())
    os._exit(0)


def test_consumer_position_never_seen_torn():
    """Handing records back writes the consumer position in one store: a producer must never
    see it go back (once it read 0 mid-write and took the ring for full, dropping packets)."""
    fd = bpf.map_create(bpf.MapType.RINGBUF, 0, 0, SIZE)
    ring = RingBuffer(fd, SIZE)
    ready_r, ready_w = os.pipe()
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        _watch_consumer(fd, ready_w, result_w)
    try:
        os.read(ready_r, 1)
        end = time.monotonic() + SECONDS
        writes = 0
        while time.monotonic() < end:
            for _ in range(1000):
                ring._next = ring.cons + 8      # as if one 8-byte record had been read
                ring.release()
            writes += 1000
        backwards, reads = map(int, os.read(result_r, 100).split())
    finally:
        os.waitpid(child, 0)
        ring.close()
        os.close(fd)
    assert writes > 100_000 and reads > 100_000
    assert backwards == 0, f"the consumer position went backwards {backwards} times in {reads} reads"


def test_a_signal_ends_a_long_idle_wait_at_once():
    """An idle capture writing a file sleeps up to a second per poll: Ctrl-C must not wait
    that out. The engine's wake-up pipe (signal.set_wakeup_fd) is watched by the ring's wait,
    so a signal ends it: a wait of a minute returns as soon as the signal comes."""
    import signal
    import threading

    from ptcap.pipeline.engine import _signal_wakeup

    fd = bpf.map_create(bpf.MapType.RINGBUF, 0, 0, SIZE)
    ring = RingBuffer(fd, SIZE)
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(a[0]))
    undo = _signal_wakeup(ring)
    assert undo is not None
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        t0 = time.monotonic()
        ring.wait(60)
        waited = time.monotonic() - t0
        assert got == [signal.SIGUSR1]
        assert waited < 30, waited
        t0 = time.monotonic()
        ring.wait(0.1)      # the pipe was emptied: the next wait runs its timeout
        assert time.monotonic() - t0 >= 0.09
    finally:
        timer.cancel()
        undo()
        signal.signal(signal.SIGUSR1, old)
        ring.close()
        os.close(fd)

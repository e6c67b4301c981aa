"""The priority of the threads that follow the container runtimes.

A container's name, image and labels can be read from its runtime only while it exists, and
a `ctr run --rm` or `docker run --rm` of one request lives 100-200 ms. On a host whose cores
are busy, a watcher thread at the default priority was measured reading the runtime's create
event 95-140 ms late (behind the busy tasks, and behind the packet thread, preempted while it
held the interpreter): the container was gone and its packets carried its id for a name.
The watchers, and the gRPC library's own
threads (they read the sockets, and inherit the priority of the thread that starts them), run
at NICE instead: they sleep but for a few hundred microseconds per container event.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

NICE = -10


def _set(nice: int) -> bool:
    try:
        # Linux: with a thread's id, setpriority(2) sets that thread's nice value alone
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return True
    except OSError:         # not permitted (no CAP_SYS_NICE): the default priority then
        return False


def raise_this_thread() -> None:
    """Run the calling thread (and the threads it starts from now on) at NICE."""
    _set(NICE)


@contextlib.contextmanager
def raised() -> Iterator[None]:
    """The calling thread at NICE for the block: the threads started in it keep NICE."""
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    changed = before > NICE and _set(NICE)
    try:
        yield
    finally:
        if changed:
            _set(before)

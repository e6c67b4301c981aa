"""The containers the runtimes told us about: listed at start, then learnt from each
runtime's event stream as they are created, and kept KEEP_SECONDS after they are removed
(as exited processes are kept), so a container that lived for a second still has its name,
image, labels and pod when its packets are read.

Filled from the watchers' threads and read by the packet join: one lock. Listeners (the
container selectors) are called, outside the lock, with each container learnt.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from ptcap.meta.containers import ContainerInfo

KEEP_SECONDS = 60.0
# which runtime describes a container best when several know it (a Docker container is
# also a containerd container; a kubelet's is also a CRI one)
_RANK = {"docker": 3, "cri": 2, "containerd": 1}


class ContainerRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, ContainerInfo] = {}
        self._gone: deque[tuple[float, str]] = deque()
        self.listeners: list[Callable[[ContainerInfo], None]] = []
        self.namespaces: set[str] = set()       # containerd namespaces seen

    def learn(self, info: ContainerInfo) -> None:
        if not info.id:
            return
        with self._lock:
            old = self._known.get(info.id)
            if old is not None and _RANK.get(old.runtime, 0) > _RANK.get(info.runtime, 0):
                old.pid = old.pid or info.pid
                old.namespace = old.namespace or info.namespace
                info = old
            else:
                if old is not None:
                    info.pid = info.pid or old.pid
                    info.sandbox = info.sandbox or old.sandbox
                self._known[info.id] = info
            if info.namespace:
                self.namespaces.add(info.namespace)
        for listener in list(self.listeners):
            listener(info)

    def gone(self, container_id: str) -> None:
        """Removed by its runtime: kept KEEP_SECONDS more, for its last packets."""
        now = time.monotonic()
        with self._lock:
            self._gone.append((now, container_id))
            while self._gone and now - self._gone[0][0] > KEEP_SECONDS:
                _, old = self._gone.popleft()
                if not any(cid == old for _, cid in self._gone):
                    self._known.pop(old, None)

    def get(self, container_id: str) -> ContainerInfo | None:
        with self._lock:
            return self._known.get(container_id)

    def all(self) -> list[ContainerInfo]:
        with self._lock:
            return list(self._known.values())

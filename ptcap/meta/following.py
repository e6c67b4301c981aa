"""Following containers: which mount namespaces --container-id, --container-name and
--pod-name select now and later, and the network namespaces of those containers."""
from __future__ import annotations

import os
import time

from ptcap.kernel.selectors import mntns_of
from ptcap.meta.containers import proc_container
from ptcap.meta.runtimes.availability import RuntimeUnavailable
from ptcap.meta.runtimes.kubernetes import pod_from_labels


class ContainerSelector:
    """--container-id, --container-name, --pod-name: the mount namespaces of the matching
    containers, which every process of a container shares (`docker exec` ones too).

    Containers that start later with a matching name or pod are found by asking the runtime
    again every REFRESH_SECONDS (poll()); their namespaces are added to the kernel's map.
    Without a reachable runtime, --container-id still works from the processes' cgroup paths.
    """

    REFRESH_SECONDS = 1.0

    def __init__(self, runtimes: list, container_id: str = "", container_name: str = "",
                 pod: tuple[str, str] | None = None) -> None:
        self.runtimes = runtimes        # resolvers with running() (docker, containerd)
        self.container_id = container_id
        self.container_name = container_name.lstrip("/")
        self.pod = pod
        self.mntns: set[int] = set()
        # the matching containers' network namespaces: inode → (name, /proc/PID/ns/net)
        self.netns: dict[int, tuple[str, str]] = {}
        self._handed: set[int] = set()
        self._last = 0.0

    def describe(self) -> str:
        if self.container_id:
            return f"--container-id {self.container_id}"
        if self.container_name:
            return f"--container-name {self.container_name}"
        return f"--pod-name {self.pod[0]}.{self.pod[1]}"

    def matches(self, container) -> bool:
        if self.container_id and not container.id.startswith(self.container_id):
            return False
        if self.container_name and container.name != self.container_name:
            return False
        if self.pod is not None:
            pod = pod_from_labels(container.labels)
            if pod is None or (pod.name, pod.namespace or "default") != self.pod:
                return False
        return True

    def resolve(self) -> set[int]:
        """Namespaces of the matching containers running now (raises RuntimeUnavailable
        when the runtime is needed and down)."""
        self._last = time.monotonic()
        named, failures = [], []
        for runtime in self.runtimes:
            try:
                named += [(c.name or c.id[:12], c.pid) for c in runtime.running(self.matches) if c.pid]
            except RuntimeUnavailable as e:
                failures.append(e)
        if len(failures) == len(self.runtimes):
            if not self.container_id:
                raise failures[0]
            named = [(self.container_id[:12], pid) for pid in _pids_in_container(self.container_id)]
        for name, pid in named:
            try:
                self.netns.setdefault(os.stat(f"/proc/{pid}/ns/net").st_ino, (name, f"/proc/{pid}/ns/net"))
            except OSError:
                pass        # gone already
        found = {ns for ns in map(mntns_of, (pid for _, pid in named)) if ns}
        new = found - self.mntns
        self.mntns |= new
        return new

    def new_netns(self) -> list[tuple[str, str]]:
        """(name, path) of matching containers' network namespaces not handed out before."""
        fresh = [(inode, v) for inode, v in self.netns.items() if inode not in self._handed]
        self._handed.update(inode for inode, _ in fresh)
        return [v for _, v in fresh]

    def poll(self) -> set[int]:
        """New namespaces since the last look (at most once every REFRESH_SECONDS)."""
        if time.monotonic() - self._last < self.REFRESH_SECONDS:
            return set()
        try:
            return self.resolve()
        except Exception:       # noqa: BLE001 (the runtime went away: keep what we have)
            return set()


def _pids_in_container(prefix: str) -> list[int]:
    """Processes whose cgroup path names a container id starting with `prefix`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = proc_container(int(entry))
            if found is not None and found.id.startswith(prefix):
                pids.append(int(entry))
    return pids


def follower(session, selector: ContainerSelector, own_netns: bool):
    """What keeps a container selection current while capturing: containers that start
    later are added to the kernel's selection, and with `own_netns` every interface of a
    selected container's own network namespace is captured as well (a container off the
    host network then needs no --netns)."""

    def follow(initial: bool = False) -> None:
        for ns in (set() if initial else selector.poll()):
            session.select_mntns(ns)
        if own_netns:
            for name, path in selector.new_netns():
                session.add_namespace(path, name)
    return follow

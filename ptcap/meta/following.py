"""Following containers: which mount namespaces --container-id, --container-name and
--pod-name select now and later, and the network namespaces of those containers."""
from __future__ import annotations

import os
import time

from ptcap.kernel.admission import existing_cgroups
from ptcap.kernel.selectors import mntns_of
from ptcap.meta.containers import proc_container
from ptcap.meta.runtimes.availability import RuntimeUnavailable
from ptcap.meta.runtimes.kubernetes import pod_from_labels


class ContainerSelector:
    """--container-id, --container-name, --pod-name: the mount namespaces of the matching
    containers running at start, which every process of a container shares (`docker exec`
    ones too), and the cgroups of those that start later.

    A container that starts later is admitted by the kernel when its cgroup is made, before
    its first process runs (kernel/admission.py): --container-id's id or prefix is matched
    there; a name or pod is mapped to the container's id from its runtime's create event
    (watch()), which every runtime sends before it makes the container's cgroup. Their own
    network namespaces are found when they run (poll(), at once after an event, else every
    REFRESH_SECONDS). Without a reachable runtime, --container-id still works from cgroups.
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
        self._dirty = False
        self._admit = None
        # containers found later are selected by their mount namespaces only when the kernel
        # cannot admit their cgroups: a gone container's namespace inode is reused by the next
        self.mntns_later = True
        self.running_ids: set[str] = set()      # matching containers found running

    def watch(self, registry, admit) -> None:
        """Admit (admit(full id)) each matching container the runtimes report, from now on
        and those reported already."""
        self._admit = admit
        registry.listeners.append(self._learnt)
        for info in registry.all():
            self._learnt(info)

    def _learnt(self, info) -> None:
        if self.matches(info):
            self._admit(info.id)
            self._dirty = True

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
                running = [c for c in runtime.running(self.matches) if c.pid]
                self.running_ids.update(c.id for c in running)
                named += [(c.name or c.id[:12], c.pid) for c in running]
            except RuntimeUnavailable as e:
                failures.append(e)
        if len(failures) == len(self.runtimes):
            if not self.container_id:
                if len(failures) == 1:
                    raise failures[0]
                raise RuntimeUnavailable("no container runtime answers (" +
                                         ", ".join(e.where or str(e) for e in failures) + ")")
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
        """New namespaces since the last look (at once after a matching container was
        reported, else at most once every REFRESH_SECONDS)."""
        if not self._dirty and time.monotonic() - self._last < self.REFRESH_SECONDS:
            return set()
        self._dirty = False
        try:
            new = self.resolve()
        except Exception:       # noqa: BLE001 (the runtime went away: keep what we have)
            return set()
        return new if self.mntns_later else set()


def _pids_in_container(prefix: str) -> list[int]:
    """Processes whose cgroup path names a container id starting with `prefix`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = proc_container(int(entry))
            if found is not None and found.id.startswith(prefix):
                pids.append(int(entry))
    return pids


def admit_later(session, selector: ContainerSelector, metadata, report) -> None:
    """Containers that start from now on: admitted in the kernel at their cgroup's mkdir
    (ids from the runtimes' create events), their cgroups named after they are gone."""
    admission = session.admission
    metadata.finder.kernel_dirs = admission.directory
    metadata.selected_prefix = selector.container_id
    selector.watch(metadata.registry, admission.admit)
    selector.mntns_later = bool(admission.error)
    # the containers running at start, by their cgroups when each has one (a gone
    # container's mount namespace inode is given to the next one made)
    if admission.at_mkdir and selector.mntns and selector.running_ids and \
            all(existing_cgroups(cid) for cid in selector.running_ids):
        for cid in selector.running_ids:
            for cgroup_id in existing_cgroups(cid):
                admission.admit_cgroup(cgroup_id)
        for inode in selector.mntns:
            session.unselect_mntns(inode)
    if admission.error:
        report.write(f"ptcap: {selector.describe()}: cgroup_mkdir admission unavailable "
                     f"({admission.error.splitlines()[0]}); containers that start later are "
                     "selected once their runtime reports them\n")


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

"""Which container a process runs in, from its cgroup path.

Container runtimes name a container's cgroup after its id. The layouts we know (cgroup v1
controllers and the v2 hierarchy alike):

    /docker/<id>                                        docker, cgroupfs driver
    /system.slice/docker-<id>.scope                     docker, systemd driver
    /system.slice/cri-containerd-<id>.scope             containerd CRI, systemd driver
    /<namespace>/<id>                                   containerd (ctr, nerdctl), cgroupfs
    /machine.slice/libpod-<id>.scope                    podman
    /system.slice/crio-<id>.scope                       CRI-O
    /kubepods/burstable/pod<uid>/<id>                   kubelet, cgroupfs driver
    /kubepods.slice/kubepods-besteffort.slice/
        kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope

The kernel tells us a packet's cgroup v2 id (the inode of its cgroup directory); the path
behind an id is found once and cached.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

from ptcap.kernel.cgroup import v2_mount
from ptcap.meta.bounded import keep_newest

_HEX64 = r"[0-9a-f]{64}"
# the last path component that names a container (crio-conmon-<id> is CRI-O's monitor: not it)
MAX_CGROUPS = 1 << 16      # cgroup ids remembered (paths, containers): a host makes and removes them

_COMPONENT = re.compile(
    rf"^(?:(?P<runtime>docker|cri-containerd|containerd|crio|libpod|nerdctl)-)?(?P<id>{_HEX64})(?:\.scope)?$")
_POD = re.compile(r"(?:^|[-/])pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$")
_RUNTIMES = {"docker": "docker", "cri-containerd": "containerd", "containerd": "containerd",
             "crio": "cri-o", "libpod": "podman", "nerdctl": "containerd"}


@dataclass(slots=True)
class ContainerInfo:
    """A container as its runtime describes it (docker, containerd, the CRI)."""

    id: str
    name: str = ""
    image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    pid: int = 0            # its init process (0 when not running)
    runtime: str = "docker"
    namespace: str = ""     # containerd's namespace
    sandbox: str = ""       # the CRI pod sandbox it runs in


@dataclass(slots=True, frozen=True)
class CgroupContainer:
    """What a cgroup path says about a container: its id, the runtime's hint, the pod uid."""

    id: str
    runtime: str = ""       # docker, containerd, cri-o, podman; "" when the layout does not say
    pod_uid: str = ""       # from a kubepods path
    namespace: str = ""     # containerd's namespace, when known


def parse_cgroup_path(path: str, namespaces: Callable[[], set[str]] | None = None) -> CgroupContainer | None:
    """The container a cgroup path belongs to, or None (a host process). `namespaces` gives
    containerd's namespaces, for its /<namespace>/<id> layout (ids of any form)."""
    parts = [p for p in path.split("/") if p]
    found = _parse_parts(parts)
    if found is None and namespaces is not None and len(parts) >= 2 and parts[-2] in namespaces():
        found = CgroupContainer(parts[-1], "containerd", namespace=parts[-2])
    return found


def _parse_parts(parts: list[str]) -> CgroupContainer | None:
    for i in range(len(parts) - 1, -1, -1):
        m = _COMPONENT.match(parts[i])
        if m is None:
            continue
        runtime = _RUNTIMES.get(m.group("runtime") or "", "")
        if not runtime and i > 0 and parts[i - 1] == "docker":
            runtime = "docker"
        pod_uid = ""
        for part in parts[:i]:
            p = _POD.search(part)
            if p:
                pod_uid = p.group("uid").replace("_", "-")
        if not runtime and pod_uid:
            runtime = "kubernetes"
        namespace = "k8s.io" if m.group("runtime") == "cri-containerd" else ""
        return CgroupContainer(m.group("id"), runtime, pod_uid, namespace)
    return None


def parse_proc_cgroup(text: str, namespaces: Callable[[], set[str]] | None = None) -> CgroupContainer | None:
    """The container named by any hierarchy in a /proc/PID/cgroup file (v2 line "0::/..."
    first, then the v1 controllers of a hybrid or v1 host)."""
    paths = []
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        _controllers, _, path = rest.partition(":")
        if hid == "0":
            paths.insert(0, path)
        else:
            paths.append(path)
    for path in paths:
        found = parse_cgroup_path(path, namespaces)
        if found is not None:
            return found
    return None


def proc_container(pid: int, namespaces: Callable[[], set[str]] | None = None) -> CgroupContainer | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return parse_proc_cgroup(f.read(), namespaces)
    except OSError:
        return None


@dataclass
class CgroupPaths:
    """cgroup v2 id → path below the v2 mount: for a cgroup made since the capture started,
    from what the kernel kept at its mkdir (`kernel`: id → (parent id, name), which outlives
    the directory); else by walking the hierarchy on a miss."""

    root: str | None = field(default_factory=v2_mount)
    _paths: dict[int, str] = field(default_factory=dict)
    kernel: Callable[[int], tuple[int, str] | None] | None = None

    def __post_init__(self) -> None:
        # the cgroups of the start, known at once: one whose processes are gone before their
        # first packet is looked at (a container whose only process was short-lived) is named
        if self.root is not None:
            self._walk()

    def path(self, cgroup_id: int) -> str | None:
        if not cgroup_id or self.root is None:
            return None
        path = self._paths.get(cgroup_id)
        if path is None:
            path = self._from_kernel(cgroup_id)
        if path is None:
            path = self._walk().get(cgroup_id, "")      # "" = not found (it may be gone)
            self._remember(cgroup_id, path)
        return path or None

    def _from_kernel(self, cgroup_id: int, depth: int = 0) -> str | None:
        if self.kernel is None or depth > 32:
            return None
        found = self.kernel(cgroup_id)
        if found is None:
            return None
        parent_id, name = found
        parent = self._paths.get(parent_id)
        if parent is None:
            try:
                if parent_id == os.stat(self.root).st_ino:
                    parent = ""
            except OSError:
                return None
        if parent is None:
            parent = self._from_kernel(parent_id, depth + 1)
        if parent is None:
            parent = self._walk().get(parent_id)
        if parent is None:
            return None
        path = f"{parent.rstrip('/')}/{name}"
        self._remember(cgroup_id, path)
        return path

    def _remember(self, cgroup_id: int, path: str) -> None:
        """Keep an id's path as the newest entry (dropped last)."""
        self._paths.pop(cgroup_id, None)
        self._paths[cgroup_id] = path
        keep_newest(self._paths, MAX_CGROUPS)

    def _walk(self) -> dict[int, str]:
        """Every cgroup of the hierarchy now (also kept, up to MAX_CGROUPS of them)."""
        root = self.root
        walked: dict[int, str] = {}
        todo = [root]
        while todo:
            top = todo.pop()
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        walked[entry.inode()] = entry.path[len(root):] or "/"
                        todo.append(entry.path)
                except OSError:
                    continue
        self._paths.update(walked)
        keep_newest(self._paths, MAX_CGROUPS)
        return walked

    def __len__(self) -> int:
        return len(self._paths)

class ContainerFinder:
    """The container of an owner record: from its cgroup id (cached per id), else from the
    process's /proc/PID/cgroup (hybrid hosts whose runtime uses v1 controllers only)."""

    def __init__(self, namespaces: Callable[[], set[str]] | None = None) -> None:
        self._namespaces = namespaces
        self._cgroups = CgroupPaths()
        self.kernel_dirs = None     # id → (parent id, name) of cgroups made since start
        self.known = None           # is this a container id? (/<namespace>/<id> of unknown namespaces)
        self._by_cgroup: dict[int, CgroupContainer | None] = {}

    def find(self, pid: int, cgroup_id: int) -> CgroupContainer | None:
        found = self._by_cgroup.get(cgroup_id, False)
        if found is not False:
            return found
        self._cgroups.kernel = self.kernel_dirs
        path = self._cgroups.path(cgroup_id)
        if path is not None and path != "/":
            found = parse_cgroup_path(path, self._namespaces)
            parts = path.rstrip("/").split("/")
            if found is None and len(parts) >= 3 and self.known is not None and self.known(parts[-1]):
                found = CgroupContainer(parts[-1], "containerd", namespace=parts[-2])
            self._by_cgroup[cgroup_id] = found
            keep_newest(self._by_cgroup, MAX_CGROUPS)
            return found
        # the v2 root or an unknown id: the runtime may use only v1 controllers (per process)
        return proc_container(pid, self._namespaces)

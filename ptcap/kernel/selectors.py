"""Process selectors applied in the kernel: --pid, --pname, --uid, -f, containers and pods.

A packet is copied to user space only when its owner matches every kind of selector the
user gave (the pids and names together form one kind); see bpf/capture.bpf.c who_matches.
"""
from __future__ import annotations

import enum
import os
import struct
import time
from dataclasses import dataclass, field

from ptcap.kernel import bpf


class Who(enum.IntFlag):
    """enum ptcap_who_bits in bpf/ptcap.h."""

    PIDS = 1
    COMMS = 2
    UIDS = 4
    MNTNS = 8
    FOLLOW = 16


@dataclass
class WhoFilter:
    pids: set[int] = field(default_factory=set)
    comms: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    mntns: set[int] = field(default_factory=set)
    follow: bool = False          # -f: children of selected processes, via sched_process_fork
    command: bool = False         # -- CMD: its pid joins `pids` once it is started
    containers: bool = False      # mntns came from --container-*/--pod-name (never empty then)

    def bits(self) -> Who:
        b = Who(0)
        if self.pids or self.command:
            b |= Who.PIDS
        if self.comms:
            b |= Who.COMMS
        if self.uids:
            b |= Who.UIDS
        if self.mntns or self.containers:
            b |= Who.MNTNS
        if self.follow:
            b |= Who.FOLLOW
        return b

    def __bool__(self) -> bool:
        return bool(self.bits())


_ONE = b"\x01"


def comm_key(name: str) -> bytes:
    """A comm as the kernel stores it: at most 15 bytes, NUL-padded to 16."""
    return name.encode()[:15].ljust(16, b"\0")


def load(who: WhoFilter, fds: dict[str, int]) -> None:
    """Fill the kernel's selector maps (fds by map name)."""
    u32 = struct.Struct("<I").pack
    for pid in who.pids:
        bpf.map_update(fds["ptcap_who_pids"], u32(pid), _ONE)
    for uid in who.uids:
        bpf.map_update(fds["ptcap_who_uids"], u32(uid), _ONE)
    for ns in who.mntns:
        bpf.map_update(fds["ptcap_who_mntns"], u32(ns), _ONE)
    for name in who.comms:
        bpf.map_update(fds["ptcap_who_comms"], comm_key(name), _ONE)


def add_pid(fd: int, pid: int) -> None:
    bpf.map_update(fd, struct.pack("<I", pid), _ONE)


def add_mntns(fd: int, inode: int) -> None:
    bpf.map_update(fd, struct.pack("<I", inode), _ONE)


def mntns_of(pid: int) -> int | None:
    """The mount namespace inode of a process (what the kernel's owner record carries)."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


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
            from ptcap.meta.runtimes.kubernetes import pod_from_labels
            pod = pod_from_labels(container.labels)
            if pod is None or (pod.name, pod.namespace or "default") != self.pod:
                return False
        return True

    def resolve(self) -> set[int]:
        """Namespaces of the matching containers running now (raises RuntimeUnavailable
        when the runtime is needed and down)."""
        from ptcap.meta.runtimes.docker_engine import RuntimeUnavailable
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
    from ptcap.meta.containers import proc_container
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = proc_container(int(entry))
            if found is not None and found.id.startswith(prefix):
                pids.append(int(entry))
    return pids

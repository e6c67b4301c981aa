"""Containers admitted in the kernel at cgroup_mkdir (bpf/cgroups.bpf.c).

The tracepoint program sees every new cgroup v2 directory before any process runs in it:
  - it keeps each one's name and parent (ptcap_cgroup_dirs), so the cgroup of a container
    that is already gone when its packets are read still has a path;
  - a directory whose name ends in a wanted container id (--container-id's prefix, or a full
    id user space learnt from a runtime's create event) has its cgroup id put in the capture's
    cgroup selector (ptcap_who_cgroups), and so has any directory made below one admitted.

Optional: when the program does not load, the capture goes on; containers are then admitted
when a runtime reports them (admit() walks the hierarchy for their existing cgroups).
Writes may come from the runtime watchers' threads: one lock, and nothing after close().
"""
from __future__ import annotations

import os
import struct
import threading

from ptcap.errors import PtcapError
from ptcap.kernel import bpf, libbpf, records
from ptcap.kernel.cgroup import v2_mount

ID_LEN = records.CONTAINER_ID_LEN
_NAME = records.CGROUP_NAME.struct      # a wanted cgroup directory name (map key)
_WANT = records.CGROUP_WANT.struct      # --container-id (the object's .bss)
_DIR = records.CGROUP_DIR.struct        # a cgroup directory as kept (parent, name)
_U64 = struct.Struct("<Q")
_ONE = b"\x01"
HOOK = "tp_btf/cgroup_mkdir"


class Admission:
    def __init__(self, cgroups_fd: int) -> None:
        self._cgroups_fd = cgroups_fd       # the capture object's ptcap_who_cgroups
        self._obj: libbpf.Object | None = None
        self._link: libbpf.Link | None = None
        self._dirs_fd = self._cids_fd = -1
        self._lock = threading.Lock()
        self._closed = False
        self.error = ""                     # why the mkdir program is not on ("" when it is)
        self.wanted: set[str] = set()

    @property
    def at_mkdir(self) -> bool:
        return self._link is not None

    def open(self, prefix: str = "") -> None:
        """Load and attach the mkdir program (prefix: --container-id, matched in the kernel)."""
        try:
            # optional, so checked here: a wrong object costs the admission only
            records.check_object(libbpf.objects_dir() / "cgroups.bpf.o")
            obj = self._obj = libbpf.Object("cgroups")
            obj.reuse_map("ptcap_who_cgroups", self._cgroups_fd)
            obj.load()
            self._dirs_fd = obj.map_fd("ptcap_cgroup_dirs")
            self._cids_fd = obj.map_fd("ptcap_who_cgnames")
            if prefix:
                raw = prefix.encode()[:ID_LEN]
                bpf.map_update(obj.map_fd(".bss"), struct.pack("<I", 0), _WANT.pack(len(raw), raw))
            self._link = obj.program("ptcap_cgroup_mkdir").attach()
        except (PtcapError, OSError) as e:
            self.error = str(e)

    def admit(self, container_id: str) -> None:
        """A wanted container by full id: admitted at its cgroup's mkdir; a cgroup it has
        already (it started before we learnt it) is admitted now. (Without the mkdir program,
        each report of the container looks for its cgroups again.)"""
        with self._lock:
            if self._closed or (container_id in self.wanted and self.at_mkdir):
                return
            self.wanted.add(container_id)
            if self._cids_fd >= 0:
                for name in layouts(container_id):
                    bpf.map_update(self._cids_fd, _NAME.pack(name.encode()), _ONE)
        for cgroup_id in existing_cgroups(container_id):
            self.admit_cgroup(cgroup_id)

    def admit_cgroup(self, cgroup_id: int) -> None:
        with self._lock:
            if not self._closed:
                bpf.map_update(self._cgroups_fd, _U64.pack(cgroup_id), _ONE)

    def directory(self, cgroup_id: int) -> tuple[int, str] | None:
        """(parent id, name) of a cgroup made since the capture started, even one since removed."""
        with self._lock:
            if self._closed or self._dirs_fd < 0:
                return None
            raw = bpf.map_lookup(self._dirs_fd, _U64.pack(cgroup_id), _DIR.size)
        if raw is None:
            return None
        parent, name = _DIR.unpack(raw)
        return parent, name.split(b"\0", 1)[0].decode(errors="replace")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._link is not None:
                self._link.destroy()
                self._link = None
            if self._obj is not None:
                self._obj.close()
                self._obj = None


def existing_cgroups(container_id: str) -> list[int]:
    """cgroup v2 ids of the directories that name this container (and those below them)."""
    root = v2_mount()
    if root is None:
        return []
    found = []
    todo = [(root, False)]
    while todo:
        top, inside = todo.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                here = inside or names(entry.name, container_id)
                if here:
                    found.append(entry.inode())
                todo.append((entry.path, here))
            except OSError:
                continue
    return found


# how runtimes name a container's cgroup directory (meta/containers.py has the full paths)
_RUNTIMES = ("docker", "cri-containerd", "containerd", "crio", "libpod", "nerdctl")


def layouts(container_id: str) -> list[str]:
    return [container_id] + [f"{r}-{container_id}.scope" for r in _RUNTIMES]


def names(directory: str, container_id: str) -> bool:
    """Does a cgroup directory's name say it is this container's?"""
    return directory in layouts(container_id)

"""Process selectors applied in the kernel: --pid, --pname, --uid, -f, containers and pods
(which containers' namespaces to select is ptcap.meta.following's work).

A packet is copied to user space only when its owner matches every kind of selector the
user gave (the pids and names together form one kind); see bpf/capture.bpf.c who_matches.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from ptcap.kernel import bpf
from ptcap.kernel.records import COMM_LEN, Who


@dataclass
class WhoFilter:
    pids: set[int] = field(default_factory=set)
    comms: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    mntns: set[int] = field(default_factory=set)
    follow: bool = False          # -f: children of selected processes, via sched_process_fork
    command: bool = False         # -- CMD: its pid joins `pids` once it is started
    containers: bool = False      # mntns came from --container-*/--pod-name (never empty then)
    container_prefix: str = ""    # --container-id: admitted in the kernel at cgroup_mkdir

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
    return name.encode()[:COMM_LEN - 1].ljust(COMM_LEN, b"\0")


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

"""Finding the cgroup v2 hierarchy (it need not be at /sys/fs/cgroup)."""
from __future__ import annotations

import os


def _mounted(mountinfo: str) -> str | None:
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4].replace("\\040", " ")
    except OSError:
        return None
    return None


def v2_mount() -> str | None:
    """The mount point of the cgroup2 filesystem, or None when it isn't mounted. Where this
    mount namespace has none (`ip netns exec` mounts a fresh /sys over it), another
    process's, reached through /proc/PID/root (init's first; init may refuse it): the hooks
    that name a new socket's process attach there."""
    here = _mounted("/proc/self/mountinfo")
    if here is not None:
        return here
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    for pid in pids:
        there = _mounted(f"/proc/{pid}/mountinfo")
        if there is not None and os.path.isdir(f"/proc/{pid}/root{there}"):
            return f"/proc/{pid}/root{there}"
    return None

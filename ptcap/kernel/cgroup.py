"""Finding the cgroup v2 hierarchy (it need not be at /sys/fs/cgroup)."""
from __future__ import annotations


def v2_mount() -> str | None:
    """The mount point of the cgroup2 filesystem, or None when it isn't mounted."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4].replace("\\040", " ")
    except OSError:
        return None
    return None

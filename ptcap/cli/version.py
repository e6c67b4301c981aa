"""`ptcap --version`: ptcap's, libpcap's and libbpf's versions, and what this kernel offers."""
from __future__ import annotations

import os
import platform

from ptcap import __version__


def report() -> str:
    from ptcap.kernel import libbpf
    from ptcap.filter import libpcap
    lines = [f"ptcap version {__version__}",
             f"{libpcap.lib_version()}",
             f"libbpf version {libbpf.version()}",
             f"kernel {platform.release()}"]
    if os.geteuid() != 0:
        lines.append("kernel hooks: run as root to probe them")
        return "\n".join(lines)
    from ptcap.kernel.session import probe_hooks
    hooks = probe_hooks()
    lines.append("kernel hooks usable: " + (", ".join(hooks.working) or "none"))
    for hook, why in hooks.failed.items():
        lines.append(f"kernel hook unavailable: {hook}: {why.splitlines()[0]}")
    return "\n".join(lines)

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


def fp_type() -> int:
    """`--fp-type`: tcpdump's own test suite picks its expected outputs by how the decoder's
    floating point rounds; the decoder is tcpdump, so tcpdump answers."""
    import subprocess
    import sys
    from ptcap.errors import PtcapError
    from ptcap.sinks.tcpdump_child import TCPDUMP, child_env
    sys.stdout.flush()
    try:
        return subprocess.run([TCPDUMP, "--fp-type"], env=child_env(), stdin=subprocess.DEVNULL).returncode
    except OSError as e:
        raise PtcapError(f"cannot run {TCPDUMP}: {e.strerror}") from None

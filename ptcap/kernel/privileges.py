"""Whether this process may capture: the capabilities a capture needs, and kernel BTF."""
from __future__ import annotations

import os

from ptcap.errors import PtcapError

CAPTURE_CAPS = (39, 38, 12)         # CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN


def has_capture_caps() -> bool:
    """Whether this process holds the capabilities a capture needs (root does; so does the
    Wireshark extcap's privileged helper, ptcap-capture, for members of group wireshark)."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return os.geteuid() == 0
    return all(eff >> cap & 1 for cap in CAPTURE_CAPS)


def check_privileges() -> None:
    """Capture needs root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON); say so in one line."""
    if not has_capture_caps():
        raise PtcapError("You don't have permission to capture; run as root "
                         "(needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")
    if not os.path.exists(os.environ.get("PTCAP_BTF", "/sys/kernel/btf/vmlinux")):
        raise PtcapError("this kernel has no BTF (/sys/kernel/btf/vmlinux): "
                         "CO-RE programs cannot be loaded; a kernel with CONFIG_DEBUG_INFO_BTF=y is needed")

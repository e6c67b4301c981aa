"""A capture for a user who is not root: through the privileged helper (ptcap-capture), which
runs this extcap with the capture's capabilities for members of group wireshark, and
what the extcap gives up when it runs so."""
from __future__ import annotations

import argparse
import os

from ptcap.cli.extcap_dialog import TREE, ExtcapError

# The privileged half, for users who are not root: built and installed (root:wireshark 0750,
# cap_bpf, cap_perfmon, cap_net_admin) by install-wireshark.sh; see extcap/ptcap-capture.c.
HELPER = TREE / "libexec" / "ptcap-capture"
GROUP = "wireshark"

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, arg: int = 0) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def group_error() -> ExtcapError:
    import pwd
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return ExtcapError(f"capturing needs membership in group {GROUP} (an administrator runs "
                       f"`usermod -aG {GROUP} {user}`; then log in again), or root")


def to_helper(opts: argparse.Namespace) -> ExtcapError | None:
    """A user who is not root captures through the privileged helper (this call does not
    return when it can); the reason it cannot, else None (a checkout without the helper:
    the capture says what it lacks)."""
    from ptcap.kernel.privileges import has_capture_caps
    if os.getuid() == 0 or has_capture_caps() or not HELPER.exists():
        return None
    if os.access(HELPER, os.X_OK):
        try:
            os.execv(HELPER, [str(HELPER), *opts.raw_argv])
        except OSError:
            pass
    return group_error()


def on_behalf_of_user(opts: argparse.Namespace) -> ExtcapError | None:
    """Run by the helper for a member of the group: capabilities, but the user's own uid and
    file permissions. Nothing this process starts inherits the capabilities, the user cannot
    ptrace it, and it writes only to the fifo, enters no other network namespace and reads
    no process's TLS keys."""
    import stat
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    prctl(PR_SET_DUMPABLE, 0)
    try:
        is_fifo = stat.S_ISFIFO(os.stat(opts.fifo).st_mode)
    except OSError as e:
        raise ExtcapError(f"fifo {opts.fifo}: {e.strerror}") from None
    if not is_fifo:                 # never opened: this is the only file it writes
        raise ExtcapError(f"fifo {opts.fifo}: not a fifo")
    if opts.netns:
        return ExtcapError(f"--netns: capturing in another network namespace needs root "
                           f"(the {GROUP} group's capture enters none)")
    if opts.embed_keylog_to_pcapng:     # uprobes would read the keys of every user's processes
        return ExtcapError(f"--embed-keylog-to-pcapng: reading the TLS keys of running processes "
                           f"needs root (the {GROUP} group's capture reads no process's keys)")
    return None

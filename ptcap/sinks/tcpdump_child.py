"""Running tcpdump as ptcap's decoder: its printing flags, the unprivileged user it runs as
(tcpdump's own -Z model), its environment, and a check of the user's flags before a capture."""
from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import struct
import subprocess
from dataclasses import dataclass, field

from ptcap.errors import PtcapError

TCPDUMP = shutil.which("tcpdump") or "/usr/bin/tcpdump"
STDBUF = shutil.which("stdbuf")     # coreutils: a command's stdio buffer sizes
DEFAULT_USER = "tcpdump"        # Debian's tcpdump drops to this user (its WITH_USER)
FALLBACK_USER = "nobody"
_PR_SET_NO_NEW_PRIVS = 38
NSEC_MAGIC = 0xA1B23C4D          # classic pcap, nanosecond time stamps


@dataclass
class PrintFlags:
    """tcpdump's printing flags, as given, and how ptcap runs its children."""

    argv: list[str] = field(default_factory=list)   # every printing flag, for the child
    numeric: int = 0
    tstamp: int = 0
    number: bool = False
    nano: bool = False
    verbose: int = 0
    line_buffered: bool = False
    user: str | None = None     # -Z
    oneline: bool = False       # --oneline: each packet's lines and blocks on one line

    @classmethod
    def from_args(cls, args) -> "PrintFlags":
        g = lambda name, default=0: getattr(args, name, default) or default  # noqa: E731
        argv: list[str] = []
        for flag, dest in (("-A", "ascii"), ("-e", "link_header"), ("-n", "numeric"), ("-N", "no_domain"),
                           ("-q", "quiet"), ("-t", "tstamp"), ("-v", "verbose"), ("-x", "hex"),
                           ("-X", "hex_ascii")):
            argv += [flag] * int(g(dest))
        for flag, dest in (("-b", "asdot"), ("-f", "foreign"), ("-H", "mesh"), ("-K", "no_checksum"),
                           ("-S", "absolute_seq"), ("-u", "nfs_handles")):
            if g(dest, False):
                argv.append(flag)
        for flag, dest in (("-E", "esp_secret"), ("-M", "md5_secret"), ("-T", "packet_type")):
            if g(dest, None):
                argv += [flag, g(dest, None)]
        for module in g("mib_modules", []) or []:
            argv += ["-m", module]
        nano = g("ts_precision", "micro") == "nano"
        if nano:
            argv.append("--time-stamp-precision=nano")
        return cls(argv, int(g("numeric")), int(g("tstamp")), bool(g("number", False)), nano,
                   int(g("verbose")), bool(g("line_buffered", False)), g("relinquish_user", None),
                   bool(g("oneline", False)))


def child_user(requested: str | None) -> pwd.struct_passwd:
    """The user the decoder runs as: -Z USER, else 'tcpdump' as tcpdump itself chooses,
    else 'nobody'; never root. `-Z root` (or a user of group root), with which tcpdump keeps
    its privileges, is taken as tcpdump takes it, and the decoder runs as without -Z: what
    users ask of it (files root may write) holds, since ptcap writes its files itself."""
    if requested:
        pw = requested_user(requested)
        if pw.pw_uid != 0 and pw.pw_gid != 0:
            return pw
    for name in (DEFAULT_USER, FALLBACK_USER):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid != 0 and pw.pw_gid != 0:
            return pw
    raise PtcapError(f"no user '{DEFAULT_USER}' or '{FALLBACK_USER}' to run tcpdump as (give -Z USER)")


def requested_user(name: str) -> pwd.struct_passwd:
    """-Z NAME's account, in tcpdump's words when there is none."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PtcapError(f"Couldn't find user '{name}'") from None


def file_owner(requested: str | None) -> tuple[int, int] | None:
    """Who -w files belong to: -Z USER's, as tcpdump creates them after it has become USER;
    root's (ptcap's, None) without -Z or with -Z root."""
    if not requested:
        return None
    pw = requested_user(requested)
    return None if pw.pw_uid == 0 else (pw.pw_uid, pw.pw_gid)


def _unprivileged(pw: pwd.struct_passwd):
    """What runs in the child between fork and exec: the user's groups and ids (which drops
    every capability of a root process), and no way to gain any back through exec."""
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def drop() -> None:
        os.setgroups(groups)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            os._exit(126)
        if os.getuid() == 0 or os.geteuid() == 0:
            os._exit(126)
    return drop


def child_env() -> dict[str, str]:
    """A clean environment; TZ set, so the C library does not stat /etc/localtime for every
    time stamp (that is what an unset TZ costs; the zone is the same)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": os.environ.get("TZ") or ":/etc/localtime"}
    for key in ("LANG", "LC_ALL", "LC_CTYPE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def spawn(argv: list[str], user: pwd.struct_passwd, stdin, stdout, stderr, bulk: bool = False) -> subprocess.Popen:
    """Start tcpdump with `argv` as `user`, no capabilities, in /. `bulk`: its input and output
    go through 1 MiB stdio buffers (stdbuf(1), where it is installed) instead of a pipe's
    4 KiB, a read and a write per MiB (a whole file to print; never a live capture's lines,
    which would wait in the buffer). A child whose lines ptcap reads (stdout a pipe) is in a
    process group of its own: Ctrl-C at a terminal, or `timeout`, signals ptcap's group, and
    ptcap ends its decoders itself once they have printed everything."""
    if os.geteuid() != 0:       # nothing to drop: run as we are (tests as a user, say)
        preexec = None
    else:
        preexec = _unprivileged(user)
    try:
        prefix = [STDBUF, "-i1M", "-o1M"] if bulk and STDBUF else []
        return subprocess.Popen([*prefix, TCPDUMP, *argv], stdin=stdin, stdout=stdout, stderr=stderr, cwd="/",
                                env=child_env(), preexec_fn=preexec, close_fds=True,
                                process_group=0 if stdout is subprocess.PIPE else None)
    except OSError as e:
        raise PtcapError(f"cannot run {TCPDUMP}: {e.strerror}") from None


def said_by_ptcap(line: bytes) -> bool:
    """A child's stderr line that ptcap says itself, once for the whole input: tcpdump's
    "reading from file -, ..." and its LINUX_SLL2 warning (each child would repeat them)."""
    return line.startswith((b"reading from file -,", b"Warning: interface names might be incorrect"))


def check_flags(flags: PrintFlags, user: pwd.struct_passwd, linktype: int = 1) -> None:
    """Run tcpdump once on an empty capture with the user's flags: a flag it refuses is the
    user's error, said as tcpdump says it."""
    head = struct.pack("<IHHiIII", NSEC_MAGIC, 2, 4, 0, 0, 262144, linktype)
    proc = spawn([*flags.argv, "-r", "-"], user, subprocess.PIPE, subprocess.DEVNULL, subprocess.PIPE)
    _out, err = proc.communicate(head, timeout=30)
    if proc.returncode != 0:
        lines = [ln for ln in err.decode(errors="replace").splitlines()
                 if ln and not ln.startswith("reading from file")]
        text = lines[0] if lines else f"tcpdump exited with status {proc.returncode}"
        raise PtcapError(text.removeprefix("tcpdump: "))


"""Process details behind an owner record: read from /proc once per process, then cached.

The kernel hands us pid, tid, uid, gid, start time and thread name with each packet; the
command, arguments and parent come from /proc the first time a process is seen.
"""
from __future__ import annotations

import dataclasses
import os
import pwd
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ptcap.kernel import records
from ptcap.meta.bounded import keep_newest
from ptcap.meta.context import ProcessContext
from ptcap.pipeline.decoder import (MARK_CONNTRACK, MARK_LAST_OWNER, MARK_PEER_CONNTRACK, MARK_PEER_LAST_OWNER,
                                    MARK_PEER_RECEIVER, MARKS)

if TYPE_CHECKING:
    from ptcap.meta.metadata import Metadata, Workload

OWNER = records.OWNER.struct
_PID_START = struct.Struct(f"<I{records.OWNER.offset['start_ns'] - 4}xQ")        # its pid and start time
EXIT_GRACE = 60.0       # seconds a process's details outlive it (late packets, FINs)
NO_OWNER = bytes(OWNER.size)
# Bounds that hold memory flat when exits go unseen (a lost event) or come faster than the
# grace lets them go: past them the oldest entries go first (a live process is read again).
MAX_PROCESSES = 1 << 15     # processes known (pid + start) and exits waiting out their grace
MAX_CONTEXTS = 1 << 16      # joined contexts (owner records, with marks and peers)
RECHECK_SECONDS = 1.0       # after a loss, how often a new one makes everything be looked up again


@dataclass(slots=True)
class ProcessInfo:
    pid: int
    cmd: str
    args: str
    ppid: int
    comm: str = ""


def read_process(pid: int, start_ns: int = 0) -> ProcessInfo | None:
    """Command (exe path), arguments and parent of a live process; None if it is gone, or if
    `start_ns` (the kernel's start time) says the pid now belongs to another process."""
    found = _read(pid)
    if found is None:
        return None
    ticks, info = found
    if start_ns and ticks and not _same_start(ticks, start_ns):
        return None         # a reused pid: not the process the packet came from
    return info


def _read(pid: int) -> tuple[int, ProcessInfo] | None:
    """(start time in clock ticks since boot, details) of a live process."""
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        with open(f"{base}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the comm field may hold spaces and parentheses: the fields after it follow the last ')'
    fields = stat[stat.rfind(b")") + 2:].split()
    exe = f"{base}/exe"
    if not argv and fields and fields[0] in (b"Z", b"X"):
        # the main thread is gone: exited, not yet reaped, or left by pthread_exit while other
        # threads run on, whose own /proc entries still show the command
        thread = _other_thread(pid)
        if thread is None:
            return None
        try:
            with open(f"{thread}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            return None
        if not argv:
            return None
        exe = f"{thread}/exe"
    cmd = _exe(pid, exe)
    if cmd and argv:
        cmd = applet(pid, cmd, argv[0])
    elif not cmd:
        cmd = argv[0] if argv else ""
    ticks = int(fields[19]) if len(fields) > 19 else 0
    ppid = int(fields[1]) if len(fields) > 1 else 0
    comm = stat[stat.find(b"(") + 1: stat.rfind(b")")].decode(errors="replace")
    if not argv:
        argv = [f"[{comm}]"]
    return ticks, ProcessInfo(pid, cmd, join_args(argv), ppid, comm)


def _exe(pid: int, link: str = "") -> str:
    """The file a live process runs (as its mount namespace names it); "" when gone."""
    try:
        cmd = os.readlink(link or f"/proc/{pid}/exe")
    except OSError:
        return ""
    return cmd[: -len(" (deleted)")] if cmd.endswith(" (deleted)") else cmd


def _other_thread(pid: int) -> str | None:
    """The /proc directory of a thread of `pid` other than its main one, if it has one."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    return next((f"/proc/{pid}/task/{tid}" for tid in tids if tid != str(pid)), None)


_BIN_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")


def applet(pid: int, program: str, argv0: str, exec_time: bool = False) -> str:
    """The path a multi-call program (busybox) was run as: argv[0] when it names the same
    file as `program` in the process's own root (/bin/wget → /bin/busybox); else `program`.
    At exec time a process that is gone already cannot be checked: the applet argv[0]
    names in the program's own directory is taken then."""
    name = argv0.rsplit("/", 1)[-1]
    if not name or name == program.rsplit("/", 1)[-1] or name.startswith(("-", "[")):
        return program
    here = program.rsplit("/", 1)[0] or "/"
    candidates = [argv0] if argv0.startswith("/") else \
        [f"{d}/{name}" for d in dict.fromkeys((here, *_BIN_DIRS))]
    root = f"/proc/{pid}/root"
    try:
        target = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return candidates[0] if exec_time else program
    for path in candidates:
        try:
            st = os.stat(root + path)
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
            return path
    return program


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _same_start(ticks: int, start_ns: int) -> bool:
    """/proc's start time (clock ticks since boot, suspend included) against the kernel's
    (monotonic ns): the same process when they agree to a tick."""
    boot_offset = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return abs(ticks - (start_ns + boot_offset) // _TICK_NS) <= 1


def join_args(argv: list[str]) -> str:
    """Arguments as one line: a newline would break the 'Key: value' comment format."""
    line = " ".join(argv)
    if "\n" in line or "\r" in line or "\t" in line:      # rare: translate is the slow part
        return line.translate(_ONE_LINE)
    return line


_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


class ProcessTable:
    """Joins owner records with process details; keyed by pid + start time, so a reused pid
    is never mistaken for the old process.

    Process events the kernel could not queue (`lost_events`, polled by check_lost()) make
    what was learnt from events suspect: from the first loss on, every context says its
    details may be stale, and a process is looked up in /proc again (what events said of it
    stays the fallback for processes that are gone)."""

    def __init__(self, metadata: "Metadata | None" = None) -> None:
        self.metadata = metadata      # containers and pods (None: not wanted)
        self._procs: dict[tuple[int, int], ProcessInfo | None] = {}
        self._latest: dict[int, ProcessInfo] = {}     # newest known program of each pid
        self._contexts: dict[bytes, ProcessContext | None] = {NO_OWNER: None}
        self._owners: dict[tuple[int, int], set[bytes]] = {}     # (pid, start) → its context keys
        self._exited: deque[tuple[float, int, int]] = deque()    # (when, pid, start)
        self._users: dict[int, str] = {}
        self._snapshot: dict[int, tuple[int, ProcessInfo]] = {}   # pid → (start ticks, details)
        self._suspect: dict[tuple[int, int], ProcessInfo | None] = {}     # known before a loss
        self.lost_events: Callable[[], int] | None = None   # the kernel's count of lost process events
        self.events_lost = 0
        self._rechecked = 0.0
        # called with each owner record whose context is dropped (exec, exit): sinks that
        # cache what they derived from a context forget it too
        self.forgotten: list[Callable[[bytes], None]] = []

    def snapshot(self) -> None:
        """Read every process once at start (after the exec hooks are on): one that exits
        before its packets are read keeps its command and arguments."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                found = _read(int(entry))
                if found is not None:
                    self._snapshot[int(entry)] = found

    def check_lost(self) -> None:
        """Before a batch is joined: has the kernel lost process events since we last looked?
        Then every context is made again, marked as maybe stale."""
        if self.lost_events is None:
            return
        lost = self.lost_events()
        if lost <= self.events_lost:
            return
        now = time.monotonic()
        if self.events_lost and now - self._rechecked < RECHECK_SECONDS:
            return      # already marked: a storm of losses re-reads /proc once a second
        self.events_lost, self._rechecked = lost, now
        self._suspect.update(self._procs)
        self._procs.clear()
        for key in list(self._owners):
            self._drop_contexts(*key)
        self._bound(self._suspect)

    def process(self, pid: int, start_ns: int = 0) -> ProcessInfo | None:
        key = (pid, start_ns)
        if key not in self._procs:
            info = read_process(pid, start_ns)
            if info is None:
                info = self._suspect.get(key)
            if info is None and pid in self._snapshot:
                ticks, seen = self._snapshot[pid]
                if not start_ns or _same_start(ticks, start_ns):
                    info = seen
            self._remember(key, info)
        return self._procs[key]

    def _remember(self, key: tuple[int, int], info: ProcessInfo | None) -> None:
        self._procs[key] = info
        if info is not None:
            self._latest[key[0]] = info
        self._bound(self._procs)
        self._bound(self._latest)

    @staticmethod
    def _bound(known: dict) -> None:
        keep_newest(known, MAX_PROCESSES)

    def parent(self, ppid: int) -> ProcessInfo | None:
        """A parent as last seen (from its exec, or /proc), even if it has exited since."""
        return self._latest.get(ppid) or self.process(ppid)

    def context(self, owner: bytes) -> ProcessContext | None:
        """The context of an owner record (40 bytes from the kernel); None when unknown."""
        ctx = self._contexts.get(owner, False)
        if ctx is False:
            self._make_room()
            ctx = self._contexts[owner] = self._build(owner)
            self._owners.setdefault(_PID_START.unpack_from(owner), set()).add(owner)
        return ctx

    def _make_room(self) -> None:
        """Before a context is added: drop the oldest processes' contexts past MAX_CONTEXTS."""
        while len(self._contexts) >= MAX_CONTEXTS and self._owners:
            self._drop_contexts(*next(iter(self._owners)))

    def joined(self, owner: bytes, marks: int, peer: bytes) -> ProcessContext | None:
        """The context of a packet's owner with what the kernel marked (last owner) and the
        other local end's (peer) context; cached, and dropped when either process's is."""
        if not marks and peer == NO_OWNER:
            return self.context(owner)
        key = owner + MARKS.pack(marks) + peer
        ctx = self._contexts.get(key, False)
        if ctx is not False:
            return ctx
        own = self.context(owner)
        other = self.context(peer) if peer != NO_OWNER else None
        ctx = dataclasses.replace(own) if own is not None else ProcessContext()
        ctx.last_owner = bool(marks & MARK_LAST_OWNER)
        ctx.forwarded = bool(marks & MARK_CONNTRACK)
        if other is not None:
            ctx.peer = dataclasses.replace(other, last_owner=bool(marks & MARK_PEER_LAST_OWNER),
                                           forwarded=bool(marks & MARK_PEER_CONNTRACK), stale=False)
            ctx.peer_role = "Receiver" if marks & MARK_PEER_RECEIVER else "Sender"
        ctx.stale = bool(self.events_lost)
        if own is None and other is None:
            ctx = None
        self._make_room()
        self._contexts[key] = ctx
        for record in (owner, peer):
            if record != NO_OWNER:
                self._owners.setdefault(_PID_START.unpack_from(record), set()).add(key)
        return ctx

    def _build(self, owner: bytes) -> ProcessContext | None:
        pid, tid, uid, gid, start, cgroup_id, mntns, ppid, comm, pcomm = OWNER.unpack(owner)
        if not pid:
            return None
        tname = comm.split(b"\0", 1)[0].decode(errors="replace")
        name = pcomm.split(b"\0", 1)[0].decode(errors="replace")
        ctx = ProcessContext(pid=pid, tid=tid, tname=tname, uid=uid, gid=gid, username=self.user(uid),
                             name=name, ppid=ppid, stale=bool(self.events_lost))
        info = self.process(pid, start)
        if info is not None:
            ctx.cmd, ctx.args = info.cmd, info.args
            ctx.ppid = ppid or info.ppid
        else:
            ctx.cmd = name      # gone before we looked, never seen exec'ing: what the kernel said
        parent = self.parent(ctx.ppid) if ctx.ppid > 0 else None
        if parent is not None:
            ctx.pcmd, ctx.pargs, ctx.pname = parent.cmd, parent.args, parent.comm
        if self.metadata is not None:
            _join_workload(ctx, self.metadata.workload(pid, cgroup_id))
        return ctx

    def learn_exec(self, pid: int, ppid: int, start_ns: int, filename: str, argv: list[str]) -> None:
        """A process exec'd: remember what it runs now (it may be gone before we look)."""
        self._drop_contexts(pid, start_ns)
        # the kernel names a process after the file it executes (at most 15 bytes)
        comm = filename.rsplit("/", 1)[-1][:15]
        before = self._latest.get(pid)
        if filename.startswith(("/proc/self/exe", f"/proc/{pid}/exe")):
            # it re-ran its own program (runc init; busybox's sh running an applet): what
            # it runs is that program, or the applet argv[0] names
            program = before.cmd if before is not None else _exe(pid)
            if program:
                filename = applet(pid, program, argv[0] if argv else "", exec_time=True)
                comm = filename.rsplit("/", 1)[-1][:15]
        elif not filename.startswith("/") or filename.startswith(("/proc/", "/dev/fd/")):
            filename = _exe(pid) or filename
        self._remember((pid, start_ns), ProcessInfo(pid, filename, join_args(argv), ppid, comm))

    def learn_fork(self, pid: int, ppid: int, start_ns: int) -> None:
        """A process forked: until it execs, the child runs its parent's program."""
        parent = self._latest.get(ppid)
        if parent is None:
            return
        self._remember((pid, start_ns), ProcessInfo(pid, parent.cmd, parent.args, ppid, parent.comm))

    def user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = ""
            self._users[uid] = name
        return name

    def learn_exit(self, pid: int, start_ns: int) -> None:
        """A process ended. Its packets may still be queued (and its sockets may send a last
        FIN): what we know of it is kept for EXIT_GRACE seconds, then dropped."""
        now = time.monotonic()
        self._exited.append((now, pid, start_ns))
        while self._exited and (now - self._exited[0][0] > EXIT_GRACE or len(self._exited) > MAX_PROCESSES):
            _, old_pid, old_start = self._exited.popleft()
            self._drop_contexts(old_pid, old_start)
            info = self._procs.pop((old_pid, old_start), None)
            self._suspect.pop((old_pid, old_start), None)
            if info is not None and self._latest.get(old_pid) is info:
                del self._latest[old_pid]
            found = self._snapshot.get(old_pid)
            if found is not None and (not old_start or _same_start(found[0], old_start)):
                del self._snapshot[old_pid]

    def _drop_contexts(self, pid: int, start_ns: int) -> None:
        for key in self._owners.pop((pid, start_ns), ()):
            self._contexts.pop(key, None)
            if len(key) > OWNER.size:       # a joined key: the other process no longer holds it
                for record in (key[:OWNER.size], key[-OWNER.size:]):
                    held = self._owners.get(_PID_START.unpack_from(record))
                    if held is not None:
                        held.discard(key)
            for forget in self.forgotten:
                forget(key)

    def forget(self, pid: int) -> None:
        """Drop everything known about a pid (every process that had it)."""
        for key in [k for k in self._procs if k[0] == pid]:
            del self._procs[key]
        for key in [k for k in self._suspect if k[0] == pid]:
            del self._suspect[key]
        self._latest.pop(pid, None)
        for key in [k for k in self._owners if k[0] == pid]:
            self._drop_contexts(*key)


def _join_workload(ctx: ProcessContext, w: "Workload | None") -> None:
    if w is None:
        return
    c = w.container
    ctx.container_id, ctx.container_name, ctx.container_image = c.id, c.name, c.image
    ctx.container_labels = c.labels
    if w.pod is not None:
        p = w.pod
        ctx.pod_name, ctx.pod_namespace, ctx.pod_uid = p.name, p.namespace, p.uid
        ctx.pod_labels, ctx.pod_annotations = p.labels, p.annotations

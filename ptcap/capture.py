"""A capture session: load the BPF objects, attach them, read packets, undo it all on close.

Every attachment is a bpf_link held by this process (TCX for tc, cgroup links for the
socket hooks), so even SIGKILL leaves nothing behind: the kernel drops the links with
our file descriptors. Nothing is pinned.
"""
from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field

from . import bpf, filter as pcapfilter, interfaces, libbpf
from .cgroup import v2_mount
from .errors import PtcapError
from .interfaces import NetInterface
from .ringbuf import RingBuffer, round_size
from .who import WhoFilter
from . import who as whomod

_IFACE = struct.Struct("<II")           # struct ptcap_iface
_CONFIG = struct.Struct("<qI4x")        # struct ptcap_config
_TC_NEXT = -1                           # TC_ACT_UNSPEC = TCX_NEXT: the packet goes on untouched


@dataclass
class CaptureConfig:
    interfaces: list[str] | None = None        # -i (None = any)
    direction: str = "inout"                   # -Q
    snaplen: int = 262144                      # -s
    expression: str = ""                       # pcap-filter
    ring_kib: int | None = None                # -B
    who: WhoFilter = field(default_factory=WhoFilter)   # --pid, --pname, --uid, -f, containers


@dataclass
class HookReport:
    """Which attribution hooks this kernel let us use."""

    working: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def check_privileges() -> None:
    """Capture needs root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON); say so in one line."""
    if os.geteuid() != 0:
        raise PtcapError("You don't have permission to capture; run as root "
                         "(needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")
    if not os.path.exists(os.environ.get("PTCAP_BTF", "/sys/kernel/btf/vmlinux")):
        raise PtcapError("this kernel has no BTF (/sys/kernel/btf/vmlinux): "
                         "CO-RE programs cannot be loaded; a kernel with CONFIG_DEBUG_INFO_BTF=y is needed")


def wall_clock_offset() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns (best of a few reads)."""
    best = None
    for _ in range(3):
        a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        r = time.clock_gettime_ns(time.CLOCK_REALTIME)
        b = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    return best[1]


class Session:
    """Owns every kernel object of one capture; close() undoes all of it."""

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.ifaces: list[NetInterface] = []
        self.hooks = HookReport()
        self._objects: list[libbpf.Object] = []
        self._links: list[libbpf.Link] = []
        self._fds: list[int] = []
        self._tcx: list[int] = []
        self.ring: RingBuffer | None = None
        self.closed = False

    # -- set-up -------------------------------------------------------------------------
    def open(self) -> "Session":
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        cfg = self.config
        self.ifaces = interfaces.resolve(cfg.interfaces)
        # Compile filters first: a bad expression fails before anything touches the kernel.
        linktypes = {i.linktype for i in self.ifaces}
        classic = {lt: pcapfilter.compile_filter(cfg.expression, lt, cfg.snaplen) for lt in linktypes}
        check_privileges()

        capture = libbpf.Object("capture")
        self._objects.append(capture)
        ring_size = round_size(cfg.ring_kib)
        capture.set_max_entries("ptcap_events", ring_size)
        capture.load()
        owners_fd = capture.map_fd("ptcap_owners")
        self._who_fds = {name: capture.map_fd(name) for name in
                         ("ptcap_who_pids", "ptcap_who_uids", "ptcap_who_mntns", "ptcap_who_comms")}
        whomod.load(cfg.who, self._who_fds)
        self._attach_attribution(owners_fd)
        self._attach_process_events(capture.map_fd("ptcap_events"), capture.map_fd("ptcap_who_pids"),
                                    cfg.who.follow)

        self.ring = RingBuffer(capture.map_fd("ptcap_events"), ring_size)
        self._counters_fd = capture.map_fd("ptcap_counters")
        ifaces_fd = capture.map_fd("ptcap_ifaces")
        progs_fd = capture.map_fd("ptcap_capture_progs")
        slots = {"in": (0, capture.program("ptcap_tc_ingress"), bpf.AttachType.TCX_INGRESS),
                 "out": (1, capture.program("ptcap_tc_egress"), bpf.AttachType.TCX_EGRESS)}
        wanted = ["in", "out"] if cfg.direction == "inout" else [cfg.direction]
        for d in wanted:
            slot, prog, _ = slots[d]
            bpf.map_update(progs_fd, struct.pack("<I", slot), struct.pack("<I", prog.fd))
        entries: dict[tuple[int, str], int] = {}
        for lt, prog in classic.items():
            for d in wanted:
                code = pcapfilter.entry_program(prog, prog_type=bpf.ProgType.SCHED_CLS,
                                                prog_array_fd=progs_fd, index=slots[d][0],
                                                accept_ret=_TC_NEXT, reject_ret=_TC_NEXT)
                fd = bpf.prog_load(bpf.ProgType.SCHED_CLS, code, name=f"ptcap_filter_{d}")
                self._fds.append(fd)
                entries[lt, d] = fd
        self._bss_fd = capture.map_fd(".bss")
        self._who_bits = int(cfg.who.bits())
        self.sync_clock()
        # pcapng interface ids follow the order of self.ifaces
        for iface_id, iface in enumerate(self.ifaces):
            bpf.map_update(ifaces_fd, struct.pack("<I", iface.ifindex),
                           _IFACE.pack(iface.l2len, iface_id))
            for d in wanted:
                try:
                    link = bpf.link_create(entries[iface.linktype, d], iface.ifindex, slots[d][2])
                except bpf.BPFError as e:
                    raise PtcapError(f"{iface.name}: attaching the {d}gress capture: {e.strerror}") from None
                self._tcx.append(link)

    def _attach_attribution(self, owners_fd: int) -> None:
        """Socket → process hooks. Each is optional: a kernel without one still captures."""
        obj = libbpf.Object("sockowner")
        self._objects.append(obj)
        obj.reuse_map("ptcap_owners", owners_fd)
        cgroot = v2_mount()
        if cgroot is None:
            obj.program("ptcap_sock_create").set_autoload(False)
            self.hooks.failed["cgroup/sock_create"] = "cgroup v2 is not mounted"
        try:
            obj.load()
        except PtcapError as e:
            self.hooks.failed["sockowner"] = str(e)
            return
        if cgroot is not None:
            fd = os.open(cgroot, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._links.append(obj.program("ptcap_sock_create").attach_cgroup(fd, cgroot))
                self.hooks.working.append("cgroup/sock_create")
            except PtcapError as e:
                self.hooks.failed["cgroup/sock_create"] = str(e)
            finally:
                os.close(fd)
        for name, hook in (("ptcap_sock_send", "tp_btf/sock_send_length"),
                           ("ptcap_sock_recv", "tp_btf/sock_recv_length")):
            try:
                self._links.append(obj.program(name).attach())
                self.hooks.working.append(hook)
            except PtcapError as e:
                self.hooks.failed[hook] = str(e)
        # Sockets opened before we started: walk them once, after the live hooks are on.
        try:
            obj.program("ptcap_sock_walk").run_iter()
            self.hooks.working.append("iter/task_file")
        except PtcapError as e:
            self.hooks.failed["iter/task_file"] = str(e)

    def _attach_process_events(self, ring_fd: int, pids_fd: int, follow: bool) -> None:
        obj = libbpf.Object("procs")
        self._objects.append(obj)
        obj.reuse_map("ptcap_events", ring_fd)
        obj.reuse_map("ptcap_who_pids", pids_fd)
        try:
            obj.load()
        except PtcapError as e:
            self.hooks.failed["tp_btf/sched_process_exec"] = str(e)
            if follow:
                raise PtcapError(f"following forks needs tp_btf/sched_process_fork: {e}") from None
            return
        if follow:
            bpf.map_update(obj.map_fd(".bss"), struct.pack("<I", 0), struct.pack("<I", 1))
        for prog, hook in (("ptcap_exec", "tp_btf/sched_process_exec"),
                           ("ptcap_fork", "tp_btf/sched_process_fork")):
            try:
                self._links.append(obj.program(prog).attach())
                self.hooks.working.append(hook)
            except PtcapError as e:
                self.hooks.failed[hook] = str(e)
                if follow and hook.endswith("fork"):
                    raise

    def sync_clock(self) -> None:
        """Tell the kernel side the current CLOCK_REALTIME - CLOCK_MONOTONIC (NTP moves it)."""
        bpf.map_update(self._bss_fd, struct.pack("<I", 0),
                       _CONFIG.pack(wall_clock_offset(), self._who_bits))

    def select_pid(self, pid: int) -> None:
        """Add a process to the --pid selector while capturing (-- CMD, containers joining)."""
        whomod.add_pid(self._who_fds["ptcap_who_pids"], pid)

    # -- reading ------------------------------------------------------------------------
    def counters(self) -> tuple[int, int]:
        """(received by filter, dropped by kernel), summed over CPUs."""
        if self.closed:
            return self._last_counters
        ncpu = _possible_cpus()
        totals = []
        for which in (0, 1):
            raw = bpf.map_lookup(self._counters_fd, struct.pack("<I", which), 8 * ncpu)
            totals.append(sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0)
        self._last_counters = (totals[0], totals[1])
        return self._last_counters

    # -- tear-down ----------------------------------------------------------------------
    def detach(self) -> None:
        """Stop new packets arriving (the ring can still be drained)."""
        for fd in self._tcx:
            _close(fd)
        self._tcx.clear()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if getattr(self, "_counters_fd", None) is not None:
                self.counters()
        except OSError:
            self._last_counters = (0, 0)
        self._last_counters = getattr(self, "_last_counters", (0, 0))
        self.closed = True
        self.detach()
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        for fd in self._fds:
            _close(fd)
        self._fds.clear()
        for obj in reversed(self._objects):
            obj.close()
        self._objects.clear()


def probe_hooks() -> HookReport:
    """Load and attach the attribution and process hooks once, then undo it: what works here."""
    check_privileges()
    session = Session(CaptureConfig())
    try:
        capture = libbpf.Object("capture")
        session._objects.append(capture)
        capture.set_max_entries("ptcap_events", round_size(1024))
        capture.load()
        session.hooks.working.append("tc capture program")
        session._attach_attribution(capture.map_fd("ptcap_owners"))
        session._attach_process_events(capture.map_fd("ptcap_events"),
                                       capture.map_fd("ptcap_who_pids"), True)
    except PtcapError as e:
        session.hooks.failed["capture"] = str(e)
    finally:
        session.close()
    return session.hooks


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _possible_cpus() -> int:
    """Per-CPU maps have one slot per possible CPU."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n

"""A capture session: load the BPF objects, attach them, read packets, undo it all on close.

Every attachment is a bpf_link held by this process (TCX for tc, cgroup links for the
socket hooks), so even SIGKILL leaves nothing behind: the kernel drops the links with
our file descriptors. Nothing is pinned. On a kernel without TCX (before 6.6) tc programs
are netlink filters, which a watchdog child removes when we end (ptcap/kernel/tcattach.py).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import struct
import time
from dataclasses import dataclass, field

from ptcap.kernel import bpf
from ptcap.filter import compiler as pcapfilter
from ptcap.filter import translate as pcaptranslate
from ptcap.kernel import interfaces
from ptcap.kernel import libbpf, ringroom
from ptcap.kernel import hooks as hookmod
from ptcap.kernel import netns as nsmod
from ptcap.kernel import tcattach
from ptcap.kernel.cgroup import v2_mount
from ptcap.errors import PtcapError
from ptcap.kernel.interfaces import NetInterface
from ptcap.kernel.netns import Netns
from ptcap.kernel import records
from ptcap.kernel.records import LinkType
from ptcap.kernel.ringbuf import RingBuffer, round_size
from ptcap.kernel.selectors import WhoFilter
from ptcap.kernel import selectors as whomod
from ptcap.kernel.admission import Admission, HOOK as MKDIR_HOOK

_IFACE = records.IFACE.struct
_IFACE_KEY = records.IFACE_KEY.struct
_CONFIG = records.CONFIG.struct
# enum ptcap_iface_flags
IFACE_LOCAL, IFACE_ONE_COPY, IFACE_PEER_NSID_SHIFT = 1, 2, 16
_TC_NEXT = -1                           # TC_ACT_UNSPEC = TCX_NEXT: the packet goes on untouched
NETNS_SCAN_SECONDS = 0.2                # --netns any/newly: how often to look for new namespaces


class InterfaceGone(PtcapError):
    """An interface went away between being listed and being attached to."""


@dataclass
class CaptureConfig:
    interfaces: list[str] | None = None        # -i (None = any)
    direction: str = "inout"                   # -Q
    snaplen: int = 262144                      # -s
    expression: str = ""                       # pcap-filter
    ring_kib: int | None = None                # -B
    who: WhoFilter = field(default_factory=WhoFilter)   # --pid, --pname, --uid, -f, containers
    backend: str = "tc"                        # tc | cgroup-skb
    netns: list[str] = field(default_factory=list)      # --netns (empty = ptcap's own)
    hooks: list[str] = field(default_factory=list)      # --hook: kernel hook points instead of interfaces
    hook_rate: int = 0                                  # --hook-rate: events/s at most (0 = no limit)
    backtrace: bool = False                             # ptcap backtrace: count stacks, no packets
    loopback_twice: bool = False                        # each loopback packet leaving and arriving


@dataclass
class HookReport:
    """Which attribution hooks this kernel let us use."""

    working: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


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


_SLOTS = {("tc", "in"): 0, ("tc", "out"): 1, ("cgroup-skb", "in"): 2, ("cgroup-skb", "out"): 3}
_CAPTURE_PROGS = {0: "ptcap_tc_ingress", 1: "ptcap_tc_egress",
                  2: "ptcap_cg_ingress", 3: "ptcap_cg_egress"}


class Session:
    """Owns every kernel object of one capture; close() undoes all of it.

    Interfaces are numbered in the order they are taken (their pcapng interface ids); the
    set grows when an interface appears in a namespace captured with -i any, and an
    interface that disappears just stops contributing.
    """

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.ifaces: list[NetInterface] = []      # index = pcapng interface id
        self.namespaces: list[Netns] = []
        self.hooks = HookReport()
        self._objects: list[libbpf.Object] = []
        self._links: list[libbpf.Link] = []
        self._attached: dict[tuple[int, int], list[tcattach.Attachment]] = {}   # iface key -> its tc attachments
        self._tc = tcattach.Attacher()
        self._cgroup_links: list[int] = []
        self._classic: dict[int, pcapfilter.ClassicProgram] = {}
        self._wanted: list[str] = []
        self._every_ns = ""                       # --netns any / newly
        self._ns_known: set[int] = set()
        self.ring: RingBuffer | None = None
        self.hook_capture: hookmod.HookCapture | None = None
        self.admission: Admission | None = None     # containers admitted at cgroup_mkdir
        self.closed = False
        self.on_new_interface = None     # called with (iface_id, iface) before it is attached

    # -- set-up -------------------------------------------------------------------------
    def open(self) -> "Session":
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        records.check_objects(libbpf.objects_dir())
        cfg = self.config
        if cfg.hooks:
            self._open_hooks()
            return
        self._every_ns = _every_mode(cfg.netns)
        if self._every_ns:
            # --netns any: every namespace there is and will be; newly: those yet to come
            now = nsmod.visible()
            self._ns_known = set(now)
            self.namespaces = ([ns for ns in (nsmod.open_visible(i, *v) for i, v in now.items()) if ns]
                               if self._every_ns == nsmod.ANY else [])
            found = [self._as_seen(i) for ns in self.namespaces for i in self._wanted_in(ns)]
        else:
            self.namespaces = [nsmod.resolve(spec) for spec in cfg.netns] or [nsmod.current()]
            found = [self._as_seen(i) for i in interfaces.resolve(cfg.interfaces, self.namespaces)]
        # Compile filters first: a bad expression fails before anything touches the kernel.
        linktypes = {LinkType.RAW} if cfg.backend == "cgroup-skb" else {i.linktype for i in found}
        self._classic = pcapfilter.compile_filters(cfg.expression, linktypes, cfg.snaplen)
        check_privileges()
        cgroot = v2_mount()
        if cfg.backend == "cgroup-skb" and cgroot is None:
            raise PtcapError("--backend cgroup-skb needs cgroup v2, which is not mounted")

        capture = self._load_capture()
        self._who_fds = {name: capture.map_fd(name) for name in
                         _WHO_MAPS}
        whomod.load(cfg.who, self._who_fds)
        self._ifaces_fd = capture.map_fd("ptcap_ifaces")
        self._progs_fd = capture.map_fd("ptcap_capture_progs")
        self._who_bits = int(cfg.who.bits())
        self.sync_clock()
        self._wanted = ["in", "out"] if cfg.direction == "inout" else [cfg.direction]
        for d in self._wanted:
            slot = _SLOTS[cfg.backend, d]
            prog = capture.program(_CAPTURE_PROGS[slot])
            bpf.map_update(self._progs_fd, struct.pack("<I", slot), struct.pack("<I", prog.fd))
        if cfg.backend == "cgroup-skb":
            self._attach_cgroup(cgroot)
        for iface in found:
            try:
                self._add(iface)
            except InterfaceGone:
                if not (self._any or self._every_ns):
                    raise     # named by the user: say so; one of many that went is skipped
        if self._any or self._every_ns:
            for ns in self.namespaces:
                nsmod.watch(ns)
        self._ns_scanned = time.monotonic()

    def _load_capture(self) -> libbpf.Object:
        """The capture object (ring, counters, socket owners) with the attribution and
        process hooks that feed it; the ring opened for reading."""
        cfg = self.config
        capture = libbpf.Object("capture")
        self._objects.append(capture)
        ring_size = round_size(cfg.ring_kib)
        capture.set_max_entries("ptcap_events", ring_size)
        capture.set_data(".rodata", ringroom.ring_config(ring_size))     # room for process events
        # Only the programs this capture uses are loaded (verifying is most of the start-up
        # time); one this kernel refuses fails only the captures that need it.
        directions = ["in", "out"] if cfg.direction == "inout" else [cfg.direction]
        needed = set() if cfg.hooks else {_CAPTURE_PROGS[_SLOTS[cfg.backend, d]] for d in directions}
        for name in _CAPTURE_PROGS.values():
            if name not in needed:
                capture.set_autoload(name, False)
        capture.load(optional=_CAPTURE_PROGS.values())
        for name in sorted(needed & set(capture.unavailable)):
            raise PtcapError(capture.unavailable[name])
        self._capture = capture
        self._attach_attribution(capture)
        self._attach_process_events(capture, int(cfg.who.bits()) if cfg.who.follow else 0)
        self._attach_admission(capture, cfg.who.container_prefix)
        self.ring = RingBuffer(capture.map_fd("ptcap_events"), ring_size)
        self._counters_fd = capture.map_fd("ptcap_counters")
        self._bss_fd = capture.map_fd(".bss")
        return capture

    def _open_hooks(self) -> None:
        """--hook: the capture object's ring, counters and socket owners, fed by hook programs."""
        cfg = self.config
        filters = hookmod.compile_filters(cfg.expression, cfg.snaplen)
        check_privileges()
        capture = self._load_capture()
        self._who_bits = 0
        self.hook_capture = hookmod.HookCapture(
            cfg.hooks, filters, ring_fd=capture.map_fd("ptcap_events"), counters_fd=self._counters_fd,
            owners_fd=capture.map_fd("ptcap_owners"), rate=cfg.hook_rate, backtrace=cfg.backtrace,
            ring_config=ringroom.ring_config(self.ring.size))
        self.sync_clock()
        for iface in self.hook_capture.interfaces:
            self.ifaces.append(iface)
            if self.on_new_interface is not None:
                self.on_new_interface(len(self.ifaces) - 1, iface)
        self.hook_capture.attach()

    def _as_seen(self, iface: NetInterface) -> NetInterface:
        """cgroup_skb sees every packet from its IP header, whatever the device."""
        if self.config.backend == "cgroup-skb":
            return dataclasses.replace(iface, linktype=LinkType.RAW, l2len=0)
        return iface

    @property
    def _any(self) -> bool:
        return not self.config.interfaces or "any" in self.config.interfaces

    def _entry(self, linktype: int, direction: str, cb_values: tuple[int, ...]) -> int:
        """Load the filter program that tail-calls the capture program for one attachment.
        The caller closes it once linked: the link holds it, and goes with it."""
        backend = self.config.backend
        prog_type = bpf.ProgType.CGROUP_SKB if backend == "cgroup-skb" else bpf.ProgType.SCHED_CLS
        ret = 1 if backend == "cgroup-skb" else _TC_NEXT
        code = pcaptranslate.entry_program(self._classic[linktype], prog_type=prog_type,
                                        prog_array_fd=self._progs_fd, index=_SLOTS[backend, direction],
                                        accept_ret=ret, reject_ret=ret, cb_values=cb_values)
        return bpf.prog_load(prog_type, code, name=f"ptcap_filter_{direction}")

    def _attach_cgroup(self, cgroot: str) -> None:
        """cgroup_skb on the v2 root: every socket of every namespace passes through it."""
        fd = os.open(cgroot, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for d in self._wanted:
                attach = (bpf.AttachType.CGROUP_INET_INGRESS if d == "in"
                          else bpf.AttachType.CGROUP_INET_EGRESS)
                prog = self._entry(LinkType.RAW, d, ())
                try:
                    self._cgroup_links.append(bpf.link_create(prog, fd, attach))
                except bpf.BPFError as e:
                    raise PtcapError(f"attaching the cgroup_skb capture to {cgroot}: {e.strerror}") from None
                finally:
                    _close(prog)
        finally:
            os.close(fd)

    def _add(self, iface: NetInterface) -> None:
        """Take one more interface: announce it (its pcapng block), then attach."""
        iface_id = len(self.ifaces)
        self.ifaces.append(iface)
        if self.on_new_interface is not None:
            self.on_new_interface(iface_id, iface)
        flags = self._flags(iface)
        if self.config.backend == "cgroup-skb":
            bpf.map_update(self._ifaces_fd, _IFACE_KEY.pack(iface.netns.cookie, iface.ifindex),
                           _IFACE.pack(iface_id, flags))
            self._attached[iface.key] = []
            return
        links = []
        for d in self._wanted:
            if d == "in" and flags & IFACE_ONE_COPY:
                continue      # loopback: the leaving copy has both ends
            peer_inode = iface.peer.inode if iface.peer is not None else 0
            prog = self._entry(iface.linktype, d, (iface_id, iface.l2len, flags, peer_inode))
            try:
                links.append(self._tc.attach(prog, iface.ifindex, d == "in", iface.netns.fd,
                                             lambda: nsmod.inside(iface.netns)))
            except bpf.BPFError as e:
                for link in links:
                    link.close()
                error = InterfaceGone if e.errno == errno.ENODEV else PtcapError
                raise error(f"{iface.display_name}: attaching the {d}gress capture: {e.strerror}") from None
            finally:
                _close(prog)    # the link (or filter) holds the program: it goes when they do
        self._attached[iface.key] = links

    def _flags(self, iface: NetInterface) -> int:
        """What the kernel side looks for at the other end of an interface's packets: the
        local receiver (loopback, veth), and on loopback, one copy of each packet."""
        flags = 0
        if iface.loopback:
            flags |= IFACE_LOCAL
            if self.config.direction == "inout" and not self.config.loopback_twice:
                flags |= IFACE_ONE_COPY
        if iface.peer is not None:
            flags |= IFACE_LOCAL | ((iface.peer.nsid + 1) & 0xFFFF) << IFACE_PEER_NSID_SHIFT
        return flags

    def _remove(self, key: tuple[int, int]) -> None:
        for link in self._attached.pop(key, []):
            link.close()

    def _wanted_in(self, ns: Netns) -> list[NetInterface]:
        """--netns any/newly: the -i interfaces of one namespace (those it has)."""
        present = interfaces.in_namespace(ns)
        if self._any:
            return present
        return [i for i in present if i.name in self.config.interfaces]

    def _follow_namespaces(self) -> list[NetInterface]:
        """--netns any/newly: take namespaces created since the last look, and let go of
        those that are gone (a namespace we held open would outlive its `ip netns del`)."""
        now = time.monotonic()
        if now - self._ns_scanned < NETNS_SCAN_SECONDS:
            return []
        self._ns_scanned = now
        there = nsmod.visible()
        self._ns_known &= set(there)      # a gone namespace's inode may be handed out again
        added = []
        for ns in [n for n in self.namespaces if n.inode not in there]:
            for key in [k for k in self._attached if k[0] == ns.inode]:
                self._remove(key)
            self.namespaces.remove(ns)
            ns.close()
        for inode, (name, path) in there.items():
            if inode in self._ns_known:
                continue
            ns = nsmod.open_visible(inode, name, path)
            if ns is None:
                continue          # gone again already: look next time
            self._ns_known.add(inode)
            self.namespaces.append(ns)
            nsmod.watch(ns)
            added += [i for i in map(self._as_seen, self._wanted_in(ns)) if self._take(i)]
        return added

    def refresh(self) -> list[NetInterface]:
        """Follow interfaces coming and going (-i any) and, with --netns any/newly, namespaces;
        returns the interfaces newly taken."""
        if self.closed or self.config.hooks:
            return []
        added = self._follow_namespaces() if self._every_ns else []
        for ns in self.namespaces:
            if not nsmod.changed(ns):
                continue
            present = {i.key: self._as_seen(i) for i in interfaces.in_namespace(ns)}
            for key in [k for k in self._attached if k[0] == ns.inode and k not in present]:
                self._remove(key)
            for key, iface in present.items():
                wanted = self._any or (self._every_ns and iface.name in self.config.interfaces)
                if key not in self._attached and wanted and self._take(iface):
                    added.append(iface)
        return added

    def _take(self, iface: NetInterface) -> bool:
        """Attach to an interface found while capturing; False if it went away first."""
        if self.config.backend != "cgroup-skb" and iface.linktype not in self._classic:
            self._classic.update(pcapfilter.compile_filters(self.config.expression, (iface.linktype,),
                                                            self.config.snaplen))
        try:
            self._add(iface)
        except PtcapError:
            return False      # gone again before we could attach
        return True

    def add_namespace(self, path: str, name: str) -> list[NetInterface]:
        """Capture every interface of one more network namespace (a selected container's
        own), named `name` in lines and files; nothing if it is one already captured."""
        if self.closed or self.config.hooks:
            return []
        try:
            ns = nsmod.resolve(path)
        except PtcapError:
            return []         # the container is gone
        if any(n.inode == ns.inode for n in self.namespaces):
            ns.close()
            return []
        ns.name = name
        self.namespaces.append(ns)
        nsmod.watch(ns)
        return [i for i in map(self._as_seen, interfaces.in_namespace(ns)) if self._take(i)]

    def _attach_attribution(self, capture: libbpf.Object) -> None:
        """Socket → process hooks. Each is optional: a kernel without one still captures.
        Per owner hook, the tracepoint where the kernel has it, else fentry on the function
        that fires it (a kernel with BPF trampolines), else none."""
        obj = libbpf.Object("sockowner")
        self._objects.append(obj)
        for name in ("ptcap_owners", "ptcap_conns", "ptcap_flows"):
            obj.reuse_map(name, capture.map_fd(name))
        cgroot = v2_mount()
        if cgroot is None:
            obj.set_autoload("ptcap_sock_create", False)
            self.hooks.failed["cgroup/sock_create"] = "cgroup v2 is not mounted"
        chosen = []           # (program, hook)
        for tp_prog, tp_hook, fentry_prog, fentry_hook in _OWNER_HOOKS:
            if _has_tracepoint(tp_hook):
                obj.set_autoload(fentry_prog, False)
                chosen.append((tp_prog, tp_hook))
            else:
                obj.set_autoload(tp_prog, False)
                self.hooks.failed[tp_hook] = "this kernel has no such tracepoint"
                chosen.append((fentry_prog, fentry_hook))
        # closing connections' last owners, established flows: one tracepoint, no stand-in
        if _has_tracepoint("tp_btf/inet_sock_set_state"):
            chosen.append(("ptcap_tcp_state", "tp_btf/inet_sock_set_state"))
        else:
            obj.set_autoload("ptcap_tcp_state", False)
            self.hooks.failed["tp_btf/inet_sock_set_state"] = "this kernel has no such tracepoint"
        try:
            obj.load(optional=[p.name for p in obj.programs()])
        except PtcapError as e:
            self.hooks.failed["sockowner"] = str(e)
            return
        for prog, why in obj.unavailable.items():
            self.hooks.failed[_SOCKOWNER_HOOKS.get(prog, prog)] = why
        if cgroot is not None and "ptcap_sock_create" not in obj.unavailable:
            fd = os.open(cgroot, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self._links.append(obj.program("ptcap_sock_create").attach_cgroup(fd, cgroot))
                self.hooks.working.append("cgroup/sock_create")
            except PtcapError as e:
                self.hooks.failed["cgroup/sock_create"] = str(e)
            finally:
                os.close(fd)
        for name, hook in chosen:
            if name in obj.unavailable:
                continue
            try:
                self._links.append(obj.program(name).attach())
                self.hooks.working.append(hook)
            except PtcapError as e:
                self.hooks.failed[hook] = str(e)
        # Sockets opened before we started: walk them once, after the live hooks are on.
        # (the file walk notes who holds each socket; the socket walks, one per namespace, apply it)
        if any(w in obj.unavailable for w in ("ptcap_task_walk", "ptcap_tcp_walk", "ptcap_udp_walk")):
            return
        try:
            obj.program("ptcap_task_walk").run_iter()
            namespaces = nsmod.every()
            try:
                for prog in ("ptcap_tcp_walk", "ptcap_udp_walk"):
                    obj.program(prog).run_iter(nsmod.inside(ns) for ns in namespaces)
            finally:
                for ns in namespaces:
                    ns.close()
            self.hooks.working.append("iter/task_file+tcp+udp")
        except PtcapError as e:
            self.hooks.failed["iter/task_file+tcp+udp"] = str(e)

    def _attach_admission(self, capture: libbpf.Object, prefix: str) -> None:
        """Containers admitted at cgroup_mkdir; optional (kernel/admission.py)."""
        self.admission = Admission(capture.map_fd("ptcap_who_cgroups"))
        self.admission.open(prefix)
        if self.admission.error:
            self.hooks.failed[MKDIR_HOOK] = self.admission.error
        else:
            self.hooks.working.append(MKDIR_HOOK)

    def _attach_process_events(self, capture: libbpf.Object, follow: int) -> None:
        """Exec/fork/exit events into the capture's ring; with -f (`follow`: the selector
        bits), the children of selected processes join the capture's selection at fork."""
        obj = libbpf.Object("procs")
        self._objects.append(obj)
        for name in ("ptcap_events", "ptcap_counters", "ptcap_owners") + _WHO_MAPS:
            obj.reuse_map(name, capture.map_fd(name))
        try:
            obj.load()
        except PtcapError as e:
            self.hooks.failed["tp_btf/sched_process_exec"] = str(e)
            if follow:
                raise PtcapError(f"following forks needs tp_btf/sched_process_fork: {e}") from None
            return
        if follow:
            bpf.map_update(obj.map_fd(".bss"), struct.pack("<I", 0), struct.pack("<I", follow))
        for prog, hook in (("ptcap_exec", "tp_btf/sched_process_exec"),
                           ("ptcap_fork", "tp_btf/sched_process_fork"),
                           ("ptcap_exit", "tp_btf/sched_process_exit")):
            try:
                self._links.append(obj.program(prog).attach())
                self.hooks.working.append(hook)
            except PtcapError as e:
                self.hooks.failed[hook] = str(e)
                if follow and hook.endswith("fork"):
                    raise

    def sync_clock(self) -> None:
        """Tell the kernel side the current CLOCK_REALTIME - CLOCK_MONOTONIC (NTP moves it)."""
        offset = wall_clock_offset()
        cfg = self.config
        peer_selects = int(cfg.direction == "inout" and not cfg.loopback_twice)
        bpf.map_update(self._bss_fd, struct.pack("<I", 0), _CONFIG.pack(offset, self._who_bits, peer_selects))
        if self.hook_capture is not None:
            self.hook_capture.sync_clock(offset)

    def select_pid(self, pid: int) -> None:
        """Add a process to the --pid selector while capturing (-- CMD, containers joining)."""
        whomod.add_pid(self._who_fds["ptcap_who_pids"], pid)

    def select_mntns(self, inode: int) -> None:
        """Add a mount namespace to the container selector while capturing (a container
        that started after us)."""
        whomod.add_mntns(self._who_fds["ptcap_who_mntns"], inode)

    def unselect_mntns(self, inode: int) -> None:
        bpf.map_delete(self._who_fds["ptcap_who_mntns"], struct.pack("<I", inode))

    # -- reading ------------------------------------------------------------------------
    def counter(self, which: int) -> int:
        """One counter (records.Counter), summed over CPUs."""
        ncpu = _possible_cpus()
        raw = bpf.map_lookup(self._counters_fd, struct.pack("<I", which), 8 * ncpu)
        return sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0

    def all_counters(self) -> tuple[int, ...]:
        """records.Counter's counters (received, dropped, over --hook-rate, process events lost), summed."""
        if not self.closed:
            self._last_counters = tuple(self.counter(which) for which in range(records.Counter.MAX))
        return self._last_counters

    # -- tear-down ----------------------------------------------------------------------
    def detach(self) -> None:
        """Stop new packets arriving (the ring can still be drained)."""
        for key in list(self._attached):
            self._remove(key)
        for fd in self._cgroup_links:
            _close(fd)
        self._cgroup_links.clear()
        self._tc.close()
        if self.hook_capture is not None:
            self.hook_capture.detach()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.all_counters()
        except (OSError, AttributeError):      # no counters (yet), or they are gone
            self._last_counters = (0,) * records.Counter.MAX
        self.closed = True
        self.detach()
        if self.admission is not None:
            self.admission.close()
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.hook_capture is not None:
            self.hook_capture.close()
        for obj in reversed(self._objects):
            obj.close()
        self._objects.clear()
        for ns in self.namespaces:
            ns.close()


def probe_hooks() -> HookReport:
    """Load the capture object and the attribution and process hooks once, attach what
    attaches without an interface, then undo it: what this kernel lets ptcap use."""
    check_privileges()
    session = Session(CaptureConfig())
    try:
        capture = libbpf.Object("capture")
        session._objects.append(capture)
        capture.set_max_entries("ptcap_events", round_size(1024))
        capture.load(optional=_CAPTURE_PROGS.values())
        for slot, prog in _CAPTURE_PROGS.items():
            where = "tc" if slot < 2 else "cgroup_skb"
            hook = f"{where}/{prog}"
            if prog in capture.unavailable:
                session.hooks.failed[hook] = capture.unavailable[prog]
            else:
                session.hooks.working.append(hook)
        session.hooks.working.append(f"tc attach: {tcattach.method()}")
        session._attach_attribution(capture)
        session._attach_process_events(capture, int(whomod.Who.PIDS | whomod.Who.FOLLOW))
        session._attach_admission(capture, "")
    except PtcapError as e:
        session.hooks.failed["capture"] = str(e)
    finally:
        session.close()
    return session.hooks


# The selector maps the capture object tests packets against and the process events extend.
_WHO_MAPS = ("ptcap_who_pids", "ptcap_who_uids", "ptcap_who_mntns", "ptcap_who_comms", "ptcap_who_children",
             "ptcap_who_cgroups")

# The socket-owner hooks: each optional, the kernel may lack one. Per hook the tracepoint
# program and the fentry program that stands in for it (program, hook, program, hook).
_OWNER_HOOKS = (("ptcap_sock_send", "tp_btf/sock_send_length",
                 "ptcap_fentry_sock_send", "fentry/sock_sendmsg"),
                ("ptcap_tcp_send", "tp_btf/tcp_sendmsg_locked",
                 "ptcap_fentry_tcp_send", "fentry/tcp_sendmsg_locked"),
                ("ptcap_sock_recv", "tp_btf/sock_recv_length",
                 "ptcap_fentry_sock_recv", "fentry/sock_recvmsg"))
_SOCKOWNER_HOOKS = {"ptcap_sock_create": "cgroup/sock_create",
                    "ptcap_task_walk": "iter/task_file", "ptcap_tcp_walk": "iter/tcp",
                    "ptcap_udp_walk": "iter/udp", "ptcap_tcp_state": "tp_btf/inet_sock_set_state",
                    **{p: h for row in _OWNER_HOOKS for p, h in (row[:2], row[2:])}}


def _every_mode(specs: list[str]) -> str:
    """--netns any / --netns newly (alone: they already name every namespace), or ''."""
    modes = [s for s in specs if s in (nsmod.ANY, nsmod.NEWLY)]
    if not modes:
        return ""
    if len(specs) > 1:
        raise PtcapError(f"--netns {modes[0]} takes every namespace"
                         f"{'' if modes[0] == nsmod.ANY else ' created from now on'}: "
                         "give no other --netns")
    return modes[0]


def _has_tracepoint(hook: str) -> bool:
    """Does this kernel's BTF know the tracepoint a tp_btf program attaches to?"""
    from ptcap.kernel import btf
    try:
        return btf.vmlinux().type_id(btf.KIND_TYPEDEF, "btf_trace_" + hook.split("/", 1)[1]) is not None
    except PtcapError:
        return True       # no BTF to ask: let the load say


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

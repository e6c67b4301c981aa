"""A capture session: load the BPF objects, attach them, read packets, undo it all on close.
(The taps are kernel/taps.py, the attribution hooks kernel/attribution.py.)

Every attachment is a bpf_link held by this process (TCX for tc, cgroup links for the
socket hooks), so even SIGKILL leaves nothing behind: the kernel drops the links with
our file descriptors. Nothing is pinned. On a kernel without TCX (before 6.6) tc programs
are netlink filters, which a watchdog child removes when we end (ptcap/kernel/tcattach.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import struct
import time
from dataclasses import dataclass, field

from ptcap.errors import PtcapError
from ptcap.kernel import bpf, interfaces, libbpf, records, ringroom, tcattach
from ptcap.kernel import counters as countermod
from ptcap.kernel import hooks as hookmod
from ptcap.kernel import netns as nsmod
from ptcap.kernel import selectors as whomod
from ptcap.kernel.admission import Admission
from ptcap.kernel.attribution import WHO_MAPS, Attribution, HookReport
from ptcap.kernel.cgroup import v2_mount
from ptcap.kernel.counters import wall_clock_offset
from ptcap.kernel.interfaces import NetInterface
from ptcap.kernel.netns import Netns
from ptcap.kernel.records import LinkType
from ptcap.kernel.ringbuf import RingBuffer, round_size
from ptcap.kernel.selectors import WhoFilter
from ptcap.kernel.taps import CAPTURE_PROGS, SLOTS, InterfaceGone, Taps
# what callers import from here, said once in their own modules
from ptcap.kernel.counters import possible_cpus as _possible_cpus  # noqa: F401
from ptcap.kernel.privileges import check_privileges, has_capture_caps  # noqa: F401

_CONFIG = records.CONFIG.struct
NETNS_SCAN_SECONDS = 0.2                # --netns any/newly: how often to look for new namespaces


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


class Session:
    """Owns every kernel object of one capture; close() undoes all of it.

    Interfaces are numbered in the order they are taken (their pcapng interface ids); the
    set grows when an interface appears in a namespace captured with -i any, and an
    interface that disappears just stops contributing.
    """

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.ifaces: list[NetInterface] = []      # index = pcapng interface id
        self._ids: dict[tuple[int, int], int] = {}      # interface key -> its newest id
        self.namespaces: list[Netns] = []
        self.hooks = HookReport()
        self._attribution = Attribution(self.hooks)
        self._capture: libbpf.Object | None = None
        directions = ["in", "out"] if config.direction == "inout" else [config.direction]
        self._taps = Taps(config.backend, directions, config.direction == "inout" and not config.loopback_twice,
                          config.expression, config.snaplen)
        self._every_ns = ""                       # --netns any / newly
        self._ns_known: set[int] = set()
        self.ring: RingBuffer | None = None
        self.hook_capture: hookmod.HookCapture | None = None
        self.closed = False
        self.on_new_interface = None     # called with (iface_id, iface) before it is attached

    @property
    def admission(self) -> Admission | None:
        """Containers admitted at cgroup_mkdir (None before open, or without the hook's map)."""
        return self._attribution.admission

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
        self._taps.compile(linktypes)
        check_privileges()
        cgroot = v2_mount()
        if cfg.backend == "cgroup-skb" and cgroot is None:
            raise PtcapError("--backend cgroup-skb needs cgroup v2, which is not mounted")

        capture = self._load_capture()
        self._who_fds = {name: capture.map_fd(name) for name in WHO_MAPS}
        whomod.load(cfg.who, self._who_fds)
        self._taps.ifaces_fd = capture.map_fd("ptcap_ifaces")
        self._taps.progs_fd = capture.map_fd("ptcap_capture_progs")
        self._who_bits = int(cfg.who.bits())
        self.sync_clock()
        for d in self._taps.directions:
            slot = SLOTS[cfg.backend, d]
            prog = capture.program(CAPTURE_PROGS[slot])
            bpf.map_update(self._taps.progs_fd, struct.pack("<I", slot), struct.pack("<I", prog.fd))
        if cfg.backend == "cgroup-skb":
            self._taps.attach_cgroup(cgroot)
        for iface in found:
            try:
                self._add(iface)
            except InterfaceGone:
                if not (self._any or self._every_ns):
                    raise     # named by the user: say so; one of many that went is skipped
        if self._any or self._every_ns:
            for ns in self.namespaces:
                self._watch(ns)
        self._ns_scanned = time.monotonic()

    def _load_capture(self) -> libbpf.Object:
        """The capture object (ring, counters, socket owners) with the attribution and
        process hooks that feed it; the ring opened for reading."""
        cfg = self.config
        capture = libbpf.Object("capture")
        self._capture = capture
        ring_size = round_size(cfg.ring_kib)
        capture.set_max_entries("ptcap_events", ring_size)
        if capture.has_map(".rodata"):      # room for process events (every object of ours has it)
            capture.set_data(".rodata", ringroom.ring_config(ring_size))
        # Only the programs this capture uses are loaded (verifying is most of the start-up
        # time); one this kernel refuses fails only the captures that need it.
        needed = set() if cfg.hooks else {CAPTURE_PROGS[SLOTS[cfg.backend, d]] for d in self._taps.directions}
        for name in CAPTURE_PROGS.values():
            if name not in needed:
                capture.set_autoload(name, False)
        capture.load(optional=CAPTURE_PROGS.values())
        for name in sorted(needed & set(capture.unavailable)):
            raise PtcapError(capture.unavailable[name])
        self._attribution.attach(capture, int(cfg.who.bits()) if cfg.who.follow else 0,
                                 cfg.who.container_prefix)
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

    def _add(self, iface: NetInterface) -> None:
        """Take one more interface: announce it (its pcapng block), then attach."""
        iface_id = len(self.ifaces)
        self.ifaces.append(iface)
        self._ids[iface.key] = iface_id
        if self.on_new_interface is not None:
            self.on_new_interface(iface_id, iface)
        self._taps.attach(iface, iface_id)

    def _watch(self, ns: Netns) -> None:
        """Follow a namespace's interfaces: its link notifications also end the reader's wait,
        so a new interface (a container's veth) is tapped at once, not after an idle poll."""
        nsmod.watch(ns)
        if self.ring is not None:
            self.ring.wake_on(ns.watch_fd(), drain=False)

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
            for key in [k for k in self._taps.attached if k[0] == ns.inode]:
                self._taps.remove(key)
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
            self._watch(ns)
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
            for key in [k for k in self._taps.attached if k[0] == ns.inode and k not in present]:
                self._taps.remove(key)
            for key, iface in present.items():
                wanted = self._any or (self._every_ns and iface.name in self.config.interfaces)
                if key in self._taps.attached:
                    self._follow_peer(iface)
                elif wanted and self._take(iface):
                    added.append(iface)
        return added

    def _follow_peer(self, iface: NetInterface) -> None:
        """A tapped veth whose other end moved since (to a container), or whose kind was not
        yet told when it was tapped (made between two dumps): see Taps.retap."""
        iface_id = self._ids.get(iface.key)
        if iface_id is None:
            return
        was, peer = self.ifaces[iface_id], iface.peer
        if peer is not None and was.peer is not None and peer.nsid == was.peer.nsid and not peer.inode:
            peer = was.peer     # its namespace is not visible now (its last process is leaving)
        if (was.peer, was.bridging) != (peer, iface.bridging):
            self.ifaces[iface_id] = dataclasses.replace(was, peer=peer, bridging=iface.bridging)
            with contextlib.suppress(PtcapError):       # gone again: the next look lets it go
                self._taps.retap(self.ifaces[iface_id], iface_id)

    def _take(self, iface: NetInterface) -> bool:
        """Attach to an interface found while capturing; False if it went away first."""
        if self.config.backend != "cgroup-skb":
            self._taps.compile((iface.linktype,))
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
        self._watch(ns)
        return [i for i in map(self._as_seen, interfaces.in_namespace(ns)) if self._take(i)]

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
    def counters(self) -> tuple[int, int]:
        """(received by filter, dropped by kernel), summed over CPUs."""
        return self.all_counters()[:2]

    def counter(self, which: int) -> int:
        """One counter (records.Counter), summed over CPUs."""
        return countermod.read_one(self._counters_fd, which)

    def counter_reader(self, which: int) -> countermod.Reader:
        """One counter, for reading often: calling it gives its sum over CPUs."""
        return countermod.Reader(self._counters_fd, which)

    def all_counters(self) -> tuple[int, ...]:
        """records.Counter's counters (received, dropped, over --hook-rate, process events lost), summed."""
        if self.closed:
            return self._last_counters
        self._last_counters = countermod.read(self._counters_fd)
        return self._last_counters

    # -- tear-down ----------------------------------------------------------------------
    def detach(self) -> None:
        """Stop new packets arriving (the ring can still be drained)."""
        self._taps.close()
        if self.hook_capture is not None:
            self.hook_capture.detach()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if getattr(self, "_counters_fd", None) is not None:
                self.counters()
        except OSError:
            self._last_counters = (0,) * records.Counter.MAX
        self._last_counters = getattr(self, "_last_counters", (0,) * records.Counter.MAX)
        self.closed = True
        self.detach()
        self._attribution.close()
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.hook_capture is not None:
            self.hook_capture.close()
        if self._capture is not None:
            self._capture.close()
            self._capture = None
        for ns in self.namespaces:
            ns.close()


def probe_hooks() -> HookReport:
    """Load the capture object and the attribution and process hooks once, attach what
    attaches without an interface, then undo it: what this kernel lets ptcap use."""
    check_privileges()
    session = Session(CaptureConfig())
    try:
        capture = session._capture = libbpf.Object("capture")
        capture.set_max_entries("ptcap_events", round_size(1024))
        capture.load(optional=CAPTURE_PROGS.values())
        for slot, prog in CAPTURE_PROGS.items():
            where = "tc" if slot < 2 else "cgroup_skb"
            hook = f"{where}/{prog}"
            if prog in capture.unavailable:
                session.hooks.failed[hook] = capture.unavailable[prog]
            else:
                session.hooks.working.append(hook)
        session.hooks.working.append(f"tc attach: {tcattach.method()}")
        session._attribution.attach(capture, int(whomod.Who.PIDS | whomod.Who.FOLLOW), "")
    except PtcapError as e:
        session.hooks.failed["capture"] = str(e)
    finally:
        session.close()
    return session.hooks


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

"""Capture at kernel hook points (tp_btf tracepoints): where packets are dropped, sent, received.

bpf/hooks.bpf.c holds, per hook, the attached program (copies the packet's first bytes from
the skb into a per-CPU scratch buffer) and the emit program (scratch → ring buffer, or the
kernel stack into a counting map for `ptcap backtrace`); between the two runs the pcap filter,
translated here for the scratch buffer and loaded as a tp_btf program of the same tracepoint
(a prog array takes only programs of one attach target: one array per hook).

Packets with a usable Ethernet header are captured from it; the others (sent packets before
the neighbour layer, locally generated drops) from their IP header. Each hook is therefore
two pcapng interfaces of the same name: Ethernet, and raw IP (link types differ, and so do
the compiled filters).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from ptcap.kernel import bpf
from ptcap.kernel import btf
from ptcap.kernel import libbpf
from ptcap.filter import compiler as pcapfilter
from ptcap.filter import translate as pcaptranslate
from ptcap.errors import PtcapError
from ptcap.kernel.kallsyms import KernelSymbols
from ptcap.kernel import records
from ptcap.kernel.records import HookSlot, LinkType

# enum ptcap_hook, in order: the tracepoints' names (dev_direct_xmit: the fentry hook's)
HOOKS = tuple(h.name.lower() for h in records.Hook if h is not records.Hook.MAX)
# Where each hook attaches: a tracepoint (tp_btf), or for a path no tracepoint sees, fentry
# on a kernel function (kernels with BPF trampolines).
FENTRY = {"dev_direct_xmit": "__dev_direct_xmit"}
# Before 6.10 tcp_send_reset fires only for a full socket's resets: where its tracepoint has
# two arguments (6.10 added the reason), fentry on the functions every reset passes.
RESET_FUNCTIONS = ("tcp_v4_send_reset", "tcp_v6_send_reset")


_RESET_FENTRY_REFUSED: list[str] = []   # why this kernel refused them (then: the tracepoint)


def _reset_fentry() -> bool:
    if os.environ.get("PTCAP_RESET_FENTRY") == "1":      # the tests: this path on any kernel
        return not _RESET_FENTRY_REFUSED
    return btf.vmlinux().tracepoint_args("tcp_send_reset") == 2 and not _RESET_FENTRY_REFUSED


def paths(name: str) -> list[tuple[str, str]]:
    """(program suffix in hooks.bpf.c, section) of each program the hook attaches."""
    if name in FENTRY:
        return [(name, f"fentry/{FENTRY[name]}")]
    if name == "tcp_send_reset" and _reset_fentry():
        return [(fn, f"fentry/{fn}") for fn in RESET_FUNCTIONS]
    return [(name, f"tp_btf/{name}")]


def section(name: str) -> str:
    return "+".join(sec for _, sec in paths(name))


DESCRIPTIONS = {
    "kfree_skb": "packets the kernel drops, with the reason and where",
    "consume_skb": "packets freed after normal use",
    "net_dev_queue": "packets queued for transmit (before the qdisc)",
    "net_dev_start_xmit": "packets handed to the driver after the qdisc",
    "netif_receive_skb": "packets entering the stack from a device",
    "tcp_retransmit_skb": "TCP segments retransmitted",
    "tcp_send_reset": "packets that made TCP answer with a reset",
    "dev_direct_xmit": "packets sent straight to the driver (PACKET_QDISC_BYPASS, AF_XDP copy mode)",
}
SLOT_FILTER_ETHER, SLOT_FILTER_RAW, SLOT_EMIT = HookSlot.FILTER_ETHER, HookSlot.FILTER_RAW, HookSlot.EMIT
_CONFIG = records.HOOK_CONFIG.struct
_INFO = struct.Struct("<" + "".join(f for n, f in records.PACKET.fields if n in ("location", "reason")))
NO_INFO = bytes(_INFO.size)
_STACK_DEPTH = 127


class _NoNamespace:
    name = ""


@dataclass(frozen=True, eq=False)
class HookInterface:
    """One pcapng interface of a hook (the sinks treat it like a network interface)."""

    name: str
    linktype: int
    ifindex: int = 0
    netns: object = field(default_factory=_NoNamespace)

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def description(self) -> str:
        start = "the Ethernet header" if self.linktype == LinkType.ETHERNET else "the IP header"
        return f"kernel hook {section(self.name)}: {DESCRIPTIONS[self.name]}; packets from {start}"

    @property
    def linktype_name(self) -> str:
        return {LinkType.ETHERNET: "EN10MB (Ethernet)", LinkType.RAW: "RAW (Raw IP)"}[self.linktype]


def check_names(names: list[str]) -> list[str]:
    """--hook values, in order, once each; a clear error for an unknown one."""
    out: list[str] = []
    for name in names:
        if name not in HOOKS:
            raise PtcapError(f"--hook {name}: unknown hook (choose from {', '.join(HOOKS)}; see --list-hooks)")
        if name not in out:
            out.append(name)
    return out


def compile_filters(expression: str, snaplen: int) -> dict[int, pcapfilter.ClassicProgram]:
    """The filter for each link type a hook can see (the raw-IP one rejects what cannot apply
    to raw IP: ether, arp, vlan)."""
    return pcapfilter.compile_filters(expression, (LinkType.ETHERNET, LinkType.RAW), snaplen,
                                      optional=(LinkType.RAW,))


class HookCapture:
    """The loaded hook programs of one session; close() detaches and unloads them."""

    def __init__(self, hooks: list[str], filters: dict[int, pcapfilter.ClassicProgram], *,
                 ring_fd: int, counters_fd: int, owners_fd: int, rate: int = 0,
                 backtrace: bool = False, first_iface_id: int = 0, ring_size: int | None = None,
                 ring_config: bytes | None = None) -> None:
        """`ring_config`: the shared ring's .rodata (ptcap/kernel/ringroom.py: the room
        packets leave to process events); None: no room kept."""
        self.hooks = hooks
        self._ring_config = ring_config
        self.rate = rate
        self.backtrace = backtrace
        self.interfaces: list[HookInterface] = []
        self._iface_base: list[int] = [0] * len(HOOKS)
        self._links: list[libbpf.Link] = []
        self._fds: list[int] = []
        self.notes: list[str] = []           # paths not taken, for the user (ptcap: ...)
        load = (filters, ring_fd, counters_fd, owners_fd, first_iface_id, ring_size)
        try:
            self._obj = libbpf.Object("hooks")
            self._load(*load)
        except PtcapError as e:
            self.close()
            if "tcp_send_reset" not in hooks or not _reset_fentry() or "--hook tcp_send_reset:" not in str(e):
                raise
            # a kernel without trampolines: the tracepoint, which sees fewer resets
            _RESET_FENTRY_REFUSED.append(str(e).splitlines()[0])
            self.notes.append(f"{_RESET_FENTRY_REFUSED[0]}; at tp_btf/tcp_send_reset instead "
                              "(which before 6.10 misses the resets of packets no socket took)")
            self.interfaces.clear()
            self._iface_base = [0] * len(HOOKS)
            self._retry(load)
        except BaseException:
            self.close()
            raise

    def _retry(self, load) -> None:
        try:
            self._obj = libbpf.Object("hooks")
            self._load(*load)
        except BaseException:
            self.close()
            raise

    def _load(self, filters, ring_fd, counters_fd, owners_fd, first_iface_id, ring_size) -> None:
        obj = self._obj
        if ring_size is not None:
            obj.set_max_entries("ptcap_events", ring_size)
        else:
            obj.reuse_map("ptcap_events", ring_fd)
        if self._ring_config is not None:
            obj.set_data(".rodata", self._ring_config)
        if counters_fd >= 0:
            obj.reuse_map("ptcap_counters", counters_fd)
        if owners_fd >= 0:
            obj.reuse_map("ptcap_owners", owners_fd)
        if self.backtrace:
            obj.set_max_entries("ptcap_stacks", 16384)
            obj.set_max_entries("ptcap_stack_counts", 16384)
        chosen = {name: paths(name) for name in self.hooks}
        for suffix in [*HOOKS, *RESET_FUNCTIONS]:
            on = any(suffix == p for ps in chosen.values() for p, _ in ps)
            obj.program(f"ptcap_hook_{suffix}").set_autoload(on)
            obj.program(f"ptcap_emit_{suffix}").set_autoload(on)
        try:
            obj.load()
        except PtcapError as e:
            failed = [n for n, ps in chosen.items()
                      if any(f" ptcap_hook_{p} " in str(e) or f" ptcap_emit_{p} " in str(e) for p, _ in ps)]
            raise PtcapError(f"--hook {failed[0]}: {e}" if failed else str(e)) from None
        scratch_fd = obj.map_fd("ptcap_scratch")
        iface_id = first_iface_id
        for name in self.hooks:
            self._iface_base[HOOKS.index(name)] = iface_id
            for linktype in (LinkType.ETHERNET, LinkType.RAW):
                self.interfaces.append(HookInterface(name, linktype))
                iface_id += 1
            for suffix, sec in chosen[name]:
                self._fill(name, suffix, sec, filters, scratch_fd)
        self.sync_clock(0)

    def _fill(self, name: str, suffix: str, sec: str, filters, scratch_fd: int) -> None:
        """One attached program's prog array: the filters (loaded for the same attach
        target, as tail calls need) and the emit program."""
        progs_fd = self._obj.map_fd(f"ptcap_progs_{suffix}")
        kind, _, target = sec.partition("/")
        if kind == "fentry":
            btf_id = btf.vmlinux().type_id(btf.KIND_FUNC, target)
            attach_type = bpf.AttachType.TRACE_FENTRY
        else:
            btf_id = btf.vmlinux().type_id(btf.KIND_TYPEDEF, f"btf_trace_{target}")
            attach_type = bpf.AttachType.TRACE_RAW_TP
        if btf_id is None:
            raise PtcapError(f"--hook {name}: this kernel has no {sec}")
        for slot, linktype in ((SLOT_FILTER_ETHER, LinkType.ETHERNET), (SLOT_FILTER_RAW, LinkType.RAW)):
            code = pcaptranslate.hook_filter_program(filters[linktype], scratch_fd=scratch_fd,
                                                  prog_array_fd=progs_fd, index=SLOT_EMIT,
                                                  may_goto=bpf.has_may_goto())
            try:
                fd = bpf.prog_load(bpf.ProgType.TRACING, code, name=f"ptcap_flt_{slot}",
                                   expected_attach_type=attach_type, attach_btf_id=btf_id)
            except bpf.BPFError as e:
                raise PtcapError(f"--hook {name}: loading the filter: {e}") from None
            self._fds.append(fd)
            bpf.map_update(progs_fd, struct.pack("<I", slot), struct.pack("<I", fd))
        emit = self._obj.program(f"ptcap_emit_{suffix}").fd
        bpf.map_update(progs_fd, struct.pack("<I", SLOT_EMIT), struct.pack("<I", emit))

    def sync_clock(self, offset: int) -> None:
        bpf.map_update(self._obj.map_fd(".bss"), struct.pack("<I", 0),
                       _CONFIG.pack(offset, self.rate, int(self.backtrace), *self._iface_base))

    def attach(self) -> None:
        for name in self.hooks:
            for suffix, _ in paths(name):
                try:
                    self._links.append(self._obj.program(f"ptcap_hook_{suffix}").attach())
                except PtcapError as e:
                    raise PtcapError(f"--hook {name}: {e}") from None

    def detach(self) -> None:
        for link in self._links:
            link.destroy()
        self._links.clear()

    def stacks(self) -> list[tuple[int, list[int]]]:
        """`ptcap backtrace`: (count, kernel addresses innermost first) per distinct stack."""
        counts_fd = self._obj.map_fd("ptcap_stack_counts")
        stacks_fd = self._obj.map_fd("ptcap_stacks")
        out = []
        for key in bpf.map_keys(counts_fd, 4):
            raw = bpf.map_lookup(counts_fd, key, 8)
            frames = bpf.map_lookup(stacks_fd, key, 8 * _STACK_DEPTH)
            if raw is None or frames is None:
                continue
            addrs = [a for a in struct.unpack(f"<{_STACK_DEPTH}Q", frames) if a]
            out.append((struct.unpack("<Q", raw)[0], addrs))
        out.sort(key=lambda item: -item[0])
        return out

    def close(self) -> None:
        self.detach()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if self._obj is not None:
            self._obj.close()
            self._obj = None


class HookNames:
    """Drop reasons and kernel locations as people read them (the join stage uses them)."""

    def __init__(self) -> None:
        self._reasons: dict[int, str] | None = None
        self._symbols: KernelSymbols | None = None

    @property
    def symbols(self) -> KernelSymbols:
        if self._symbols is None:
            self._symbols = KernelSymbols()
        return self._symbols

    def reason(self, value: int) -> str:
        if self._reasons is None:
            try:
                self._reasons = btf.drop_reasons()
            except PtcapError:
                self._reasons = {}
        return self._reasons.get(value, str(value))


def unpack_info(info: bytes) -> tuple[int, int]:
    """A record key's hook info: (drop location, drop reason)."""
    return _INFO.unpack(info)


def symbolize_stack(addrs: list[int], symbols: KernelSymbols) -> list[str]:
    """Function+offset per frame, without the tracing machinery's own frames on top."""
    names = [symbols.name(a) for a in addrs]
    while names and names[0].startswith(("bpf_", "__bpf_trace", "__traceiter_", "0x")):
        names.pop(0)
    return names


@dataclass
class HookSupport:
    name: str
    supported: bool
    detail: str


def probe() -> list[HookSupport]:
    """--list-hooks: load and attach each hook (with a filter that accepts everything), then
    undo it; what this kernel supports and why not."""
    out = []
    filters = compile_filters("", 262144)
    for name in HOOKS:
        capture = None
        try:
            capture = HookCapture([name], filters, ring_fd=-1, counters_fd=-1, owners_fd=-1,
                                  ring_size=1 << 20)
            capture.attach()
            out.append(HookSupport(name, True, section(name)))
        except PtcapError as e:
            out.append(HookSupport(name, False, str(e).splitlines()[0]))
        finally:
            if capture is not None:
                capture.close()
    return out

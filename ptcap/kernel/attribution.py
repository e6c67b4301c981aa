"""The hooks that name each packet's process: socket owners, process events, containers
admitted at cgroup_mkdir. All feed the capture object's maps and ring; each is optional
(a kernel without one still captures), and which ones work is reported.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from ptcap.errors import PtcapError
from ptcap.kernel import bpf, libbpf
from ptcap.kernel import netns as nsmod
from ptcap.kernel.admission import Admission, HOOK as MKDIR_HOOK
from ptcap.kernel.cgroup import v2_mount

# The selector maps the capture object tests packets against and the process events extend.
WHO_MAPS = ("ptcap_who_pids", "ptcap_who_uids", "ptcap_who_mntns", "ptcap_who_comms", "ptcap_who_children",
            "ptcap_who_cgroups")

# The socket-owner hooks: each optional, the kernel may lack one. Per hook the tracepoint
# program and the fentry program that stands in for it (program, hook, program, hook).
_OWNER_HOOKS = (("ptcap_sock_send", "tp_btf/sock_send_length",
                 "ptcap_fentry_sock_send", "fentry/sock_sendmsg"),
                ("ptcap_tcp_send", "tp_btf/tcp_sendmsg_locked",
                 "ptcap_fentry_tcp_send", "fentry/tcp_sendmsg_locked"),
                ("ptcap_sock_recv", "tp_btf/sock_recv_length",
                 "ptcap_fentry_sock_recv", "fentry/sock_recvmsg"))
# Before connect() and an unconnected UDP sendmsg: the task about to send (cgroup v2 root).
_ADDR_HOOKS = {"ptcap_connect4": "cgroup/connect4", "ptcap_connect6": "cgroup/connect6",
               "ptcap_sendmsg4": "cgroup/sendmsg4", "ptcap_sendmsg6": "cgroup/sendmsg6"}
_SOCKOWNER_HOOKS = {"ptcap_sock_create": "cgroup/sock_create", **_ADDR_HOOKS,
                    "ptcap_task_walk": "iter/task_file", "ptcap_tcp_walk": "iter/tcp",
                    "ptcap_udp_walk": "iter/udp", "ptcap_tcp_state": "tp_btf/inet_sock_set_state",
                    **{p: h for row in _OWNER_HOOKS for p, h in (row[:2], row[2:])}}


@dataclass
class HookReport:
    """Which attribution hooks this kernel let us use."""

    working: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Attribution:
    """Owns the attribution objects and links of one capture; close() undoes them."""

    def __init__(self, hooks: HookReport) -> None:
        self.hooks = hooks
        self.admission: Admission | None = None     # containers admitted at cgroup_mkdir
        self._objects: list[libbpf.Object] = []
        self._links: list[libbpf.Link] = []

    def attach(self, capture: libbpf.Object, follow: int, container_prefix: str) -> None:
        """Every attribution hook, feeding `capture`; `follow`: -f's selector bits (0 = no -f)."""
        self.attach_owners(capture)
        self.attach_process_events(capture, follow)
        self.attach_admission(capture, container_prefix)

    def attach_owners(self, capture: libbpf.Object) -> None:
        """Socket → process hooks. Per owner hook, the tracepoint where the kernel has it,
        else fentry on the function that fires it (a kernel with BPF trampolines), else none."""
        obj = libbpf.Object("sockowner")
        self._objects.append(obj)
        for name in ("ptcap_owners", "ptcap_conns", "ptcap_flows"):
            obj.reuse_map(name, capture.map_fd(name))
        cgroot = v2_mount()
        if cgroot is None:
            for prog, hook in (("ptcap_sock_create", "cgroup/sock_create"), *_ADDR_HOOKS.items()):
                obj.set_autoload(prog, False)
                self.hooks.failed[hook] = "cgroup v2 is not mounted"
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
        if cgroot is not None:
            fd = os.open(cgroot, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for prog, hook in (("ptcap_sock_create", "cgroup/sock_create"), *_ADDR_HOOKS.items()):
                    if prog in obj.unavailable:
                        continue
                    try:
                        self._links.append(obj.program(prog).attach_cgroup(fd, cgroot))
                        self.hooks.working.append(hook)
                    except PtcapError as e:
                        self.hooks.failed[hook] = str(e)
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
        self._walk_existing(obj)

    def _walk_existing(self, obj: libbpf.Object) -> None:
        """Sockets opened before we started: walk them once, after the live hooks are on.
        (the file walk notes who holds each socket; the socket walks, one per namespace, apply it)"""
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

    def attach_admission(self, capture: libbpf.Object, prefix: str) -> None:
        """Containers admitted at cgroup_mkdir; optional (kernel/admission.py)."""
        self.admission = Admission(capture.map_fd("ptcap_who_cgroups"))
        self.admission.open(prefix)
        if self.admission.error:
            self.hooks.failed[MKDIR_HOOK] = self.admission.error
        else:
            self.hooks.working.append(MKDIR_HOOK)

    def attach_process_events(self, capture: libbpf.Object, follow: int) -> None:
        """Exec/fork/exit events into the capture's ring; with -f (`follow`: the selector
        bits), the children of selected processes join the capture's selection at fork."""
        obj = libbpf.Object("procs")
        self._objects.append(obj)
        for name in ("ptcap_events", "ptcap_counters", "ptcap_owners") + WHO_MAPS:
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

    def close(self) -> None:
        if self.admission is not None:
            self.admission.close()
        for link in self._links:
            link.destroy()
        self._links.clear()
        for obj in reversed(self._objects):
            obj.close()
        self._objects.clear()


def _has_tracepoint(hook: str) -> bool:
    """Does this kernel's BTF know the tracepoint a tp_btf program attaches to?"""
    from ptcap.kernel import btf
    try:
        return btf.vmlinux().type_id(btf.KIND_TYPEDEF, "btf_trace_" + hook.split("/", 1)[1]) is not None
    except PtcapError:
        return True       # no BTF to ask: let the load say

"""Where packets are taken: per interface (tc, TCX where the kernel has it) or once for every
socket (cgroup_skb on the v2 root), a small filter program compiled from the pcap-filter
expression that tail-calls the capture program; close() takes every tap away.
"""
from __future__ import annotations

import errno
import os

from ptcap.errors import PtcapError
from ptcap.filter import compiler as pcapfilter
from ptcap.filter import translate as pcaptranslate
from ptcap.kernel import bpf, records, tcattach
from ptcap.kernel import netns as nsmod
from ptcap.kernel.interfaces import NetInterface
from ptcap.kernel.records import LinkType

_IFACE = records.IFACE.struct
_IFACE_KEY = records.IFACE_KEY.struct
# enum ptcap_iface_flags
IFACE_LOCAL, IFACE_ONE_COPY, IFACE_FLOWS, IFACE_L2LEN_SHIFT, IFACE_PEER_NSID_SHIFT = 1, 2, 4, 8, 16
_TC_NEXT = -1                           # TC_ACT_UNSPEC = TCX_NEXT: the packet goes on untouched

# the capture programs' slots in ptcap_capture_progs, which the filter programs tail-call
SLOTS = {("tc", "in"): 0, ("tc", "out"): 1, ("cgroup-skb", "in"): 2, ("cgroup-skb", "out"): 3}
CAPTURE_PROGS = {0: "ptcap_tc_ingress", 1: "ptcap_tc_egress",
                 2: "ptcap_cg_ingress", 3: "ptcap_cg_egress"}


class InterfaceGone(PtcapError):
    """An interface went away between being listed and being attached to."""


class Taps:
    """The filter programs' attachments of one capture, by interface key."""

    def __init__(self, backend: str, directions: list[str], one_copy: bool,
                 expression: str, snaplen: int) -> None:
        self.backend = backend
        self.directions = directions            # "in", "out" or both
        self.one_copy = one_copy                # loopback: one copy of each packet (both ends)
        self._expression, self._snaplen = expression, snaplen
        self.classic: dict[int, pcapfilter.ClassicProgram] = {}
        self.progs_fd = self.ifaces_fd = -1     # the capture object's maps, once loaded
        self.attached: dict[tuple[int, int], list[tcattach.Attachment]] = {}   # iface key -> its tc attachments
        self._tc = tcattach.Attacher()
        self._cgroup_links: list[int] = []

    def compile(self, linktypes) -> None:
        """Compile the expression for these link types (a bad one fails before the kernel is touched)."""
        missing = [lt for lt in linktypes if lt not in self.classic]
        if missing:
            self.classic.update(pcapfilter.compile_filters(self._expression, missing, self._snaplen))

    def _entry(self, linktype: int, direction: str, cb_values: tuple[int, ...]) -> int:
        """Load the filter program that tail-calls the capture program for one attachment.
        The caller closes it once linked: the link holds it, and goes with it."""
        backend = self.backend
        prog_type = bpf.ProgType.CGROUP_SKB if backend == "cgroup-skb" else bpf.ProgType.SCHED_CLS
        ret = 1 if backend == "cgroup-skb" else _TC_NEXT
        code = pcaptranslate.entry_program(self.classic[linktype], prog_type=prog_type,
                                           prog_array_fd=self.progs_fd, index=SLOTS[backend, direction],
                                           accept_ret=ret, reject_ret=ret, cb_values=cb_values,
                                           may_goto=bpf.has_may_goto())
        return bpf.prog_load(prog_type, code, name=f"ptcap_filter_{direction}")

    def attach_cgroup(self, cgroot: str) -> None:
        """cgroup_skb on the v2 root: every socket of every namespace passes through it."""
        fd = os.open(cgroot, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for d in self.directions:
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

    def attach(self, iface: NetInterface, iface_id: int) -> None:
        """Tap one interface, its packets numbered `iface_id`; InterfaceGone if it went."""
        flags = self.flags(iface)
        if self.backend == "cgroup-skb":
            bpf.map_update(self.ifaces_fd, _IFACE_KEY.pack(iface.netns.cookie, iface.ifindex),
                           _IFACE.pack(iface_id, flags))
            self.attached[iface.key] = []
            return
        links = []
        for d in self._sides(flags):
            prog = self._program(iface, iface_id, d)
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
        self.attached[iface.key] = links

    def _sides(self, flags: int) -> list[str]:
        # loopback: the leaving copy has both ends
        return [d for d in self.directions if not (d == "in" and flags & IFACE_ONE_COPY)]

    def _program(self, iface: NetInterface, iface_id: int, direction: str) -> int:
        peer_inode = iface.peer.inode if iface.peer is not None else 0
        flags = self.flags(iface) | iface.l2len << IFACE_L2LEN_SHIFT
        return self._entry(iface.linktype, direction, (iface_id, iface.netns.inode, flags, peer_inode))

    def retap(self, iface: NetInterface, iface_id: int) -> None:
        """An attached interface whose other end moved (a veth given to a container after it
        was tapped): its programs are replaced by ones that look for the receiver there. A
        TCX link takes the new program in place; tc filters are added again, then the old
        ones taken off. InterfaceGone if it went."""
        old = self.attached.get(iface.key, [])
        if self.backend == "cgroup-skb" or not all(link.updatable for link in old) or \
                len(old) != len(self._sides(self.flags(iface))):
            del self.attached[iface.key]
            try:
                self.attach(iface, iface_id)
            finally:
                for link in old:
                    link.close()
            return
        for link, d in zip(old, self._sides(self.flags(iface))):
            prog = self._program(iface, iface_id, d)
            try:
                bpf.link_update(link.fd, prog)
            except bpf.BPFError as e:
                raise PtcapError(f"{iface.display_name}: replacing the {d}gress capture: {e.strerror}") from None
            finally:
                _close(prog)

    def flags(self, iface: NetInterface) -> int:
        """What the kernel side looks for at the other end of an interface's packets: the
        local receiver (loopback, veth), and on loopback, one copy of each packet."""
        flags = 0
        if iface.loopback:
            flags |= IFACE_LOCAL
            if self.one_copy:
                flags |= IFACE_ONE_COPY
        if iface.bridging:
            flags |= IFACE_FLOWS
        if iface.peer is not None:
            flags |= IFACE_LOCAL | ((iface.peer.nsid + 1) & 0xFFFF) << IFACE_PEER_NSID_SHIFT
        return flags

    def remove(self, key: tuple[int, int]) -> None:
        for link in self.attached.pop(key, []):
            link.close()

    def close(self) -> None:
        """Stop new packets arriving (the ring can still be drained)."""
        for key in list(self.attached):
            self.remove(key)
        for fd in self._cgroup_links:
            _close(fd)
        self._cgroup_links.clear()
        self._tc.close()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass

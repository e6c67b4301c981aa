"""Network interfaces as capture sees them: namespace, index, link type, where IP starts."""
from __future__ import annotations

from dataclasses import dataclass

from ptcap.kernel import netns as nsmod
from ptcap.errors import PtcapError
from ptcap.kernel.netns import Netns
from ptcap.kernel.records import LinkType

# ARPHRD_* of devices whose packets carry an Ethernet header at tc (loopback has a zeroed one)
_ETHERNET_TYPES = {1, 772}
# ARPHRD_* of devices whose packets start at the IP header
_RAW_TYPES = {65534, 768, 776, 778, 823, 65535}


@dataclass(frozen=True, eq=False)
class NetInterface:
    name: str
    ifindex: int
    linktype: int
    l2len: int          # bytes before the IP header as tc sees the packet
    netns: Netns
    loopback: bool = False      # both ends of its packets are local
    peer: nsmod.LinkPeer | None = None      # a veth's other end, in another namespace
    bridging: bool = False      # a veth or a bridge: its other end may be another namespace's

    @property
    def key(self) -> tuple[int, int]:
        return (self.netns.inode, self.ifindex)

    @property
    def display_name(self) -> str:
        """The name in files and lines: 'eth0', or 'eth0@ns1' in another namespace."""
        return f"{self.name}@{self.netns.name}" if self.netns.name else self.name

    @property
    def linktype_name(self) -> str:
        return {LinkType.ETHERNET: "EN10MB (Ethernet)", LinkType.RAW: "RAW (Raw IP)"}.get(
            self.linktype, str(self.linktype))


_ARPHRD_LOOPBACK = 772


_BRIDGING = ("veth", "bridge")


def _make(ns: Netns, ifindex: int, name: str, arphrd: int, kinds: dict[int, tuple[str, int | None]],
          peers: dict[int, nsmod.LinkPeer]) -> NetInterface | None:
    if arphrd in _ETHERNET_TYPES:
        return NetInterface(name, ifindex, LinkType.ETHERNET, 14, ns, loopback=arphrd == _ARPHRD_LOOPBACK,
                            peer=peers.get(ifindex), bridging=kinds.get(ifindex, ("", None))[0] in _BRIDGING)
    if arphrd in _RAW_TYPES:
        return NetInterface(name, ifindex, LinkType.RAW, 0, ns)
    return None


def in_namespace(ns: Netns) -> list[NetInterface]:
    """Every interface of the namespace ptcap can capture on, by index."""
    links = nsmod.links(ns)     # first: a link made meanwhile is in the kinds too (or found next look)
    kinds = nsmod.link_kinds(ns)
    peers = nsmod.veth_peers(ns, kinds)
    found = [_make(ns, i, n, t, kinds, peers) for i, n, t in links]
    return sorted((f for f in found if f is not None), key=lambda i: i.ifindex)


def lookup(name: str, ns: Netns) -> NetInterface:
    for ifindex, ifname, arphrd in nsmod.links(ns):
        if ifname == name:
            kinds = nsmod.link_kinds(ns)
            iface = _make(ns, ifindex, ifname, arphrd, kinds, nsmod.veth_peers(ns, kinds))
            if iface is None:
                raise PtcapError(f"{name}: link type (ARPHRD {arphrd}) is not supported for capture")
            return iface
    where = f" in network namespace {ns.name}" if ns.name else ""
    raise PtcapError(f"{name}: No such device exists{where}")


def resolve(names: list[str] | None, namespaces: list[Netns]) -> list[NetInterface]:
    """The interfaces named by -i (repeatable; 'any' = all present now) in each namespace."""
    names = names or ["any"]
    chosen: dict[tuple[int, int], NetInterface] = {}
    for ns in namespaces:
        for name in names:
            for iface in (in_namespace(ns) if name == "any" else [lookup(name, ns)]):
                chosen.setdefault(iface.key, iface)
    if not chosen:
        raise PtcapError("no suitable device found")
    return list(chosen.values())


def filter_linktype(name: str | None, backend: str = "tc") -> int:
    """The link type a filter for -i NAME is compiled for, as a capture on it compiles it:
    what byte 0 is where the program runs (cgroup_skb always sees the IP header; tc sees the
    device's own framing, Ethernet for 'any')."""
    if backend == "cgroup-skb":
        return LinkType.RAW
    if name in (None, "any"):
        return LinkType.ETHERNET
    ns = nsmod.current()
    try:
        return lookup(name, ns).linktype
    finally:
        ns.close()

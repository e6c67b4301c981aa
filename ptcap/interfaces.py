"""Network interfaces as capture sees them: index, link type and where the IP header starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PtcapError
from .packet import LinkType

_SYS = Path("/sys/class/net")
# ARPHRD_* of devices whose packets carry an Ethernet header at tc (loopback has a zeroed one)
_ETHERNET_TYPES = {1, 772}
# ARPHRD_* of devices whose packets start at the IP header
_RAW_TYPES = {65534, 768, 776, 778, 823, 65535}


@dataclass(slots=True, frozen=True)
class NetInterface:
    name: str
    ifindex: int
    linktype: int
    l2len: int         # bytes before the IP header as tc sees the packet

    @property
    def linktype_name(self) -> str:
        return {LinkType.ETHERNET: "EN10MB (Ethernet)", LinkType.RAW: "RAW (Raw IP)"}.get(
            self.linktype, str(self.linktype))


def _read(path: Path) -> str:
    return path.read_text().strip()


def lookup(name: str) -> NetInterface:
    base = _SYS / name
    if "/" in name or not base.exists():
        raise PtcapError(f"{name}: No such device exists")
    try:
        ifindex = int(_read(base / "ifindex"))
        arphrd = int(_read(base / "type"))
    except (OSError, ValueError) as e:
        raise PtcapError(f"{name}: cannot read interface details: {e}") from None
    if arphrd in _ETHERNET_TYPES:
        return NetInterface(name, ifindex, LinkType.ETHERNET, 14)
    if arphrd in _RAW_TYPES:
        return NetInterface(name, ifindex, LinkType.RAW, 0)
    raise PtcapError(f"{name}: link type (ARPHRD {arphrd}) is not supported for capture")


def all_interfaces() -> list[NetInterface]:
    """Every interface present now that ptcap can capture on, by index."""
    found = []
    for entry in sorted(_SYS.iterdir()):
        try:
            found.append(lookup(entry.name))
        except PtcapError:
            continue
    return sorted(found, key=lambda i: i.ifindex)


def resolve(names: list[str] | None) -> list[NetInterface]:
    """The interfaces named by -i (repeatable; 'any' = all present at start)."""
    names = names or ["any"]
    chosen: dict[int, NetInterface] = {}
    for name in names:
        for iface in (all_interfaces() if name == "any" else [lookup(name)]):
            chosen.setdefault(iface.ifindex, iface)
    if not chosen:
        raise PtcapError("no suitable device found")
    return list(chosen.values())


def is_up(name: str) -> bool:
    try:
        return int(_read(_SYS / name / "flags"), 16) & 1 == 1
    except (OSError, ValueError):
        return False

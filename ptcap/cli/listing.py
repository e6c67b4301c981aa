"""-D and --list-hooks: what can be captured here."""
from __future__ import annotations

import argparse

from ptcap.errors import PtcapError
from ptcap.filter import libpcap
from ptcap.kernel import hooks as hookmod
from ptcap.kernel import interfaces
from ptcap.kernel import netns as nsmod


# libpcap's PCAP_IF_* flags, in the order tcpdump -D names them
_FLAG_WORDS = ((0x2, "Up"), (0x4, "Running"), (0x1, "Loopback"), (0x8, "Wireless"))
_STATUS = 0x30
_WIRED_STATUS = {0x00: ", Connection status unknown", 0x10: ", Connected", 0x20: ", Disconnected"}
_WIRELESS_STATUS = {0x00: ", Association status unknown", 0x10: ", Associated", 0x20: ", Not associated"}


def _flags(flags: int) -> str:
    """tcpdump -D's bracket: ' [Up, Running, Connected]', ' [none]', or nothing."""
    if not flags:
        return ""
    words = ", ".join(word for bit, word in _FLAG_WORDS if flags & bit) or "none"
    status = (_WIRELESS_STATUS if flags & 0x8 else _WIRED_STATUS).get(flags & _STATUS, "")
    return f" [{words}{status}]"


def _listed(ns: nsmod.Netns, with_any: bool) -> list[tuple[str, str]]:
    """(name for -i, -D's text after the number) of each interface of `ns` ptcap captures on,
    in libpcap's order as tcpdump -D lists them: 'any' (when asked), then the devices; pseudo
    devices (nflog, D-Bus, Bluetooth) are not networks ptcap's hooks see. An interface libpcap
    did not list (it came meanwhile) follows, with no flags."""
    ours = {i.name: i for i in interfaces.in_namespace(ns)}
    with nsmod.inside(ns):
        try:
            devices = libpcap.devices()
        except PtcapError:
            devices = []
    listed = []
    for name, description, flags in devices:
        if name in ours or (name == "any" and with_any):
            shown = ours.pop(name).display_name if name in ours else name
            listed.append((name, shown + (f" ({description})" if description else "") + _flags(flags)))
    return listed + [(i.name, i.display_name) for i in ours.values()]


def _namespaces(args: argparse.Namespace) -> list[nsmod.Netns]:
    if args.netns and nsmod.ANY in args.netns:
        return [ns for ns in (nsmod.open_visible(i, *v) for i, v in nsmod.visible().items()) if ns]
    if args.netns and nsmod.NEWLY in args.netns:
        raise PtcapError("-D lists the interfaces there are: --netns newly names none yet")
    return [nsmod.resolve(spec) for spec in args.netns] if args.netns else [nsmod.current()]


def list_interfaces(args: argparse.Namespace) -> int:
    """-D: tcpdump's numbered list, its words and flags (with --netns, of those namespaces)."""
    n = 0
    for ns in _namespaces(args):
        try:
            for _, text in _listed(ns, with_any=not args.netns):
                n += 1
                print(f"{n}.{text}")
        finally:
            ns.close()
    return 0


def by_number(args: argparse.Namespace) -> None:
    """-i N: the N-th interface of -D's list, when no interface is named N (as tcpdump)."""
    if not args.interfaces or args.netns or not any(n.isdigit() for n in args.interfaces):
        return
    ns = nsmod.current()
    try:
        names = {i.name for i in interfaces.in_namespace(ns)}
        present = [name for name, _ in _listed(ns, with_any=True)]
        chosen = []
        for name in args.interfaces:
            if name.isdigit() and name not in names:
                if not 1 <= int(name) <= len(present):
                    raise PtcapError("Invalid adapter index")
                name = present[int(name) - 1]
            chosen.append(name)
        args.interfaces = chosen
    finally:
        ns.close()


def list_hooks() -> int:
    """--list-hooks: each hook point, loaded and attached once to see that it works here."""
    from ptcap.kernel.session import check_privileges
    check_privileges()
    for s in hookmod.probe():
        state = "supported" if s.supported else "unsupported"
        detail = f"{hookmod.DESCRIPTIONS[s.name]}; at {s.detail}" if s.supported else s.detail
        print(f"{s.name:<20} {state:<12} {detail}")
    return 0

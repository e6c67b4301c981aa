"""-D and --list-hooks: what can be captured here."""
from __future__ import annotations

import argparse

from ptcap.errors import PtcapError
from ptcap.kernel import hooks as hookmod
from ptcap.kernel import interfaces
from ptcap.kernel import netns as nsmod


def list_interfaces(args: argparse.Namespace) -> int:
    """-D: tcpdump's numbered list (with --netns, of those namespaces)."""
    if args.netns and nsmod.ANY in args.netns:
        namespaces = [ns for ns in (nsmod.open_visible(i, *v) for i, v in nsmod.visible().items()) if ns]
    elif args.netns and nsmod.NEWLY in args.netns:
        raise PtcapError("-D lists the interfaces there are: --netns newly names none yet")
    else:
        namespaces = [nsmod.resolve(spec) for spec in args.netns] if args.netns else [nsmod.current()]
    n = 0
    for ns in namespaces:
        for iface in interfaces.in_namespace(ns):
            n += 1
            print(f"{n}.{iface.display_name}")
        ns.close()
    return 0


def by_number(args: argparse.Namespace) -> None:
    """-i N: the N-th interface of -D's list, when no interface is named N (as tcpdump)."""
    if not args.interfaces or args.netns or not any(n.isdigit() for n in args.interfaces):
        return
    ns = nsmod.current()
    try:
        present = interfaces.in_namespace(ns)
        names = {i.name for i in present}
        chosen = []
        for name in args.interfaces:
            if name.isdigit() and name not in names:
                if not 1 <= int(name) <= len(present):
                    raise PtcapError("Invalid adapter index")
                name = present[int(name) - 1].name
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

"""-y/-L (data link types) and -j/-J (time stamp types) as tcpdump answers them. ptcap takes
each interface's own framing and the kernel's clock: -y and -j are accepted when they name
what there is, and the lists say what there is."""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ptcap.errors import PtcapError
from ptcap.filter import libpcap

HOST = "host"


def _canonical_dlt(name: str) -> str | None:
    value = libpcap.lib().pcap_datalink_name_to_val(name.encode())
    return None if value < 0 else libpcap.datalink_name(value)[0]


def check_names(args: argparse.Namespace) -> None:
    """Names libpcap does not know are refused at once, as tcpdump refuses them."""
    if args.linktype is not None:
        canonical = _canonical_dlt(args.linktype)
        if canonical is None:
            raise PtcapError(f"invalid data link type {args.linktype}")
        args.linktype = canonical
    if args.tstamp_type is not None:
        if libpcap.lib().pcap_tstamp_type_name_to_val(args.tstamp_type.encode()) < 0:
            raise PtcapError(f"invalid time stamp type {args.tstamp_type}")


def check_capture(args: argparse.Namespace, ifaces, report: TextIO) -> None:
    """-y and -j against the interfaces being captured (after they are resolved)."""
    kinds = {i.linktype_name.split(" ", 1)[0] for i in ifaces}
    if args.linktype is not None:
        if kinds and kinds != {args.linktype}:
            raise PtcapError(f"{args.linktype} is not one of the DLTs supported by this device")
        report.write(f"ptcap: data link type {args.linktype}\n")
    if args.tstamp_type is not None and args.tstamp_type.lower() != HOST:
        where = ",".join(args.interfaces or ["any"])
        report.write(f"ptcap: WARNING: When trying to set timestamp type '{args.tstamp_type}' on {where}: "
                     "That type of time stamp is not supported by that device\n")


def _selected(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(name as given, its link types as 'NAME (description)') for each -i (default: any)."""
    from ptcap.kernel import interfaces, netns as nsmod
    ns = nsmod.current()
    try:
        out = []
        for name in args.interfaces or ["any"]:
            found = interfaces.in_namespace(ns) if name == "any" else [interfaces.lookup(name, ns)]
            kinds = {i.linktype_name for i in found}
            if getattr(args, "backend", "tc") == "cgroup-skb":     # it sees packets from the IP header
                kinds = {"RAW (Raw IP)"}
            out.append((name, sorted(kinds)))
        return out
    finally:
        ns.close()


def list_linktypes(args: argparse.Namespace) -> int:
    """-L: on stderr, as tcpdump writes it."""
    for name, kinds in _selected(args):
        sys.stderr.write(f"Data link types for {name} (use option -y to set):\n")
        sys.stderr.write("".join(f"  {kind}\n" for kind in kinds))
    sys.stderr.flush()
    return 0


def list_tstamp_types(args: argparse.Namespace) -> int:
    """-J: the kernel's clock is the one type there is."""
    for name, _kinds in _selected(args):
        sys.stderr.write(f"Time stamp types for {name} (use option -j to set):\n  host (Host)\n")
    sys.stderr.flush()
    return 0

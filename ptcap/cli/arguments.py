"""The capture's flags checked as tcpdump checks them, turned into what the stages take."""
from __future__ import annotations

import argparse
import os
import re
import shutil
from typing import TextIO

from ptcap.errors import PtcapError
from ptcap.kernel import hooks as hookmod
from ptcap.kernel.selectors import WhoFilter
from ptcap.meta.context import Part
from ptcap.meta.following import ContainerSelector
from ptcap.meta.metadata import Metadata
from ptcap.meta.runtimes.availability import RuntimeUnavailable
from ptcap.meta.runtimes.kubernetes import parse_pod_selector

MAX_SNAPLEN = 262144


def count(args: argparse.Namespace) -> int | None:
    if args.count is not None and args.count <= 0:
        raise PtcapError(f"invalid packet count {args.count}")
    return args.count


def snaplen(args: argparse.Namespace) -> int:
    """-s 0 means the largest, as in tcpdump."""
    return min(args.snaplen, MAX_SNAPLEN) if args.snaplen > 0 else MAX_SNAPLEN


def parts(args: argparse.Namespace) -> Part:
    try:
        return Part.parse(args.context)
    except ValueError as e:
        raise PtcapError(str(e)) from None


def who(args: argparse.Namespace) -> WhoFilter:
    for pid in args.pid:
        if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
            raise PtcapError(f"--pid {pid}: no such process")
    for uid in args.uid:
        if uid < 0:
            raise PtcapError(f"--uid {uid}: invalid user id")
    for name in args.pname:
        if not name or len(name.encode()) > 15:
            raise PtcapError(f"--pname {name!r}: a process name is 1 to 15 bytes (the kernel's comm)")
    if args.command and shutil.which(args.command[0]) is None:
        raise PtcapError(f"{args.command[0]}: command not found")
    if args.follow_forks and not (args.pid or args.pname or args.uid or args.command):
        raise PtcapError("-f follows the children of selected processes: give --pid, --pname or --uid")
    selectors = [f for f, v in (("--container-id", args.container_id), ("--container-name", args.container_name),
                                ("--pod-name", args.pod_name)) if v]
    if len(selectors) > 1:
        raise PtcapError(f"{selectors[0]} and {selectors[1]} cannot be used together")
    return WhoFilter(pids=set(args.pid), comms=set(args.pname), uids=set(args.uid),
                     follow=bool(args.follow_forks or args.command), command=bool(args.command),
                     containers=bool(selectors), container_prefix=args.container_id or "")


def container_selector(args: argparse.Namespace, metadata: Metadata | None, who: WhoFilter,
                       report: TextIO) -> ContainerSelector | None:
    """--container-id / --container-name / --pod-name → the containers' mount namespaces."""
    if not who.containers:
        return None
    pod = None
    if args.pod_name:
        try:
            pod = parse_pod_selector(args.pod_name)
        except ValueError as e:
            raise PtcapError(str(e)) from None
    cid = args.container_id or ""
    if cid and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,75}", cid):
        raise PtcapError(f"--container-id {cid!r}: not a container id (letters, digits, '_', '.', '-'; "
                         "full or a prefix)")
    selector = ContainerSelector(metadata.runtimes(), cid, args.container_name or "", pod)
    try:
        who.mntns |= selector.resolve()
    except RuntimeUnavailable as e:
        raise PtcapError(f"{selector.describe()}: {e}") from None
    if not who.mntns:
        report.write(f"ptcap: {selector.describe()}: no such running container yet; "
                     "waiting for one to start\n")
    return selector


def hooks(args: argparse.Namespace) -> list[str]:
    """--hook NAME...: checked names; the options that only apply to interfaces refused."""
    if args.hook_rate < 0:
        raise PtcapError(f"--hook-rate {args.hook_rate}: a rate is 0 (no limit) or more events per second")
    if not args.hooks:
        if args.hook_rate:
            raise PtcapError("--hook-rate limits --hook captures: give --hook")
        return []
    names = hookmod.check_names(args.hooks)
    if args.write and args.write.endswith(".pcap"):
        raise PtcapError(f"{args.write}: a --hook capture holds Ethernet and raw-IP packets; "
                         "a classic pcap file holds one link type: write pcapng instead")
    for given, flag in ((args.interfaces, "-i"), (args.netns, "--netns"), (args.pid, "--pid"),
                        (args.pname, "--pname"), (args.uid, "--uid"), (args.command, "-- CMD"),
                        (args.backend != "tc", "--backend"), (args.direction != "inout", "-Q")):
        if given:
            raise PtcapError(f"{flag} does not apply to --hook captures (a hook sees every "
                             "interface and namespace; filter with the expression)")
    return names

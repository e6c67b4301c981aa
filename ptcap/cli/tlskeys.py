"""--write-keylog-file, --embed-keylog-to-pcapng and `-w FILE -- CMD`: which TLS keys a
capture collects, from where, and where they go (ptcap.meta.keylog does the collecting).

Keys are collected only when asked for: either flag, or `-w` (pcapng) with `-- CMD`,
where the command gets SSLKEYLOGFILE and its keys go into the file's Decryption Secrets
Blocks. The flags also read the keys of the selected running processes through uprobes.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil

from typing import TYPE_CHECKING

from ptcap.errors import PtcapError

if TYPE_CHECKING:           # imported where used: 'ptcap -r' parses these flags and needs none
    from ptcap.kernel.selectors import WhoFilter
    from ptcap.meta.keylog import KeyLog

log = logging.getLogger("ptcap")



def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--write-keylog-file", dest="keylog_file", metavar="FILE",
                       help="write the TLS keys of the captured processes to FILE (SSLKEYLOGFILE "
                            "format, created 0600)")
    group.add_argument("--embed-keylog-to-pcapng", dest="embed_keylog", action="store_true",
                       help="write the TLS keys into the -w pcapng file (Decryption Secrets Blocks), "
                            "so that Wireshark decrypts TLS without a key file")


def wanted(args: argparse.Namespace) -> tuple[bool, bool]:
    """(embed keys into -w, read running processes with uprobes)"""
    keylog_file = getattr(args, "keylog_file", None)
    embed_flag = getattr(args, "embed_keylog", False)
    pcapng = bool(args.write) and not args.write.endswith(".pcap")
    if embed_flag and not args.write:
        raise PtcapError("--embed-keylog-to-pcapng writes keys into a -w file: give -w FILE")
    if embed_flag and not pcapng:
        raise PtcapError(f"{args.write}: a classic pcap file cannot hold TLS keys: "
                         "write pcapng for --embed-keylog-to-pcapng")
    if keylog_file == "-":
        raise PtcapError("--write-keylog-file needs a file name: keys are never printed")
    embed = embed_flag or (pcapng and bool(args.command))
    return embed, bool(keylog_file or embed_flag)


def open_keys(args: argparse.Namespace, who: WhoFilter) -> tuple[KeyLog | None, bool]:
    """The capture's KeyLog (None: no keys wanted) and whether to embed it into -w."""
    embed, probe = wanted(args)
    if not embed and not probe:
        return None, False
    from ptcap.meta.keylog import KeyLog, ProcessKeys, command_channel
    keys = KeyLog(getattr(args, "keylog_file", None))
    try:
        if args.command:
            keys.sources.append(command_channel())
        if probe:
            probes = ProcessKeys(_running_selection(args, who))
            keys.sources.append(probes)
            probes.open()
        elif args.command:
            # -- CMD alone: only the command is probed (a Go program's keys), nothing running;
            # where uprobes cannot load, its SSLKEYLOGFILE keys still come
            probes = ProcessKeys(set())
            try:
                probes.open()
                keys.sources.append(probes)
            except PtcapError as e:
                probes.close()
                log.info(f"the keys of a Go command cannot be read here: {e}")
    except BaseException:
        keys.close()
        raise
    return keys, embed


def command_env(keys: KeyLog | None) -> dict[str, str]:
    from ptcap.meta.keylog import CommandChannel
    for source in keys.sources if keys is not None else ():
        if isinstance(source, CommandChannel):
            return source.env
    return {}


def follow_command(keys: KeyLog | None, pid: int, argv0: str) -> None:
    """The `-- CMD` child, held before exec: a Go command's keys through uprobes as well."""
    from ptcap.meta.keylog import ProcessKeys
    path = shutil.which(argv0)
    for source in keys.sources if keys is not None and path else ():
        if isinstance(source, ProcessKeys):
            source.add_command(pid, os.path.realpath(path))


def _running_selection(args: argparse.Namespace, who: WhoFilter) -> set[int] | None:
    """The running processes the selectors name (None: every process)."""
    if not (who.pids or who.comms or who.uids or who.mntns or who.containers or args.command):
        return None
    from ptcap.kernel.selectors import mntns_of
    chosen = set(who.pids)
    if who.comms or who.uids or who.mntns:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                comm = open(f"/proc/{pid}/comm").read().strip()
                uid = os.stat(f"/proc/{pid}").st_uid
            except OSError:
                continue
            if comm in who.comms or uid in who.uids or (who.mntns and mntns_of(pid) in who.mntns):
                chosen.add(pid)
    return chosen

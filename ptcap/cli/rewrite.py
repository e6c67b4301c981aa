"""-r FILE -w OUT: the packets read written again, rotated with -C/-G/-W as tcpdump -r -w
rotates them (sinks/rotation: its file names)."""
from __future__ import annotations

import argparse
import sys
import time

from ptcap.errors import PtcapError
from ptcap.sinks.rotation import Rotation, parse_size, postrotate
from ptcap.sinks.tcpdump_child import file_owner


class LimitReached(Exception):
    """-G with -W: the last file is full (tcpdump: 'Maximum file limit reached')."""


class Rewriter:
    """write() packets, finish() at the end; what was written is closed whatever happens."""

    def __init__(self, args: argparse.Namespace, linktype: int, snaplen: int, linktype_ext: int = 0) -> None:
        self._args, self._link = args, (linktype, snaplen, linktype_ext)
        size = parse_size(args.file_size) if getattr(args, "file_size", None) else None
        seconds = getattr(args, "rotate_seconds", None)
        if (size or seconds) and args.write == "-":
            raise PtcapError("-C and -G need a file name, not -w -")
        self.rotation = Rotation(args.write, size, getattr(args, "file_count", None), seconds)
        self.name = self.rotation.first() if self.rotation.active else args.write
        self._commands: list = []      # -z's, on each file rotation closed
        self._writer = self._open(self.name)

    def _open(self, name: str):
        from ptcap.sinks.file import open_output
        out = open_output(name, file_owner(getattr(self._args, "relinquish_user", None)))
        from ptcap.formats.pcapng import PacketWriter
        linktype, snaplen, ext = self._link
        return PacketWriter(out, self._args.write.endswith(".pcap"), linktype, snaplen,
                            nano=getattr(self._args, "ts_precision", "micro") == "nano", linktype_ext=ext)

    def write(self, pkt) -> None:
        rotation = self.rotation
        if rotation.active:     # as tcpdump: before a packet, on the time, then on the size so far
            name = None
            if rotation.seconds and rotation.time_is_up(time.time()):
                name = rotation.next_for_time(time.time())
                if name is None:
                    raise LimitReached(f"Maximum file limit reached: {rotation.count}")
            elif rotation.size and self._writer.written > rotation.size:
                name = rotation.next_for_size()
            if name is not None:
                self._close()
                if getattr(self._args, "postrotate", None):
                    self._commands.append(postrotate(self._args.postrotate, self.name))
                self.name = name
                self._writer = self._open(name)
        try:
            self._writer.write(pkt)
        except OSError as e:
            raise PtcapError(f"{self.name}: {e.strerror}") from None

    def finish(self) -> None:
        try:
            self._close()
        finally:
            for command in self._commands:
                if command is not None:
                    command.wait()

    def _close(self) -> None:
        writer = self._writer
        try:
            writer.finish()
            if writer.out is not sys.stdout.buffer:
                writer.out.close()
        except OSError as e:
            raise PtcapError(f"{self.name}: {e.strerror}") from None

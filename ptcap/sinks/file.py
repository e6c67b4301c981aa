"""-w: pcapng (or classic pcap for a .pcap name) with the process context as comments,
rotated with -C/-W/-G as tcpdump does."""
from __future__ import annotations

import contextlib
import errno
import os
import struct
import sys
import time
from typing import BinaryIO

from ptcap.errors import OutputError, PtcapError
from ptcap.formats.pcapng import Interface, PcapngWriter, PcapWriter
from ptcap.kernel.interfaces import NetInterface
from ptcap.meta.context import Part
from ptcap.meta.keylog import KEY_HOLD_SECONDS, make_private
from ptcap.pipeline.drain import Framing
from ptcap.pipeline.packet import Batch
from ptcap.sinks.destination import Destination
from ptcap.sinks.rotation import Closer, Rotation


class FileSink:
    def __init__(self, path: str, *, parts: Part = Part.ALL, file_size: int | None = None,
                 file_count: int | None = None, rotate_seconds: int | None = None, nano: bool = False,
                 snaplen: int = 262144, expression: str = "", owner: tuple[int, int] | None = None,
                 postrotate: str | None = None) -> None:
        self.rotation = Rotation(path, file_size, file_count, rotate_seconds)
        self._owner = owner
        self.path = self.rotation.first() if self.rotation.active else path
        self._classic = path.endswith(".pcap")
        self._nano = nano
        self._parts = parts
        self._snaplen, self._expression = snaplen, expression
        self._ifaces: list[Interface] = []
        self._writer: PcapngWriter | PcapWriter | None = None
        self.finished = False         # -G with -W: all files written, capture ends
        self.keys = None              # a KeyLog whose TLS keys go into the file
        self._keys_sent = 0
        self._open(self.path)
        # how long a packet may wait in the ring when traffic is light: a regular file is
        # read later, so a second (tcpdump's buffer timeout when it writes a file); a pipe or
        # FIFO (Wireshark's live view) the engine's default
        self.wait_seconds = FILE_WAIT_SECONDS if self._dest.regular else None
        self._closer = Closer(postrotate)
        with self._errors():
            self._new_writer()

    def _open(self, path: str) -> None:
        self.out = open_output(path, self._owner)
        self._dest = Destination(self.out.fileno())
        self._whole = 0         # where the file is known to end with a whole block

    def _comments(self, ctx) -> list[str]:
        return ctx.comments(self._parts)

    def _new_writer(self) -> None:
        if self._classic:
            self._writer = None
            if self._ifaces:
                self._writer = PcapWriter(self.out, self._ifaces[0].linktype, self._snaplen, nano=self._nano)
        else:
            self._writer = PcapngWriter(self.out, self._comments)
            self._keys_sent = 0
            self._take_keys()
        for iface in self._ifaces:
            self._writer.add_interface(iface)
        if self._writer is not None:
            self._writer.flush()
            self._flushed()

    def add_interface(self, iface_id: int, iface: NetInterface) -> None:
        """Describe the next interface (ids are the session's: 0, 1, ... in order)."""
        description = getattr(iface, "description", "")
        if iface.netns.name:
            description = f"network namespace {iface.netns.name}"
        block = Interface(iface.display_name, iface.linktype, self._snaplen, description, self._expression)
        self._ifaces.append(block)
        with self._errors():
            if self._writer is None:       # classic pcap: its one link type is the first's
                self._writer = PcapWriter(self.out, iface.linktype, self._snaplen, nano=self._nano)
            got = self._writer.add_interface(block)
            assert got == iface_id, "interface ids out of step"
            self._drain(time.monotonic())

    def embed_keys(self, keys) -> None:
        """Put the TLS keys of `keys` (a KeyLog) into the file as they come; a new file of a
        rotation starts with all of them."""
        self.keys = keys
        with self._errors():
            self._take_keys()

    def _holding(self) -> bool:
        return self.keys is not None and isinstance(self._writer, PcapngWriter)

    def _take_keys(self) -> None:
        if not self._holding():
            return
        if not self._keys_sent:      # a file that holds keys is a secret too
            make_private(self.out)
        self._writer.hold_packets(KEY_HOLD_SECONDS)
        self.keys.poll()
        new = self.keys.lines[self._keys_sent:]
        self._keys_sent += len(new)
        self._writer.add_secrets(new)

    def _drain(self, now: float) -> None:
        """What may go to the file now: everything, or with keys, what waited long enough."""
        if self._holding():
            self._take_keys()
            self._writer.release(now)
        else:
            self._writer.flush()
        self._flushed()

    def _flushed(self) -> None:
        """Python buffers nothing now: the file ends with a whole block (a failed write cuts back
        to here at least)."""
        if self._dest.regular:
            self._whole = os.lseek(self.out.fileno(), 0, os.SEEK_CUR)

    def write(self, packets: Batch) -> None:
        rot = self.rotation
        with self._errors():
            self._take_keys()
            if not rot.active:
                self._writer.write_batch(packets)
                return
            while len(packets) and not self.finished:
                if rot.time_is_up(time.time()):
                    self._rotate(rot.next_for_time(time.time()))
                    continue
                limit = rot.size if rot.size is not None else 1 << 62
                n = self._writer.write_batch(packets, limit)
                packets = packets.tail(n)
                if self._writer.written > limit:
                    self._rotate(rot.next_for_size())

    # fed by the native drain (ptcap.pipeline.drain): blocks framed in C, options from here

    def framing(self):
        """What blocks this sink takes from the native drain: pcapng, or classic pcap in
        micro- or nanoseconds."""
        if not self._classic:
            return Framing.PCAPNG
        return Framing.PCAP_NS if self._nano else Framing.PCAP_US

    def options(self, ctx, direction: int) -> bytes:
        return self._writer.options(ctx, direction) if isinstance(self._writer, PcapngWriter) else b""

    def room(self) -> int:
        """Bytes the current file takes before it is rotated (-C): the drain stops after the
        block that goes past them."""
        size = self.rotation.size if self.rotation.active else None
        written = self._writer.written if self._writer is not None else 0
        return 1 << 62 if size is None else max(size - written, 0)

    def direct(self) -> int:
        """The file descriptor the drain may write blocks to itself (all of this sink's own
        output written first), or -1: hand them to write_framed (TLS keys hold packets back)."""
        if self.finished or self._holding() or self._writer is None:
            return -1
        with self._errors():
            self._rotate_if_time_is_up()
            if self.finished:
                return -1
            self._writer.flush()
            self._flushed()
            return self.out.fileno()

    def wrote(self, nbytes: int) -> None:
        """The drain wrote nbytes of blocks to direct()'s descriptor."""
        self._writer.written += nbytes
        with self._errors():
            self._flushed()
            self._rotate_if_full()

    def failed(self, err: int) -> None:
        """The drain's write to direct()'s descriptor failed with errno err."""
        if err == errno.EPIPE:
            raise BrokenPipeError(err, os.strerror(err))
        self._failed(err)

    def write_framed(self, blocks, packets: int) -> None:
        """`packets` blocks framed by the drain (valid during this call only)."""
        with self._errors():
            if self.keys is not None:
                self._take_keys()
            self._rotate_if_time_is_up()
            if self.finished:
                return
            self._writer.write_framed(blocks)
            self._rotate_if_full()

    def _rotate_if_time_is_up(self) -> None:
        rot = self.rotation
        if rot.active and rot.time_is_up(time.time()):
            self._rotate(rot.next_for_time(time.time()))

    def _rotate_if_full(self) -> None:
        """-C: past the size after the block that took the file over it."""
        rot = self.rotation
        if rot.size is not None and self._writer.written > rot.size:
            self._rotate(rot.next_for_size())

    def tick(self, now: float) -> None:
        """After each batch: the batch goes to the file; -G rotates even when no packet comes.
        A pipe whose reader left ends the capture now, not at the next packet (-w - | head)."""
        if self.finished:
            return
        if self._dest.reader_gone():
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        with self._errors():
            self._drain(time.monotonic())
            if self.rotation.time_is_up(now):
                self._rotate(self.rotation.next_for_time(now))

    def _rotate(self, path: str | None) -> None:
        self._writer.flush()
        self._closer.close(self.out, self.path)      # off the reader's path: a close may wait for the disk
        if path is None:
            self.finished = True
            return
        self.path = path
        self._open(path)
        self._new_writer()

    def close(self) -> None:
        try:
            self._closer.finish()
        except OSError as e:
            raise OutputError(f"{self.path}: {e.strerror}", e.errno) from None
        try:
            if self._writer is not None and not self.out.closed:
                with self._errors():
                    self._take_keys()
                    self._writer.flush()
        finally:
            if self.out is not sys.stdout.buffer and not self.out.closed:
                try:
                    self.out.close()
                except OSError:
                    pass

    @contextlib.contextmanager
    def _errors(self):
        """A failed write is the user's problem to fix (disk full, ...): one line (a pipe's
        reader gone is the end of the capture, as tcpdump's SIGPIPE: BrokenPipeError)."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as e:
            self._failed(e.errno, e.strerror)

    def _failed(self, err: int, text: str | None = None) -> None:
        """The file keeps its whole blocks: a block the disk took only part of is cut off, and
        nothing more reaches the file (what Python still buffers goes to /dev/null)."""
        if self._dest.regular and not self.out.closed:
            fd = self.out.fileno()
            try:
                os.ftruncate(fd, _whole_blocks(fd, self._whole, self._classic))
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            except OSError:
                pass
        where = "standard output" if self.path == "-" else self.path
        raise OutputError(f"{where}: {text or os.strerror(err)}", err) from None


FILE_WAIT_SECONDS = 1.0
_PCAP_FILE_HEADER = 24
_PCAP_RECORD_HEADER = 16
_LENGTH = struct.Struct("<I")


def _whole_blocks(fd: int, start: int, classic: bool) -> int:
    """Where the last whole block (pcapng) or record (pcap) of the file at fd ends, walking
    from `start` (the end of a block)."""
    reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)     # fd is write-only
    try:
        return _walk(reader, os.fstat(reader).st_size, start, classic)
    finally:
        os.close(reader)


def _walk(fd: int, size: int, start: int, classic: bool) -> int:
    at = start
    if classic and at == 0:
        if size < _PCAP_FILE_HEADER:
            return 0
        at = _PCAP_FILE_HEADER
    while True:
        head = os.pread(fd, _PCAP_RECORD_HEADER if classic else 8, at)
        if len(head) < (_PCAP_RECORD_HEADER if classic else 8):
            return at
        if classic:
            length = _PCAP_RECORD_HEADER + _LENGTH.unpack_from(head, 8)[0]
        else:
            length = _LENGTH.unpack_from(head, 4)[0]
            if length < 12 or length % 4:
                return at
        if at + length > size:
            return at
        at += length


def open_output(path: str, owner: tuple[int, int] | None = None) -> BinaryIO:
    """The file -w names (- = stdout); one it creates is `owner`'s (-Z USER), as tcpdump's
    files are USER's: never a file that was there (a device, a FIFO, another user's file)."""
    if path == "-":
        return sys.stdout.buffer
    try:
        new = owner is not None and not os.path.lexists(path)
        f = open(path, "wb")
        if new:
            os.fchown(f.fileno(), *owner)
        return f
    except OSError as e:
        raise PtcapError(f"{path}: {e.strerror}") from None

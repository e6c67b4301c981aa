"""Printed lines: tcpdump's own (a tcpdump child decodes every packet, see sinks/tcpdump), with
ptcap's fields added as ptcpdump prints them: the interface, 'COMM.PID' and the direction after
the time stamp, ', ParentProc [...]', ', Container [...]', ', Pod [...]' at the end of the
packet's first line, or with -v one indented block per kind after the packet's lines."""
from __future__ import annotations

import argparse
import errno
import json
import os
import struct
import sys

from ptcap.errors import OutputError, PtcapError
from ptcap.formats.pcapng import pcap_time
from ptcap.meta.context import Part, ProcessContext
from ptcap.kernel.records import HEADER_LEN
from ptcap.pipeline.packet import _DIRECTIONS as _DIRS, _RECORD, MISSING, Batch, Direction
from ptcap.sinks.destination import Destination
from ptcap.sinks.tcpdump_child import PrintFlags, check_flags, child_user

_DIRECTIONS = {Direction.IN: "In ", Direction.OUT: "Out "}
_PCAP_RECORD = struct.Struct("<IIII")   # the children's pcap: nanosecond time stamps


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, separators=(",", ":"), sort_keys=True) if labels else "{}"


def inline_prefix(ctx: ProcessContext | None, parts: Part) -> str:
    """'curl.1234 ' for after the interface, or ''."""
    if ctx is not None and ctx.pid > 0 and parts & Part.PROCESS:
        return f"{ctx.comm}.{ctx.pid}{' (last owner)' if ctx.last_owner else ''} "
    return ""


def _peer(ctx: ProcessContext, parts: Part) -> str:
    """', Receiver [python3.456]': the other local end of the packet."""
    peer = ctx.peer
    if peer is None or peer.pid <= 0 or not parts & Part.PROCESS:
        return ""
    where = "".join(f", {kind} {name}" for kind, name, _block in _peer_workload(ctx, parts))
    return f", {ctx.peer_role} [{peer.comm}.{peer.pid}{' (last owner)' if peer.last_owner else ''}{where}]"


def _peer_workload(ctx: ProcessContext, parts: Part) -> list[tuple[str, str, str]]:
    """The other end's container and pod where they are not the packet's own process's (a
    container talking to a host process): (kind, short name, -v block)."""
    peer, out = ctx.peer, []
    if parts & Part.CONTAINER and peer.container_id and peer.container_id != ctx.container_id:
        out.append(("container", peer.container_name or peer.container_id[:12],
                    f"Container (name {peer.container_name}, id {peer.container_id}, image "
                    f"{peer.container_image}, labels {_labels(peer.container_labels)})"))
    if parts & Part.POD and peer.pod_name and (peer.pod_name, peer.pod_namespace) != (ctx.pod_name, ctx.pod_namespace):
        out.append(("pod", f"{peer.pod_name}.{peer.pod_namespace}",
                    f"Pod (name {peer.pod_name}, namespace {peer.pod_namespace}, UID {peer.pod_uid}, "
                    f"labels {_labels(peer.pod_labels)}, annotations {_labels(peer.pod_annotations)})"))
    return out


def inline_suffix(ctx: ProcessContext | None, parts: Part) -> str:
    """', ParentProc [bash.100], Container [web], Pod [web-0.default]' for the line's end."""
    if ctx is None:
        return ""
    out = []
    out.append(_peer(ctx, parts))
    if parts & Part.PARENTPROC and ctx.ppid > 0:
        out.append(f", ParentProc [{ctx.pcomm}.{ctx.ppid}]")
    if parts & Part.CONTAINER and ctx.container_id:
        out.append(f", Container [{ctx.container_name or ctx.container_id[:12]}]")
    if parts & Part.POD and ctx.pod_name:
        out.append(f", Pod [{ctx.pod_name}.{ctx.pod_namespace}]")
    if ctx.drop_reason:
        out.append(f", Drop [{ctx.drop_reason} at {ctx.drop_location}]")
    return "".join(out)


def verbose_blocks(ctx: ProcessContext | None, parts: Part) -> str:
    """The -v blocks, one line each, indented by four spaces."""
    if ctx is None:
        return ""
    out = []
    if ctx.pid > 0 and parts & Part.PROCESS:
        out.append(f"    Process (pid {ctx.pid}, cmd {ctx.cmd}, args {ctx.args}"
                   f"{', last owner' if ctx.last_owner else ''})")
    if ctx.tid > 0 and parts & Part.THREAD:
        out.append(f"    Thread (tid {ctx.tid}, name {ctx.tname})")
    if ctx.uid >= 0 and parts & Part.USER and (ctx.pid > 0 or ctx.username):
        user = f"uid {ctx.uid}" + (f", name {ctx.username}" if ctx.username else "")
        out.append(f"    User ({user})")
    if ctx.ppid > 0 and parts & Part.PARENTPROC:
        out.append(f"    ParentProc (pid {ctx.ppid}, cmd {ctx.pcmd}, args {ctx.pargs})")
    if ctx.container_id and parts & Part.CONTAINER:
        out.append(f"    Container (name {ctx.container_name}, id {ctx.container_id}, "
                   f"image {ctx.container_image}, labels {_labels(ctx.container_labels)})")
    if ctx.pod_name and parts & Part.POD:
        out.append(f"    Pod (name {ctx.pod_name}, namespace {ctx.pod_namespace}, UID {ctx.pod_uid}, "
                   f"labels {_labels(ctx.pod_labels)}, annotations {_labels(ctx.pod_annotations)})")
    if ctx.drop_reason:
        out.append(f"    Drop (reason {ctx.drop_reason}, location {ctx.drop_location})")
    peer = ctx.peer
    if peer is not None and peer.pid > 0 and parts & Part.PROCESS:
        last = ", last owner" if peer.last_owner else ""
        out.append(f"    {ctx.peer_role} (pid {peer.pid}, cmd {peer.cmd}, args {peer.args}{last})")
        out += [f"    {ctx.peer_role} {block}" for _kind, _name, block in _peer_workload(ctx, parts)]
    return "".join(_one_line(line) + "\n" for line in out)


def _one_line(text: str) -> str:
    """A process name or argument never starts a line of its own."""
    return text.replace("\n", "\\n").replace("\r", "\\r")


def _clean(text: str) -> bytes:
    return _one_line(text).encode(errors="replace")


class Additions:
    """ptcap's fields for a packet as (after the time stamp, end of first line, after the
    packet's lines), made once per (context, interface, direction)."""

    def __init__(self, parts: Part, verbose: int, live: bool, oneline: bool = False) -> None:
        self.parts = parts
        self.verbose = verbose or oneline      # --oneline: the -v blocks, joined to the line
        self.live = live
        self._cache: dict[tuple, tuple] = {}

    def __call__(self, ctx: ProcessContext | None, ifname: str, direction: int) -> tuple[bytes, bytes, bytes]:
        key = (id(ctx), ifname, direction)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is ctx:
            return hit[1]
        value = self._make(ctx, ifname, direction)
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[key] = (ctx, value)
        return value

    def _make(self, ctx, ifname: str, direction: int) -> tuple[bytes, bytes, bytes]:
        parts = self.parts
        if not (self.live or (ctx is not None and parts)):
            return b"", b"", b""        # a file's packet without process information: tcpdump's line
        pre = []
        if ifname:
            pre.append(f"{ifname} ")
        if not self.verbose:
            pre.append(inline_prefix(ctx, parts))
        pre.append(_DIRECTIONS.get(direction, ""))
        suf = after = b""
        if ctx is not None and parts:
            if self.verbose:
                after = verbose_blocks(ctx, parts).encode(errors="replace")
            else:
                suf = _clean(inline_suffix(ctx, parts))
        return _clean("".join(pre)), suf, after


def parts_from_args(args: argparse.Namespace) -> Part:
    text = getattr(args, "context", None)
    try:
        return Part.parse(text) if text is not None else Part.ALL
    except ValueError as e:
        raise PtcapError(str(e)) from None


class PrintSink:
    """The live line sink (no -w, or --print), a Sink: write(batch), tick(now), close().
    write() only queues the packets for the tcpdump children (it never blocks); tick() moves
    what the children take and print."""

    def __init__(self, args: argparse.Namespace, snaplen: int = 262144) -> None:
        flags = PrintFlags.from_args(args)
        if sys.stdout.isatty():
            flags.line_buffered = True
        check_flags(flags, child_user(flags.user))
        self.finished = False
        self.wait_seconds = None          # lines are printed as they come
        self.additions = Additions(parts_from_args(args), flags.verbose, live=True, oneline=flags.oneline)
        sys.stdout.flush()
        from ptcap.pipeline.drain import RUN, Framing       # here: -r needs only the fields
        from ptcap.sinks.child import GROUP
        from ptcap.sinks.tcpdump import Decoder
        self._group = GROUP
        self._framing, self._runs = Framing.PCAP_RUNS, RUN.iter_unpack
        self.decoder = Decoder(flags, sys.stdout.buffer, snaplen, lossless=False)
        self._ifaces: list[tuple[int, str]] = []
        self._dest = Destination(sys.stdout.fileno())

    def add_interface(self, iface_id: int, iface) -> None:
        assert iface_id == len(self._ifaces), "interface ids out of step"
        self._ifaces.append((iface.linktype, iface.display_name))

    def write(self, packets: Batch) -> None:
        """The Python path: the kernel's records as they are (no Packet objects). Each run of
        up to a group's worth of packets of one link type goes to the decoder as one byte
        string of pcap records, their fields as runs of packets with the same."""
        additions = self.additions
        put = self.decoder.put_records
        buf = packets.buf
        unpack = _RECORD.unpack_from
        pack = _PCAP_RECORD.pack
        contexts = packets.contexts
        ifaces = self._ifaces
        group = self._group
        parts: list = []
        runs: list = []
        count = n = 0
        linktype = first_ts = ts = -1
        last_key = last_iface = last_dir = None     # the packet before's: same flow, same fields
        fields = None
        for off in packets.offsets:
            direction, key, iface_id, hi, lo, caplen, length = unpack(buf, off)
            if key != last_key or iface_id != last_iface or direction != last_dir or count >= group:
                if n:
                    runs.append((fields, n))
                    n = 0
                ctx = contexts.get(key, MISSING)
                if ctx is MISSING:
                    ctx = packets.context(key)
                link, name = ifaces[iface_id]
                fields = additions(ctx, name, _DIRS[direction])
                last_key, last_iface, last_dir = key, iface_id, direction
                if link != linktype or count >= group:
                    if runs:
                        put(linktype, b"".join(parts), runs, first_ts, ts)
                        parts, runs, count = [], [], 0
                    linktype = link
            ts = (hi << 32) | lo
            if not count:
                first_ts = ts
            data_at = off + HEADER_LEN
            parts += (pack(*pcap_time(ts), caplen, length), buf[data_at:data_at + caplen])
            n += 1
            count += 1
        if n:
            runs.append((fields, n))
        if runs:
            put(linktype, b"".join(parts), runs, first_ts, ts)

    # fed by the native drain (ptcap.pipeline.drain): pcap records framed in C, in runs

    def framing(self):
        return self._framing

    def direct(self) -> int:
        return -1           # the records go to the decoder's queue, not to a descriptor

    def room(self) -> int:
        return 1 << 62

    def write_runs(self, records, runs, context) -> None:
        """The drain's pcap records (valid during this call only) and its runs describing
        them (RUN structs); `context(key)` is a record key's context."""
        additions = self.additions
        put = self.decoder.put_records
        ifaces = self._ifaces
        group = self._group
        adds: list = []
        at = start = count = 0
        linktype = link = first_ts = ts = -1
        last = fields = None
        for iface_id, n, nbytes, direction, t0, t1, key in self._runs(runs):
            if last is None or key != last[0] or iface_id != last[1] or direction != last[2]:
                link, name = ifaces[iface_id]
                fields = additions(context(key), name, _DIRS[direction])
                last = (key, iface_id, direction)
            if link != linktype or count + n > group:
                if adds:
                    put(linktype, bytes(records[start:at]), adds, first_ts, ts)
                    adds, start, count = [], at, 0
                linktype = link
            if not count:
                first_ts = t0
            adds.append((fields, n))
            count += n
            at += nbytes
            ts = t1
        if adds:
            put(linktype, bytes(records[start:at]), adds, first_ts, ts)

    def tick(self, now: float) -> None:
        """Between batches; stdout's reader gone ends the capture now, not at the next line
        (ptcap | head -1), as tcpdump's SIGPIPE does: 'Unable to write output: Broken pipe'."""
        if self._dest.reader_gone():
            raise OutputError(f"Unable to write output: {os.strerror(errno.EPIPE)}", errno.EPIPE)
        self.decoder.wake()

    def close(self) -> None:
        self.decoder.close()

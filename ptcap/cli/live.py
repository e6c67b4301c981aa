"""The capture API both front ends use (the CLI, the extcap): flags → session → engine
(ring → decode → join) → sinks; its own messages go to the `report` stream it is given."""
from __future__ import annotations

import argparse
import errno
import sys
from typing import TextIO

from ptcap.cli import arguments, linktypes, tlskeys
from ptcap.cli.command import Command
from ptcap.cli.listing import by_number, list_hooks, list_interfaces
from ptcap.cli.report import log_to, plural, release_log, silence
from ptcap.cli.signals import give_back, stop_on_signals
from ptcap.errors import OutputError, PtcapError
from ptcap.filter import compiler as pcapfilter
from ptcap.kernel.records import Counter
from ptcap.kernel.session import CaptureConfig, Session
from ptcap.meta.context import Part
from ptcap.meta.following import admit_later, follower
from ptcap.meta.join import Joiner
from ptcap.meta.metadata import Metadata
from ptcap.meta.processes import ProcessTable
from ptcap.pipeline.engine import Engine
from ptcap.pipeline.packet import Sink
from ptcap.sinks.file import FileSink
from ptcap.sinks.lines import PrintSink
from ptcap.sinks.rotation import parse_size
from ptcap.sinks.tcpdump_child import file_owner


def capture(args: argparse.Namespace, report: TextIO | None = None) -> int:
    """Capture as the flags say; returns the exit status (the command's, with `-- CMD`)."""
    report = report or sys.stderr
    expression = pcapfilter.expression_from_args(args)
    if args.dump_filter or args.debug_filter or args.list_interfaces or args.list_hooks or \
            args.list_linktypes or args.list_tstamp_types:
        give_back()     # not a capture: Ctrl-C as Python has it
        if args.dump_filter or args.debug_filter:
            from ptcap.cli.filterdump import dump_main
            return dump_main(args)
        if args.list_interfaces:
            return list_interfaces(args)
        if args.list_hooks:
            return list_hooks()
        if args.list_linktypes:
            return linktypes.list_linktypes(args)
        return linktypes.list_tstamp_types(args)
    if getattr(args, "monitor_mode", False):     # as tcpdump answers -I for a device without it
        raise PtcapError(f"{(args.interfaces or ['any'])[0]}: That device doesn't support monitor mode")
    stop = stop_on_signals()        # a signal from now on (or since main() began) ends it cleanly
    by_number(args)
    hooks = arguments.hooks(args)
    limit = arguments.count(args)
    snaplen = arguments.snaplen(args)
    parts = arguments.parts(args)
    who = arguments.who(args)
    tlskeys.wanted(args)
    metadata = None
    if parts & (Part.CONTAINER | Part.POD) or who.containers:
        metadata = Metadata(args.docker_address, args.containerd_address, args.cri_runtime_address)
        log_to(report)
        metadata.start()
    try:
        selector = arguments.container_selector(args, metadata, who, report)
    except BaseException:
        if metadata is not None:
            metadata.close()
        raise
    log_to(report)
    config = CaptureConfig(interfaces=args.interfaces, direction=args.direction, snaplen=snaplen,
                           expression=expression, ring_kib=args.buffer_kib, who=who,
                           backend=args.backend, netns=args.netns or [], hooks=hooks,
                           hook_rate=args.hook_rate, loopback_twice=args.loopback_twice)
    table = ProcessTable(metadata)
    joiner = Joiner(table)
    sinks = _sinks(args, parts, snaplen, expression)
    session = Session(config)
    command = None
    engine = None
    keys = None

    def new_interface(iface_id: int, iface) -> None:
        joiner.add_interface(iface_id, iface)
        for sink in sinks:
            sink.add_interface(iface_id, iface)

    session.on_new_interface = new_interface
    try:
        try:
            if stop.requested:          # stopped during start-up: nothing to attach, nothing captured
                raise _Stopped
            session.open()
            if stop.requested:
                raise _Stopped
            linktypes.check_capture(args, session.ifaces, report)
            table.lost_events = session.counter_reader(Counter.PROC_LOST)
            follow = None
            if selector is not None:
                admit_later(session, selector, metadata, report)
                own_netns = not args.netns and (not args.interfaces or "any" in args.interfaces)
                follow = follower(session, selector, own_netns)
            elif metadata is not None and session.admission is not None:
                metadata.finder.kernel_dirs = session.admission.directory
            if follow is not None:
                follow(initial=True)
            release_log()           # set up: what the runtimes' watchers said may be told now
            table.snapshot()
            keys, embed = tlskeys.open_keys(args, who)
            _announce(session, snaplen, args, report)
            for sink in sinks:
                if embed and isinstance(sink, FileSink):
                    sink.embed_keys(keys)
            if args.command:
                command = Command(args.command, tlskeys.command_env(keys))
                session.select_pid(command.pid)
                tlskeys.follow_command(keys, command.pid, args.command[0])
                command.start()
            tickers = [follow] if follow is not None else []
            if keys is not None:
                tickers.append(keys.poll)
            engine = Engine(session, joiner, sinks, stop, table, limit, command, tickers)
            engine.run()
        except _Stopped:
            pass
        finally:
            if metadata is not None:
                metadata.close()        # its watchers first: they write to the session's maps
            session.close()
            if command is not None:
                command.stop()
            try:
                _close(sinks)
            finally:
                if keys is not None:
                    keys.close()
    except BrokenPipeError:     # -w -: the reader went away, the end (as tcpdump's SIGPIPE)
        _silence_stdout()
    except OutputError as e:
        # stopped by a signal, the lines' reader or terminal gone with it (Ctrl-C on ptcap |
        # head, a closed terminal): the end, as tcpdump's, not an error
        if stop.signal is None or e.errno not in (errno.EPIPE, errno.EIO):
            raise
        _silence_stdout()
    captured = engine.captured if engine is not None else 0
    text = ""
    if any(sink.finished for sink in sinks):      # -G with -W, as tcpdump ends it
        text += f"Maximum file limit reached: {args.file_count}\n"
    received, dropped, limited, lost = session.all_counters()
    text += (f"{plural(captured, 'packet')} captured\n"
             f"{plural(received, 'packet')} received by filter\n"
             f"{plural(dropped, 'packet')} dropped by kernel\n")
    if lost:        # the ring had no room for them even in the part packets leave free
        text += f"{plural(lost, 'process event')} lost\n"
    if args.hook_rate:
        text += f"{plural(limited, 'packet')} over --hook-rate {args.hook_rate}/s\n"
    _tell(report, text)
    if command is not None and command.status is not None:
        return command.status
    return 0


def _sinks(args: argparse.Namespace, parts: Part, snaplen: int, expression: str) -> list[Sink]:
    sinks: list[Sink] = []
    if args.write:
        if (args.file_size or args.rotate_seconds) and args.write == "-":
            raise PtcapError("-C and -G need a file name, not -w -")
        sinks.append(FileSink(args.write, parts=parts,
                              file_size=parse_size(args.file_size) if args.file_size else None,
                              file_count=args.file_count, rotate_seconds=args.rotate_seconds,
                              nano=args.ts_precision == "nano", snaplen=snaplen, expression=expression,
                              owner=file_owner(args.relinquish_user), postrotate=args.postrotate))
    if not args.write or (args.print_too and args.write != "-"):
        sinks.append(PrintSink(args))
    return sinks


def _close(sinks: list[Sink]) -> None:
    """Flush and close every sink; the first failure is reported once the rest are closed."""
    failure = None
    for sink in sinks:
        try:
            sink.close()
        except PtcapError as e:
            failure = failure or e
    if failure is not None and sys.exc_info()[0] is None:
        raise failure


def _announce(session: Session, snaplen: int, args: argparse.Namespace, report: TextIO) -> None:
    for note in session.hook_capture.notes if session.hook_capture is not None else ():
        report.write(f"ptcap: {note}\n")
    if not args.verbose and not args.write:
        report.write("ptcap: verbose output suppressed, use -v[v]... for full protocol decode\n")
    else:                       # as tcpdump: 'tcpdump: listening on ...' with -v or -w
        report.write("ptcap: ")
    if not session.ifaces:      # --netns newly: nothing yet
        report.write(f"listening on network namespaces created from now on, "
                     f"snapshot length {snaplen} bytes\n")
        report.flush()
        return
    names = ", ".join(dict.fromkeys(i.display_name for i in session.ifaces))
    kinds = {i.linktype_name for i in session.ifaces}
    report.write(f"listening on {names}, link-type {'/'.join(sorted(kinds))}, "
                 f"snapshot length {snaplen} bytes\n")
    report.flush()


class _Stopped(Exception):
    """A stop signal came while the capture was being set up."""


def _tell(report: TextIO, text: str) -> None:
    """The counts at the end, as tcpdump's: to a terminal that is gone (SIGHUP), to nobody."""
    try:
        report.write(text)
        report.flush()
    except OSError:
        if report is sys.stderr:
            silence(sys.stderr)


def _silence_stdout() -> None:
    silence(sys.stdout)

"""Live capture from the command line: session → decoder → metadata join → sinks."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from typing import BinaryIO

from ptcap.filter import compiler as pcapfilter
from ptcap.kernel import interfaces
from ptcap.kernel import netns as nsmod
from ptcap.kernel.session import CaptureConfig, Session
from ptcap.cli.command import Command
from ptcap.meta.runtimes.docker_engine import RuntimeUnavailable
from ptcap.meta.runtimes.kubernetes import parse_pod_selector
from ptcap.meta.metadata import Metadata
from ptcap.kernel.selectors import ContainerSelector, WhoFilter
from ptcap.meta.context import Part
from ptcap.pipeline.decoder import decode, split, split_key
from ptcap.kernel import hooks as hookmod
from ptcap.errors import PtcapError
from ptcap.pipeline.packet import Direction, Packet
from ptcap.formats.pcapng import Interface, PcapngWriter, PcapWriter
from ptcap.meta.processes import NO_OWNER, ProcessTable
from ptcap.sinks.rotation import Rotation, parse_size

POLL_SECONDS = 0.05     # longest a record waits in the ring when traffic is light
COMMAND_GRACE = 0.2     # after `-- CMD` exits, how long its last packets may still come
BATCH_NAP = 0.002
SMALL_BATCH = 256


class Stop:
    """Set by SIGINT/SIGTERM/SIGHUP; the loop finishes the batch it has, drains and exits."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self)


class FileSink:
    """-w: pcapng (or classic pcap for a .pcap name), with the process context as comments;
    rotated with -C/-W/-G as tcpdump does."""

    def __init__(self, args: argparse.Namespace, table: ProcessTable, parts: Part) -> None:
        self.rotation = Rotation(args.write, parse_size(args.file_size) if args.file_size else None,
                                 args.file_count, args.rotate_seconds)
        self.path = self.rotation.first() if self.rotation.active else args.write
        self.out = _open_output(self.path)
        self._classic = args.write.endswith(".pcap")
        self._nano = args.ts_precision == "nano"
        self._table = table
        self._parts = parts
        self._names = hookmod.HookNames()
        table.forgotten.append(self._forget)
        self._writer: PcapngWriter | PcapWriter | None = None
        self._ifaces: list[Interface] = []
        self._snaplen = 262144
        self._expression = ""
        self.finished = False         # -G with -W: all files written, capture ends

    def _comments(self, key: bytes) -> list[str]:
        """A record key is the owner, the hook info (drop location and reason), the marks
        and the peer (the other local end)."""
        owner, info, marks, peer = split_key(key)
        ctx = self._names.join(self._table.joined(owner, marks, peer), owner, info)
        return ctx.comments(self._parts) if ctx is not None else []

    def _forget(self, owner: bytes) -> None:
        """Comments encoded from a context the table dropped are stale: drop them too."""
        self._names.forget(owner)
        if isinstance(self._writer, PcapngWriter):
            self._writer.forget_owner(owner)

    def start(self, snaplen: int, expression: str) -> None:
        self._snaplen, self._expression = snaplen, expression
        with self._errors():
            self._new_writer()

    def _new_writer(self) -> None:
        if self._classic:
            self._writer = None
            if self._ifaces:
                self._writer = PcapWriter(self.out, self._ifaces[0].linktype, self._snaplen, nano=self._nano)
        else:
            self._writer = PcapngWriter(self.out, self._comments)
        for iface in self._ifaces:
            self._writer.add_interface(iface)
        if self._writer is not None:
            self._writer.flush()

    def add_interface(self, iface_id: int, iface: interfaces.NetInterface) -> None:
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
            self._writer.flush()

    def write(self, buf, offsets: list[int]) -> None:
        rot = self.rotation
        with self._errors():
            if not rot.active:
                self._writer.write_records(buf, offsets)
                return
            while offsets and not self.finished:
                if rot.time_is_up(time.time()):
                    self._rotate(rot.next_for_time(time.time()))
                    continue
                limit = rot.size if rot.size is not None else 1 << 62
                n = self._writer.write_records(buf, offsets, limit)
                offsets = offsets[n:]
                if self._writer.written > limit:
                    self._rotate(rot.next_for_size())

    def tick(self) -> None:
        """-G: rotate on time even when no packet comes."""
        if self.rotation.time_is_up(time.time()) and not self.finished:
            with self._errors():
                self._rotate(self.rotation.next_for_time(time.time()))

    def _rotate(self, path: str | None) -> None:
        self._writer.flush()
        self.out.close()
        if path is None:
            self.finished = True
            return
        self.path = path
        self.out = _open_output(path)
        self._new_writer()

    def close(self) -> None:
        if self._writer is not None and not self.out.closed:
            with self._errors():
                self._writer.flush()

    @contextlib.contextmanager
    def _errors(self):
        """A failed write is the user's problem to fix (disk full, ...): one line, exit 1."""
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as e:
            raise PtcapError(f"{self.path}: {e.strerror}") from None


class PrintSink:
    """No -w (or --print): tcpdump's lines, with the process after the interface name."""

    def __init__(self, args: argparse.Namespace, table: ProcessTable) -> None:
        from ptcap.printer import Printer, PrintOptions
        self._printer = Printer(PrintOptions.from_args(args), sys.stdout)
        self._table = table
        self._names = hookmod.HookNames()
        table.forgotten.append(self._names.forget)
        self._ifaces: list[interfaces.NetInterface] = []

    def start(self, snaplen: int, expression: str) -> None:
        pass

    def add_interface(self, iface_id: int, iface: interfaces.NetInterface) -> None:
        self._ifaces.append(iface)

    def write(self, buf, offsets: list[int]) -> None:
        context = self._table.context
        joined = self._table.joined
        join = self._names.join
        no_info = hookmod.NO_INFO
        no_peer = NO_OWNER
        ifaces = self._ifaces
        for ts, iface_id, direction, length, data, owner, info, marks, peer in decode(buf, offsets, []):
            iface = ifaces[iface_id]
            ctx = context(owner) if not marks and peer == no_peer else joined(owner, marks, peer)
            if info != no_info:
                ctx = join(ctx, owner, info)
            self._printer.print_packet(Packet(ts, data, length, iface.linktype, iface.display_name,
                                              Direction(direction), ctx, iface.ifindex))
        sys.stdout.flush()

    def close(self) -> None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass


def _open_output(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdout.buffer
    try:
        return open(path, "wb")
    except OSError as e:
        raise PtcapError(f"{path}: {e.strerror}") from None


# Options that parse but whose work is not built yet: refuse them rather than ignore them.
_NOT_YET: tuple[tuple[str, str], ...] = ()


def _refuse_unbuilt(args: argparse.Namespace) -> None:
    for dest, flag in _NOT_YET:
        if getattr(args, dest, None):
            raise PtcapError(f"{flag} is not supported yet")


def capture(args: argparse.Namespace) -> int:
    _refuse_unbuilt(args)
    expression = pcapfilter.expression_from_args(args)
    if args.dump_filter or args.debug_filter:
        return pcapfilter.dump_main(args)
    if args.list_interfaces:
        return _list_interfaces(args)
    if args.list_hooks:
        return _list_hooks()
    hooks = _hooks_from_args(args)
    if args.count is not None and args.count <= 0:
        raise PtcapError(f"invalid packet count {args.count}")
    snaplen = args.snaplen if args.snaplen > 0 else 262144
    if snaplen > 262144:
        snaplen = 262144
    try:
        parts = Part.parse(args.context)
    except ValueError as e:
        raise PtcapError(str(e)) from None

    who = _who_from_args(args)
    metadata = None
    if parts & (Part.CONTAINER | Part.POD) or who.containers:
        metadata = Metadata(args.docker_address, args.containerd_address, args.cri_runtime_address)
    selector = _container_selector(args, metadata, who)
    _log_to_stderr()
    config = CaptureConfig(interfaces=args.interfaces, direction=args.direction, snaplen=snaplen,
                           expression=expression, ring_kib=args.buffer_kib, who=who,
                           backend=args.backend, netns=args.netns or [], hooks=hooks,
                           hook_rate=args.hook_rate, loopback_twice=args.loopback_twice)
    table = ProcessTable(metadata)
    sinks: list = []
    if args.write:
        if (args.file_size or args.rotate_seconds) and args.write == "-":
            raise PtcapError("-C and -G need a file name, not -w -")
        sinks.append(FileSink(args, table, parts))
    if not args.write or (args.print_too and args.write != "-"):
        sinks.append(PrintSink(args, table))

    stop = Stop()
    stop.install()
    session = Session(config)
    captured = 0
    command = None
    for sink in sinks:
        sink.start(snaplen, expression)

    def new_interface(iface_id: int, iface: interfaces.NetInterface) -> None:
        for sink in sinks:
            sink.add_interface(iface_id, iface)

    session.on_new_interface = new_interface
    try:
        session.open()
        follow = _container_follower(session, selector, args)
        if follow is not None:
            follow(initial=True)
        table.snapshot()
        _announce(session, snaplen, args)
        if args.command:
            command = Command(args.command)
            session.select_pid(command.pid)
            command.start()
        tickers = [follow] if follow is not None else []
        captured = _loop(session, sinks, args.count, stop, table, command, tickers)
    finally:
        session.close()
        if metadata is not None:
            metadata.close()
        if command is not None:
            command.stop()
        _close_sinks(sinks)
    received, dropped, limited = session.all_counters()
    sys.stderr.write(f"{captured} packet{'s' if captured != 1 else ''} captured\n"
                     f"{received} packet{'s' if received != 1 else ''} received by filter\n"
                     f"{dropped} packet{'s' if dropped != 1 else ''} dropped by kernel\n")
    if args.hook_rate:
        sys.stderr.write(f"{limited} packet{'s' if limited != 1 else ''} over --hook-rate {args.hook_rate}/s\n")
    if command is not None and command.status is not None:
        return command.status
    return 0


def _who_from_args(args: argparse.Namespace) -> WhoFilter:
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
                     containers=bool(selectors))


def _container_selector(args: argparse.Namespace, metadata: Metadata | None,
                        who: WhoFilter) -> ContainerSelector | None:
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
        if cid:
            raise PtcapError(f"--container-id {cid}: no such running container")
        sys.stderr.write(f"ptcap: {selector.describe()}: no such running container yet; "
                         "waiting for one to start\n")
    return selector


def _container_follower(session: Session, selector: ContainerSelector | None,
                        args: argparse.Namespace):
    """What keeps a container selection current while capturing: containers that start
    later are added to the kernel's selection, and (unless the user chose the namespaces or
    the interfaces) every interface of a selected container's own network namespace is
    captured as well, so that a container off the host network needs no --netns."""
    if selector is None:
        return None
    own_netns = not args.netns and (not args.interfaces or "any" in args.interfaces)

    def follow(initial: bool = False) -> None:
        for ns in (set() if initial else selector.poll()):
            session.select_mntns(ns)
        if own_netns:
            for name, path in selector.new_netns():
                session.add_namespace(path, name)
    return follow


def _log_to_stderr() -> None:
    """Resolvers say once, at info level, what they cannot reach: as 'ptcap: ...' lines."""
    log = logging.getLogger("ptcap")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ptcap: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _hooks_from_args(args: argparse.Namespace) -> list[str]:
    """--hook NAME...: checked names; the options that only apply to interfaces refused."""
    if args.hook_rate < 0:
        raise PtcapError(f"--hook-rate {args.hook_rate}: a rate is 0 (no limit) or more events per second")
    if not args.hooks:
        if args.hook_rate:
            raise PtcapError("--hook-rate limits --hook captures: give --hook")
        return []
    hooks = hookmod.check_names(args.hooks)
    if args.write and args.write.endswith(".pcap"):
        raise PtcapError(f"{args.write}: a --hook capture holds Ethernet and raw-IP packets; "
                         "a classic pcap file holds one link type: write pcapng instead")
    for given, flag in ((args.interfaces, "-i"), (args.netns, "--netns"), (args.pid, "--pid"),
                        (args.pname, "--pname"), (args.uid, "--uid"), (args.command, "-- CMD"),
                        (args.backend != "tc", "--backend"), (args.direction != "inout", "-Q")):
        if given:
            raise PtcapError(f"{flag} does not apply to --hook captures (a hook sees every "
                             "interface and namespace; filter with the expression)")
    return hooks


def _list_hooks() -> int:
    """--list-hooks: each hook point, loaded and attached once to see that it works here."""
    from ptcap.kernel.session import check_privileges
    check_privileges()
    for s in hookmod.probe():
        state = "supported" if s.supported else "unsupported"
        detail = hookmod.DESCRIPTIONS[s.name] if s.supported else s.detail
        print(f"{s.name:<20} {state:<12} {detail}")
    return 0


def backtrace(args: argparse.Namespace) -> int:
    """`ptcap backtrace --hook HOOK [-c N] EXPR`: count the kernel stacks of matching packets;
    print each distinct stack, symbolized, with its count at exit (Ctrl-C, SIGTERM or -c)."""
    if args.list_hooks:
        return _list_hooks()
    if not args.hooks:
        raise PtcapError("backtrace needs --hook (e.g. ptcap backtrace --hook kfree_skb 'icmp')")
    if args.write:
        raise PtcapError("backtrace prints stacks; -w does not apply")
    hooks = _hooks_from_args(args)
    if args.count is not None and args.count <= 0:
        raise PtcapError(f"invalid packet count {args.count}")
    expression = pcapfilter.expression_from_args(args)
    config = CaptureConfig(expression=expression, hooks=hooks, hook_rate=args.hook_rate, backtrace=True,
                           ring_kib=1024)
    stop = Stop()
    stop.install()
    session = Session(config)
    stacks: list = []
    try:
        session.open()
        sys.stderr.write(f"listening on {', '.join(hooks)}, counting kernel stacks; Ctrl-C prints them\n")
        sys.stderr.flush()
        seen = 0
        while not stop.requested:
            time.sleep(0.05)
            seen = session.all_counters()[0]
            if args.count is not None and seen >= args.count:
                break
        session.detach()
        stacks = session.hook_capture.stacks()
        received, lost, limited = session.all_counters()
    finally:
        session.close()
    symbols = hookmod.HookNames().symbols
    out = []
    for n, addrs in stacks:
        out.append(f"{n} packet{'s' if n != 1 else ''}:\n")
        out.extend(f"    {name}\n" for name in hookmod.symbolize_stack(addrs, symbols))
        out.append("\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    sys.stderr.write(f"{received} packet{'s' if received != 1 else ''} matched, "
                     f"{len(stacks)} distinct stack{'s' if len(stacks) != 1 else ''}"
                     f"{f', {lost} stacks lost' if lost else ''}"
                     f"{f', {limited} over --hook-rate' if limited else ''}\n")
    return 0


def _close_sinks(sinks: list) -> None:
    """Flush and close every sink; the first failure is reported once the rest are closed."""
    failure = None
    for sink in sinks:
        try:
            sink.close()
        except PtcapError as e:
            failure = failure or e
        out = getattr(sink, "out", None)
        if out is not None and out is not sys.stdout.buffer:
            try:
                out.close()
            except OSError:
                pass
    if failure is not None and sys.exc_info()[0] is None:
        raise failure


def _list_interfaces(args: argparse.Namespace) -> int:
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


def _announce(session: Session, snaplen: int, args: argparse.Namespace) -> None:
    if not args.verbose and not args.write:
        sys.stderr.write("ptcap: verbose output suppressed, use -v[v]... for full protocol decode\n")
    names = ", ".join(dict.fromkeys(i.display_name for i in session.ifaces))
    kinds = {i.linktype_name for i in session.ifaces}
    if not session.ifaces:      # --netns newly: nothing yet
        sys.stderr.write(f"listening on network namespaces created from now on, "
                         f"snapshot length {snaplen} bytes\n")
        sys.stderr.flush()
        return
    sys.stderr.write(f"listening on {names}, link-type {'/'.join(sorted(kinds))}, "
                     f"snapshot length {snaplen} bytes\n")
    sys.stderr.flush()


def _loop(session: Session, sinks: list, limit: int | None, stop: Stop, table: ProcessTable,
          command: Command | None = None, tickers: list | None = None) -> int:
    ring = session.ring
    command_done_at = None
    captured = 0
    draining = False
    last_sync = time.monotonic()
    small_batch = False
    while True:
        if command is not None and command_done_at is None and command.poll() is not None:
            command_done_at = time.monotonic()
        if command_done_at is not None and time.monotonic() - command_done_at > COMMAND_GRACE:
            stop.requested = True     # the command is done; its last packets have had time to pass
        if stop.requested and not draining:
            session.detach()      # nothing new comes in; what is queued is still read
            draining = True
        if not draining:
            # epoll on a ring is level-triggered: it returns at once while anything is
            # queued, so after a small batch, nap briefly and take a bigger one next time
            if small_batch:
                time.sleep(BATCH_NAP)
            else:
                ring.wait(POLL_SECONDS)
        buf, offsets = ring.batch()
        small_batch = 0 < len(offsets) < SMALL_BATCH
        packets = split(buf, offsets, table) if offsets else offsets
        try:
            if packets:
                if limit is not None and captured + len(packets) >= limit:
                    packets = packets[: limit - captured]
                    stop.requested = True
                captured += len(packets)
                for sink in sinks:
                    sink.write(buf, packets)
        except BrokenPipeError:
            _silence_stdout()
            return captured
        finally:
            ring.release()
        if not offsets and draining:
            return captured
        if not draining:
            session.refresh()
            for tick in tickers or ():
                tick()
            for sink in sinks:
                tick = getattr(sink, "tick", None)
                if tick is not None:
                    tick()
                if getattr(sink, "finished", False):
                    stop.requested = True
        if limit is not None and captured >= limit:
            session.detach()
            return captured
        now = time.monotonic()
        if now - last_sync > 1.0:
            session.sync_clock()
            last_sync = now


def _silence_stdout() -> None:
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
    except OSError:
        pass

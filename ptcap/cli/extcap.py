"""Wireshark's extcap protocol: list interfaces, describe the options dialog, validate a
capture filter, and run a capture into Wireshark's fifo.

A capture is the CLI's capture (ptcap.cli.live) with arguments built from the dialog's
options, writing pcapng to the fifo. The listing calls (--extcap-interfaces, --extcap-dlts,
--extcap-config) import nothing of the BPF layers, so Wireshark starts fast.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ptcap import __version__

# the help button opens this checkout's manual
HELP_URL = (Path(__file__).resolve().parents[2] / "README.md").as_uri()
log = logging.getLogger("ptcap.extcap")
log.addHandler(logging.NullHandler())      # nothing reaches stderr unless asked: Wireshark shows it
log.propagate = False


@dataclass(frozen=True)
class ExtcapInterface:
    name: str
    display: str
    cli_flags: tuple[str, ...]     # added to the CLI arguments of every capture on it
    hook: bool = False             # a kernel hook: sees every interface, no process selectors


# One entry per interface: what it is called in Wireshark and which CLI flags it adds.
INTERFACES = {
    i.name: i for i in (
        ExtcapInterface("ptcap", "Process-aware capture", ()),
        ExtcapInterface("ptcap-drops", "Packets the kernel drops, with the reason",
                        ("--hook", "kfree_skb"), hook=True),
    )
}

LOG_LEVELS = {"message": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG,
              "noisy": logging.DEBUG - 5}

_LIST = r"^[^,]+( *, *[^,]+)*$"
_NUMBERS = r"^ *[0-9]+( *, *[0-9]+)* *$"


@dataclass(frozen=True)
class Option:
    """One control of Wireshark's options dialog (an `arg` line of --extcap-config)."""

    call: str
    display: str
    type: str
    group: str
    tooltip: str
    default: str = ""
    validation: str = ""
    range: str = ""
    values: tuple[tuple[str, str], ...] = ()      # (value, display) of selectors
    at_hooks: bool = False         # also offered on kernel-hook interfaces


def _options() -> list[Option]:
    ifaces = [("any", "any (all interfaces)")] + [(n, n) for _, n in sorted(socket.if_nameindex())]
    return [
        Option("--interfaces", "Interfaces", "multicheck", "Capture",
               "Network interfaces to capture on; 'any' is every interface", "any", values=tuple(ifaces)),
        Option("--backend", "Backend", "selector", "Capture",
               "Where packets are taken: tc (with link-layer headers) or cgroup-skb (from the IP header)",
               "tc", values=(("tc", "tc (L2)"), ("cgroup-skb", "cgroup-skb (L3)"))),
        Option("--snaplen", "Snapshot length", "integer", "Capture",
               "Bytes of each packet to capture (0 = 262144)", "262144", range="0,262144", at_hooks=True),
        Option("--direction", "Direction", "selector", "Capture", "Packets received, sent, or both",
               "inout", values=(("inout", "in and out"), ("in", "in (received)"), ("out", "out (sent)"))),
        Option("--netns", "Network namespaces", "string", "Capture",
               "Comma-separated network namespaces (names from `ip netns` or paths); "
               "empty = this namespace", validation=_LIST),
        Option("--pid", "Process IDs", "string", "Filter",
               "Capture only the packets of these processes (comma-separated PIDs)", validation=_NUMBERS),
        Option("--follow-forks", "Follow forks", "boolflag", "Filter",
               "Also capture the packets of the children of these processes"),
        Option("--pname", "Process names", "string", "Filter",
               "Capture only the packets of processes with these names (comma-separated; "
               "the kernel's comm, at most 15 bytes each)", validation=_LIST),
        Option("--uid", "User IDs", "string", "Filter",
               "Capture only the packets of these users (comma-separated numeric UIDs)", validation=_NUMBERS),
        Option("--container", "Container", "string", "Filter",
               "Capture only the packets of this container (name, or ID of 12 to 64 hex digits)"),
        Option("--pod", "Pod", "string", "Filter",
               "Capture only the packets of this Kubernetes pod (NAME.NAMESPACE)"),
        Option("--embed-keylog-to-pcapng", "Decrypt TLS (embed keys)", "boolflag", "TLS",
               "Read the TLS keys of the selected running processes (Go crypto/tls, OpenSSL 3) "
               "and send them with the packets, so Wireshark decrypts TLS while capturing"),
        Option("--log-level", "Log level", "selector", "Debug", "How much to log", "message",
               values=tuple((v, v.capitalize()) for v in LOG_LEVELS), at_hooks=True),
        Option("--log-file", "Log file", "fileselect", "Debug",
               "Write the log to this file (empty: no log)", at_hooks=True),
    ]


def interfaces_text() -> str:
    lines = [f"extcap {{version={__version__}}}{{help={HELP_URL}}}"]
    lines += [f"interface {{value={i.name}}}{{display={i.display}}}" for i in INTERFACES.values()]
    return "\n".join(lines) + "\n"


def dlts_text(interface: str) -> str:
    # The pcapng's interface blocks carry each interface's real link type; this one is nominal.
    return "dlt {number=1}{name=EN10MB}{display=Ethernet, or raw IP as each interface block says}\n"


def options_for(interface: str | None) -> list[Option]:
    """The dialog's options on one interface: a kernel hook has no interfaces, direction or
    process selectors to choose."""
    iface = INTERFACES.get(interface or "")
    return [o for o in _options() if o.at_hooks or iface is None or not iface.hook]


def config_text(interface: str | None = None) -> str:
    lines = []
    for n, opt in enumerate(options_for(interface)):
        line = (f"arg {{number={n}}}{{call={opt.call}}}{{display={opt.display}}}"
                f"{{tooltip={opt.tooltip}}}{{type={opt.type}}}")
        if opt.default and not opt.values:
            line += f"{{default={opt.default}}}"
        if opt.range:
            line += f"{{range={opt.range}}}"
        if opt.validation:
            line += f"{{validation={opt.validation}}}"
        if opt.type == "fileselect":
            line += "{mustexist=false}"
        line += f"{{required=false}}{{group={opt.group}}}"
        lines.append(line)
        for value, display in opt.values:
            default = "true" if value == opt.default else "false"
            lines.append(f"value {{arg={n}}}{{value={value}}}{{display={display}}}"
                         f"{{enabled=true}}{{default={default}}}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptcap-extcap", add_help=False,
                                description="ptcap as a Wireshark extcap capture interface")
    p.add_argument("-h", "--help", action="help")
    p.add_argument("--extcap-interfaces", action="store_true")
    p.add_argument("--extcap-version")
    p.add_argument("--extcap-interface")
    p.add_argument("--extcap-dlts", action="store_true")
    p.add_argument("--extcap-config", action="store_true")
    p.add_argument("--extcap-capture-filter")
    p.add_argument("--extcap-reload-option")
    p.add_argument("--capture", action="store_true")
    p.add_argument("--fifo")
    for opt in _OPTION_CALLS:
        if opt in ("--follow-forks", "--embed-keylog-to-pcapng"):
            p.add_argument(opt, action="store_true")
        else:
            p.add_argument(opt, default="")
    return p


_OPTION_CALLS = ("--interfaces", "--backend", "--snaplen", "--direction", "--netns", "--pid",
                 "--follow-forks", "--pname", "--uid", "--container", "--pod", "--embed-keylog-to-pcapng",
                 "--log-level", "--log-file")


class ExtcapError(Exception):
    """A problem with what Wireshark passed: one line on stderr, exit 1."""


def _items(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _numbers(text: str, what: str) -> list[str]:
    items = _items(text)
    for item in items:
        if not item.isdigit():
            raise ExtcapError(f"{what}: {item!r} is not a number")
    return items


def cli_arguments(opts: argparse.Namespace, fifo: str) -> list[str]:
    """The `ptcap` command-line flags (no filter expression) for this extcap capture."""
    iface = INTERFACES.get(opts.extcap_interface or "")
    if iface is None:
        raise ExtcapError(f"unknown interface {opts.extcap_interface!r} (this extcap has "
                          f"{', '.join(INTERFACES)})")
    offered = {o.call for o in options_for(iface.name)}
    for call in _OPTION_CALLS:
        if call not in offered and getattr(opts, call[2:].replace("-", "_")):
            raise ExtcapError(f"{call} does not apply to {iface.name}")
    argv = ["-w", fifo, *iface.cli_flags]
    snaplen = ["-s", _numbers(opts.snaplen, "snapshot length")[0]] if opts.snaplen else []
    if iface.hook:
        return argv + snaplen
    for name in _items(opts.interfaces) or ["any"]:
        argv += ["-i", name]
    if opts.backend:
        argv += ["--backend", opts.backend]
    argv += snaplen
    if opts.direction:
        argv += ["-Q", opts.direction]
    for ns in _items(opts.netns):
        argv += ["--netns", ns]
    for pid in _numbers(opts.pid, "process ID"):
        argv += ["--pid", pid]
    if opts.follow_forks:
        argv.append("-f")
    for name in _items(opts.pname):
        argv += ["--pname", name]
    for uid in _numbers(opts.uid, "user ID"):
        argv += ["--uid", uid]
    container = opts.container.strip()
    if container:
        is_id = re.fullmatch(r"[0-9a-f]{12,64}", container) is not None
        argv += ["--container-id" if is_id else "--container-name", container]
    if opts.pod.strip():
        argv += ["--pod-name", opts.pod.strip()]
    if opts.embed_keylog_to_pcapng:
        argv.append("--embed-keylog-to-pcapng")
    return argv


def validate_filter(expression: str, opts: argparse.Namespace) -> str:
    """Wireshark's check of a capture filter: '' when valid, else the reason."""
    from ptcap.filter import compiler as pcapfilter
    from ptcap.errors import PtcapError
    iface = INTERFACES.get(opts.extcap_interface or "")
    try:
        if iface is not None and iface.hook:
            from ptcap.kernel.hooks import compile_filters      # what the hook capture itself compiles
            compile_filters(expression, 262144)
        else:
            backend = opts.backend or "tc"
            for name in _items(opts.interfaces) or ["any"]:
                pcapfilter.compile_filter(expression, pcapfilter.linktype_for(name, backend))
    except PtcapError as e:
        return str(e)
    return ""


class FifoWatch:
    """Stops the capture (as SIGTERM would) when Wireshark closes its end of the fifo, even
    when no packet is being written that would meet the broken pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fifo-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLERR)
        while not self._done.is_set():
            for _fd, events in poller.poll(100):
                if events & (select.POLLERR | select.POLLHUP) and not self._done.is_set():
                    log.info("the fifo's reader went away: stopping")
                    self._done.set()
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    def stop(self) -> None:
        """Before the fd is closed: a poll on a closed fd must not be taken for a gone reader."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


class _LogStream:
    """The capture's own stderr lines (listening on ..., counts) go to the log, not to
    Wireshark, which would show them as an error."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                log.info("%s", line)
        return len(text)

    def flush(self) -> None:
        pass


def _setup_logging(opts: argparse.Namespace) -> None:
    level = LOG_LEVELS.get(opts.log_level or "message")
    if level is None:
        raise ExtcapError(f"unknown log level {opts.log_level!r} (choose from {', '.join(LOG_LEVELS)})")
    log.setLevel(level)
    if opts.log_file:
        try:
            handler = logging.FileHandler(opts.log_file)
        except OSError as e:
            raise ExtcapError(f"log file {opts.log_file}: {e.strerror}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)


def _open_fifo(path: str) -> int:
    """Open Wireshark's fifo for writing (this waits for its reader, as Wireshark expects)."""
    try:
        return os.open(path, os.O_WRONLY)
    except OSError as e:
        raise ExtcapError(f"fifo {path}: {e.strerror}") from None


def run_capture(opts: argparse.Namespace) -> int:
    """--capture: the CLI's capture with -w FIFO; errors are one line on stderr, exit 1."""
    fifo_fd = None
    watch = None
    try:
        if not opts.fifo:
            raise ExtcapError("--capture needs --fifo")
        fifo_fd = _open_fifo(opts.fifo)     # first: tshark never waits on a fifo nobody opens
        _setup_logging(opts)
        log.info("ptcap %s extcap: %s", __version__, " ".join(sys.argv[1:]))
        if getattr(opts, "unknown", None):
            log.warning("ignoring arguments this version does not know: %s", " ".join(opts.unknown))
        argv = cli_arguments(opts, opts.fifo)
        log.info("capture: ptcap %s%s", " ".join(argv),
                 f" {opts.extcap_capture_filter}" if opts.extcap_capture_filter else "")
        from ptcap.cli import main as cli
        from ptcap.cli.live import capture
        args = _parse_cli(cli, argv, INTERFACES[opts.extcap_interface])
        args.expression = [opts.extcap_capture_filter] if opts.extcap_capture_filter else []
        watch = FifoWatch(fifo_fd)
        watch.start()
        real_stderr, sys.stderr = sys.stderr, _LogStream()
        try:
            status = capture(args)
        finally:
            sys.stderr = real_stderr
        log.info("capture ended (status %d)", status)
        return status
    except BrokenPipeError:
        log.info("the fifo's reader went away")
        return 0
    except KeyboardInterrupt:
        return 0
    except ExtcapError as e:
        return _fail(str(e))
    except Exception as e:      # PtcapError, BPFError, and anything unexpected: one line
        from ptcap.kernel.bpf import BPFError
        from ptcap.errors import PtcapError
        if not isinstance(e, (PtcapError, BPFError)):
            log.exception("unexpected error")
            return _fail(f"internal error: {type(e).__name__}: {e}")
        return _fail(str(e))
    finally:
        if watch is not None:
            watch.stop()
        if fifo_fd is not None:
            os.close(fifo_fd)


def _parse_cli(cli, argv: list[str], interface: ExtcapInterface) -> argparse.Namespace:
    """The CLI's own parser, with its usage errors turned into one line."""
    parser = cli.build_parser()
    for flag in interface.cli_flags:
        if flag.startswith("-") and flag not in parser._option_string_actions:
            raise ExtcapError(f"{interface.name}: this ptcap has no {flag} option")

    def error(message: str):
        raise ExtcapError(message)

    parser.error = error
    args = parser.parse_args(argv)
    args.command = []
    return args


def _fail(message: str) -> int:
    log.error("%s", message)
    sys.stderr.write(f"ptcap: {message}\n")
    sys.stderr.flush()
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    parser.error = lambda message: sys.exit(_fail(message))
    opts, unknown = parser.parse_known_args(argv)
    if opts.extcap_interfaces:
        sys.stdout.write(interfaces_text())
        return 0
    if opts.capture:                    # before any check: it opens the fifo whatever goes wrong
        opts.unknown = unknown
        return run_capture(opts)
    if opts.extcap_interface and opts.extcap_interface not in INTERFACES:
        return _fail(f"unknown interface {opts.extcap_interface!r}")
    if opts.extcap_dlts:
        sys.stdout.write(dlts_text(opts.extcap_interface))
        return 0
    if opts.extcap_config:
        sys.stdout.write(config_text(opts.extcap_interface))
        return 0
    if opts.extcap_capture_filter is not None:
        reason = validate_filter(opts.extcap_capture_filter, opts)
        if reason:
            sys.stdout.write(reason + "\n")
            return 1
        return 0
    if unknown:
        return _fail(f"unknown arguments: {' '.join(unknown)}")
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

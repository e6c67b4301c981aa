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

# The tree (a checkout, or the root-owned copy install-wireshark.sh makes in /opt/ptcap)
TREE = Path(__file__).resolve().parents[2]
# the dialog's help button opens this page, installed with the extcap
HELP_URL = (TREE / "extcap" / "help.html").as_uri()
# The privileged half, for users who are not root: built and installed (root:wireshark 0750,
# cap_bpf, cap_perfmon, cap_net_admin) by install-wireshark.sh; see extcap/ptcap-capture.c.
HELPER = TREE / "libexec" / "ptcap-capture"
GROUP = "wireshark"
log = logging.getLogger("ptcap.extcap")
log.addHandler(logging.NullHandler())      # nothing reaches stderr unless asked: Wireshark shows it
log.propagate = False


@dataclass(frozen=True)
class ExtcapInterface:
    name: str
    display: str
    cli_flags: tuple[str, ...]     # added to the CLI arguments of every capture on it
    hook: bool = False             # a kernel hook: sees every interface, no process selectors


# One entry per interface: name, display (one word: it names Wireshark's temporary file), CLI flags.
INTERFACES = {
    i.name: i for i in (
        ExtcapInterface("ptcap", "ptcap-processes", ()),
        ExtcapInterface("ptcap-drops", "ptcap-kernel-drops",
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
        if opt.default and (not opt.values or opt.type == "multicheck"):
            line += f"{{default={opt.default}}}"      # a multicheck's boxes checked at first
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
    from ptcap.kernel.interfaces import filter_linktype
    iface = INTERFACES.get(opts.extcap_interface or "")
    try:
        if iface is not None and iface.hook:
            from ptcap.kernel.hooks import compile_filters      # what the hook capture itself compiles
            compile_filters(expression, 262144)
        else:
            backend = opts.backend or "tc"
            for name in _items(opts.interfaces) or ["any"]:
                pcapfilter.compile_filters(expression, (filter_linktype(name, backend),))
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


PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _prctl(option: int, arg: int = 0) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


class ParentWatch:
    """Ends the capture, as SIGTERM does, when the process that started the extcap (tshark
    or Wireshark; dumpcap is its sibling) dies by any signal: the kernel's parent-death
    signal, and a poll of the parent's pid for the parent that is gone before it is set."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parent-watch", daemon=True)

    def start(self) -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            if os.getppid() != self.parent:
                log.info("the process that started the capture (pid %d) is gone: stopping", self.parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()


def _group_error() -> ExtcapError:
    import pwd
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return ExtcapError(f"capturing needs membership in group {GROUP} (an administrator runs "
                       f"`usermod -aG {GROUP} {user}`; then log in again), or root")


def _to_helper(opts: argparse.Namespace) -> ExtcapError | None:
    """A user who is not root captures through the privileged helper (this call does not
    return when it can); the reason it cannot, else None (a checkout without the helper:
    the capture says what it lacks)."""
    from ptcap.kernel.session import has_capture_caps
    if os.getuid() == 0 or has_capture_caps() or not HELPER.exists():
        return None
    if os.access(HELPER, os.X_OK):
        try:
            os.execv(HELPER, [str(HELPER), *opts.raw_argv])
        except OSError:
            pass
    return _group_error()


def _on_behalf_of_user(opts: argparse.Namespace) -> ExtcapError | None:
    """Run by the helper for a member of the group: capabilities, but the user's own uid and
    file permissions. Nothing this process starts inherits the capabilities, the user cannot
    ptrace it, and it writes only to the fifo and enters no other network namespace."""
    import stat
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(PR_SET_DUMPABLE, 0)
    try:
        is_fifo = stat.S_ISFIFO(os.stat(opts.fifo).st_mode)
    except OSError as e:
        raise ExtcapError(f"fifo {opts.fifo}: {e.strerror}") from None
    if not is_fifo:                 # never opened: this is the only file it writes
        raise ExtcapError(f"fifo {opts.fifo}: not a fifo")
    if opts.netns:
        return ExtcapError(f"--netns: capturing in another network namespace needs root "
                           f"(the {GROUP} group's capture enters none)")
    return None


def run_capture(opts: argparse.Namespace) -> int:
    """--capture: the CLI's capture with -w FIFO; errors are one line on stderr, exit 1."""
    fifo_fd = None
    watch = None
    parent = ParentWatch(opts.parent)
    try:
        parent.start()
        if not opts.fifo:
            raise ExtcapError("--capture needs --fifo")
        refused = _to_helper(opts)
        if refused is None and os.getuid() != 0:
            from ptcap.kernel.session import has_capture_caps
            if has_capture_caps():
                refused = _on_behalf_of_user(opts)
        fifo_fd = _open_fifo(opts.fifo)     # first: tshark never waits on a fifo nobody opens
        if refused is not None:
            raise refused
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
        status = capture(args, report=_LogStream())
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
        parent.stop()
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
        opts.raw_argv = list(argv)
        opts.parent = os.getppid()
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
        # Wireshark reads the reason from stdout, and only from an extcap that exits 0
        reason = validate_filter(opts.extcap_capture_filter, opts)
        if reason:
            sys.stdout.write(f"ptcap: {reason.splitlines()[0]}\n")
        return 0
    if unknown:
        return _fail(f"unknown arguments: {' '.join(unknown)}")
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wireshark's extcap protocol: list interfaces, describe the options dialog, validate a
capture filter, and run a capture into Wireshark's fifo.

A capture is the CLI's capture (ptcap.cli.live) with arguments built from the dialog's
options (ptcap.cli.extcap_dialog), writing pcapng to the fifo. The listing calls
(--extcap-interfaces, --extcap-dlts, --extcap-config) import nothing of the BPF layers,
so Wireshark starts fast.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ptcap import __version__
from ptcap.cli.extcap_dialog import (INTERFACES, LOG_LEVELS, ExtcapError, ExtcapInterface, build_parser,
                                     cli_arguments, config_text, dlts_text, interfaces_text, split_list)
from ptcap.cli.extcap_dialog import HELP_URL  # noqa: F401 (the dialog's, named here for callers)
from ptcap.cli.extcap_privileges import on_behalf_of_user, to_helper
from ptcap.cli.extcap_watches import FifoWatch, ParentWatch

log = logging.getLogger("ptcap.extcap")
log.addHandler(logging.NullHandler())      # nothing reaches stderr unless asked: Wireshark shows it
log.propagate = False


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
            for name in split_list(opts.interfaces) or ["any"]:
                pcapfilter.compile_filters(expression, (filter_linktype(name, backend),))
    except PtcapError as e:
        return str(e)
    return ""


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
    parent = ParentWatch(opts.parent)
    try:
        parent.start()
        if not opts.fifo:
            raise ExtcapError("--capture needs --fifo")
        refused = to_helper(opts)
        if refused is None and os.getuid() != 0:
            from ptcap.kernel.privileges import has_capture_caps
            if has_capture_caps():
                refused = on_behalf_of_user(opts)
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

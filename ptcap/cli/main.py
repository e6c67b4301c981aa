"""The tcpdump-compatible command line: parse flags, then hand over to capture or file reading."""
from __future__ import annotations

import argparse
import io
import sys

from ptcap.cli import signals
from ptcap.errors import WRITE_FAILED, OutputError, PtcapError


class _Parser(argparse.ArgumentParser):
    """Bad flags are a one-line error and exit 1, as tcpdump answers them (argparse would
    print the whole usage and exit 2)."""

    def error(self, message: str):
        from ptcap.cli import flagwords
        shorts = {s[1] for a in self._actions for s in a.option_strings if len(s) == 2}
        raise PtcapError(flagwords.getopt_words(message, shorts))


def build_parser() -> argparse.ArgumentParser:
    from ptcap.cli import flagwords, tlskeys
    p = _Parser(
        prog="ptcap",
        usage="ptcap [flags] [expression] [-- command [args]]\n"
          "       ptcap backtrace --hook HOOK [-c N] [expression]",
        description="Process-aware packet capture: tcpdump's flags and filters, "
        "plus the process, container and pod behind every packet.",
        add_help=False,
    )
    p.add_argument("-h", "--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="store_true", help="print versions and kernel hook support")
    p.add_argument("--fp-type", dest="fp_type", action="store_true",
                   help="print the floating-point test value of the tcpdump decoder, as tcpdump --fp-type")
    p.add_argument("-a", dest="old_a", action="store_true", help="accepted and ignored, as by tcpdump")

    cap = p.add_argument_group("capture")
    cap.add_argument("-i", "--interface", action="append", dest="interfaces", metavar="IFACE",
                     help="interface to capture on (repeatable; 'any' = every interface)")
    cap.add_argument("-Q", "--direction", type=flagwords.direction, default="inout", metavar="in|out|inout",
                     help="capture only received (in), sent (out) or both (inout)")
    cap.add_argument("--loopback-twice", action="store_true",
                     help="capture each loopback packet twice, leaving (sender's process) and arriving "
                          "(receiver's), instead of once with both")
    cap.add_argument("-s", "--snapshot-length", dest="snaplen", type=flagwords.snaplen, default=262144,
                     metavar="SNAPLEN", help="bytes of each packet to capture (default 262144)")
    cap.add_argument("-c", dest="count", type=flagwords.packet_count, metavar="N", help="exit after N packets")
    cap.add_argument("-B", "--buffer-size", dest="buffer_kib", type=flagwords.buffer_size, metavar="KiB",
                     help="kernel ring buffer size in KiB (rounded up to a power of two)")
    cap.add_argument("-p", "--no-promiscuous-mode", action="store_true",
                     help="accepted for tcpdump's sake: ptcap never puts an interface in promiscuous mode")
    cap.add_argument("-I", "--monitor-mode", dest="monitor_mode", action="store_true",
                     help="refused for a capture, as tcpdump refuses it for a device without monitor mode "
                          "(ptcap never changes an interface's mode); ignored with -r")
    cap.add_argument("-D", "--list-interfaces", action="store_true", help="list interfaces and exit")
    cap.add_argument("-y", "--linktype", metavar="TYPE",
                     help="accepted when it is the link type the interfaces have (ptcap never changes it)")
    cap.add_argument("-L", "--list-data-link-types", dest="list_linktypes", action="store_true",
                     help="list the interfaces' data link types and exit")
    cap.add_argument("-j", "--time-stamp-type", dest="tstamp_type", metavar="TYPE",
                     help="time stamp type: host (the kernel's clock) is the one there is")
    cap.add_argument("-J", "--list-time-stamp-types", dest="list_tstamp_types", action="store_true",
                     help="list the interfaces' time stamp types and exit")
    cap.add_argument("--immediate-mode", action="store_true",
                     help="accepted for tcpdump's sake: packets are always delivered as they come")
    cap.add_argument("--backend", choices=("tc", "cgroup-skb"), default="tc",
                     help="where packets are taken: tc (L2, default) or cgroup-skb (L3)")
    cap.add_argument("--netns", action="append", metavar="PATH|NAME",
                     help="capture in this network namespace (repeatable)")
    cap.add_argument("--hook", action="append", dest="hooks", default=[], metavar="HOOK",
                     help="capture inside the kernel at this hook point instead of on interfaces "
                          "(kfree_skb: drops with reason and location; repeatable; see --list-hooks)")
    cap.add_argument("--list-hooks", action="store_true", help="list the kernel hook points this kernel supports and exit")
    cap.add_argument("--hook-rate", type=int, default=0, metavar="N",
                     help="at most N hook events per second (counted beyond that, not copied)")

    flt = p.add_argument_group("filters")
    flt.add_argument("-F", dest="filter_file", metavar="FILE", help="read the filter expression from FILE")
    flt.add_argument("-O", "--no-optimize", dest="no_optimize", action="store_true",
                     help="don't run libpcap's optimizer on the filter (as -d shows)")
    flt.add_argument("-d", dest="dump_filter", action="count", default=0,
                     help="print the compiled classic BPF (-dd: as C, -ddd: as decimal) and exit")
    flt.add_argument("--debug-filter", action="store_true",
                     help="print the generated eBPF program of the filter and exit")
    flt.add_argument("--pid", action="append", type=int, default=[], metavar="PID",
                     help="capture only packets of this process (repeatable)")
    flt.add_argument("--pname", action="append", default=[], metavar="NAME",
                     help="capture only packets of processes with this name")
    flt.add_argument("--uid", action="append", type=int, default=[], metavar="UID",
                     help="capture only packets of this user (repeatable)")
    flt.add_argument("-f", "--follow-forks", action="store_true",
                     help="also capture the children of selected processes (--pid, --pname, --uid) born from now on")
    flt.add_argument("--container-id", metavar="ID",
                     help="capture only packets of this container (full id or a prefix)")
    flt.add_argument("--container-name", metavar="NAME",
                     help="capture only packets of containers with this name (also ones started later)")
    flt.add_argument("--pod-name", metavar="NAME.NAMESPACE",
                     help="capture only packets of this Kubernetes pod's containers")
    flt.add_argument("--docker-address", metavar="ADDR",
                     help="Docker engine address (default $DOCKER_HOST or unix:///var/run/docker.sock)")
    flt.add_argument("--containerd-address", metavar="ADDR",
                     help="containerd socket (default /run/containerd/containerd.sock)")
    flt.add_argument("--cri-runtime-address", metavar="ADDR",
                     help="CRI runtime socket (default: --containerd-address, else containerd's, else CRI-O's /run/crio/crio.sock)")

    out = p.add_argument_group("output")
    out.add_argument("-w", dest="write", metavar="FILE", help="write packets to FILE (pcapng; .pcap = classic pcap; - = stdout)")
    out.add_argument("-r", dest="read", metavar="FILE", help="read packets from FILE (- = stdin)")
    out.add_argument("-V", dest="read_list", metavar="FILE",
                     help="read packets from each file named in FILE, one name a line")
    out.add_argument("--print", dest="print_too", action="store_true", help="print lines while writing with -w")
    out.add_argument("-C", dest="file_size", metavar="SIZE", help="rotate -w after SIZE (millions of bytes; k/m/g suffixes)")
    out.add_argument("-W", dest="file_count", type=flagwords.file_count, metavar="COUNT", help="keep at most COUNT rotated files")
    out.add_argument("-G", dest="rotate_seconds", type=flagwords.seconds, metavar="SECONDS", help="rotate -w every SECONDS")
    out.add_argument("-z", dest="postrotate", metavar="COMMAND",
                     help="with -C or -G: run 'COMMAND FILE' on each file rotation closes (-z gzip), "
                          "at the lowest priority")
    out.add_argument("-U", "--packet-buffered", action="store_true", help="flush -w output after every packet")
    out.add_argument("-l", dest="line_buffered", action="store_true", help="line-buffer stdout")
    out.add_argument("--context", default="process,thread,parentproc,user,container,pod",
                     help="process context to print and write (process,thread,parentproc,user,container,pod)")
    out.add_argument("--oneline", action="store_true",
                     help="each packet on one line, with its process, parent, container and pod blocks (as ptcpdump)")

    tlskeys.add_arguments(p.add_argument_group("TLS keys (secrets: never printed)"))
    fmt = p.add_argument_group("printing (as tcpdump)")
    fmt.add_argument("-n", dest="numeric", action="count", default=0, help="don't resolve names (-nn: nor ports)")
    fmt.add_argument("-N", dest="no_domain", action="count", default=0, help="don't print host names' domain")
    fmt.add_argument("--foreign", dest="foreign", action="store_true",
                     help="tcpdump's -f (print foreign IPv4 addresses numerically); -f is --follow-forks")
    fmt.add_argument("-b", dest="asdot", action="store_true", help="BGP AS numbers in ASDOT notation")
    fmt.add_argument("-H", dest="mesh", action="store_true", help="detect 802.11s draft mesh headers")
    fmt.add_argument("-K", "--dont-verify-checksums", dest="no_checksum", action="store_true",
                     help="don't verify IP, TCP or UDP checksums")
    fmt.add_argument("-u", dest="nfs_handles", action="store_true", help="print undecoded NFS handles")
    fmt.add_argument("-E", dest="esp_secret", metavar="SPI@IPADDR:ALGO:SECRET",
                     help="decrypt IPsec ESP packets (as tcpdump -E)")
    fmt.add_argument("-M", dest="md5_secret", metavar="SECRET", help="TCP-MD5 option secret (RFC 2385)")
    fmt.add_argument("-m", dest="mib_modules", action="append", metavar="MODULE", help="load an SMI MIB module")
    fmt.add_argument("-T", dest="packet_type", metavar="TYPE",
                     help="print packets selected by the expression as TYPE (as tcpdump -T)")
    fmt.add_argument("-Z", "--relinquish-privileges", dest="relinquish_user", metavar="USER",
                     help="the user -w files belong to and the tcpdump decoder runs as (default: files "
                          "root's, decoder tcpdump's, else nobody's; never root: -Z root keeps files root's)")
    fmt.add_argument("-v", dest="verbose", action="count", default=0, help="more detail (-vv, -vvv)")
    fmt.add_argument("-q", dest="quiet", action="count", default=0, help="less protocol detail")
    fmt.add_argument("-e", dest="link_header", action="count", default=0, help="print the link-level header")
    fmt.add_argument("-x", dest="hex", action="count", default=0, help="hex dump (-xx: with link header)")
    fmt.add_argument("-X", dest="hex_ascii", action="count", default=0, help="hex and ASCII dump (-XX: with link header)")
    fmt.add_argument("-A", dest="ascii", action="count", default=0, help="print payload as ASCII")
    fmt.add_argument("-t", dest="tstamp", action="count", default=0, help="-t no time, -tt epoch, -ttt delta, -tttt date, -ttttt since first")
    fmt.add_argument("-#", "--number", dest="number", action="store_true", help="print a packet number")
    fmt.add_argument("-S", "--absolute-tcp-sequence-numbers", dest="absolute_seq", action="store_true")
    fmt.add_argument("--count", dest="count_only", action="store_true", help="print only the packet count (with -r)")
    fmt.add_argument("--time-stamp-precision", dest="ts_precision", choices=("micro", "nano"), default="micro")
    fmt.add_argument("--micro", dest="ts_precision", action="store_const", const="micro")
    fmt.add_argument("--nano", dest="ts_precision", action="store_const", const="nano")

    peer = p.add_argument_group("ptcpdump's tuning flags (accepted; ptcap needs no such setting)")
    for flag in ("--exec-events-worker-number", "--event-chan-size", "--delay-before-handle-packet-events"):
        peer.add_argument(flag, metavar="N", default=argparse.SUPPRESS,
                          help="ptcap reads process events and packets from one ring, in order")
    peer.add_argument("--log-level", default=argparse.SUPPRESS, choices=("debug", "info", "warn", "error", "fatal"),
                      help="ptcap logs only errors, on stderr")

    p.add_argument("expression", nargs="*", help="pcap-filter(7) expression")
    return p


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split 'flags expression -- CMD ARGS' at the first '--'."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_args(argv: list[str]) -> argparse.Namespace:
    from ptcap.cli import linktypes
    from ptcap.sinks.rotation import parse_size
    own, command = split_command(argv)
    args = build_parser().parse_intermixed_args(own)
    args.command = command
    if not 0 <= args.snaplen <= MAX_SNAPLEN:
        raise PtcapError(f"invalid snaplen {args.snaplen} (must be >= 0 and <= {MAX_SNAPLEN})")
    if args.buffer_kib is not None and args.buffer_kib > MAX_BUFFER_KIB:
        raise PtcapError(f"invalid buffer size {args.buffer_kib} (must be 1 to {MAX_BUFFER_KIB} KiB)")
    if args.file_size is not None:
        parse_size(args.file_size)      # checked as tcpdump checks it, with or without -w
    linktypes.check_names(args)
    return args


MAX_SNAPLEN = 262144
MAX_BUFFER_KIB = 1 << 20        # a 1 GiB ring


def buffered_stdout() -> None:
    """With PYTHONUNBUFFERED set (common in container images) or `python -u`, sys.stdout
    writes to a raw file, whose write() may take only part of what it is given (a reader
    leaving mid-write, a signal) and tell it only in its count: the rest was dropped without a
    word, and `ptcap -r F | head -1` ended with status 0 where tcpdump says 'Unable to write
    output'. ptcap's output is buffered as without that setting; -l and -U say when it is
    flushed, as they do for tcpdump."""
    out = sys.stdout
    if out is None or not isinstance(getattr(out, "buffer", None), io.RawIOBase):
        return
    out.flush()
    raw = io.FileIO(out.fileno(), "w", closefd=False)   # fd 1 stays the old object's to close
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding=out.encoding, errors=out.errors,
                                  line_buffering=raw.isatty())


def main(argv: list[str] | None = None) -> int:
    signals.early()     # before anything slow: a Ctrl-C from now on is a stop, not a traceback
    buffered_stdout()
    argv = sys.argv[1:] if argv is None else argv
    reading = False
    try:
        # `ptcap backtrace --hook kfree_skb EXPR`: a subcommand only as the first word, so
        # tcpdump-style expressions (which never start with it) keep working
        if argv[:1] == ["backtrace"]:
            args = parse_args(argv[1:])
            from ptcap.cli.backtrace import backtrace
            return backtrace(args)
        args = parse_args(argv)
        reading = args.read is not None or args.read_list is not None
        return run(args)
    except OutputError as e:     # as tcpdump: 'Unable to write output: ...', its status 14
        _quiet_stdout()
        _error(str(e))
        return WRITE_FAILED
    except PtcapError as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        if reading:     # as tcpdump -r says it, with its S_ERR_ND_WRITE_FILE
            _error("Unable to write output: Broken pipe")
            return 14
        return 0
    except OSError as e:
        bpf = sys.modules.get("ptcap.kernel.bpf")   # imported by what can raise it, not for -r
        if bpf is not None and isinstance(e, bpf.BPFError):
            _error(str(e))
            return 1
        # output that cannot be written (a full disk, /dev/full): one line, never a traceback
        _quiet_stdout()
        _error(f"{e.filename or 'standard output'}: {e.strerror or e}")
        return 1


def run(args: argparse.Namespace) -> int:
    if args.version or args.fp_type or args.dump_filter or args.debug_filter or args.read is not None or args.read_list is not None:
        signals.give_back()     # not a capture: Ctrl-C as Python has it
    if args.version:
        from ptcap.cli.version import report
        print(report())
        return 0
    if args.fp_type:        # the decoder's arithmetic: tcpdump's own test suite asks for it
        from ptcap.cli.version import fp_type
        return fp_type()
    if args.list_interfaces:     # as tcpdump: -D lists, whatever else is asked (-r, -V)
        from ptcap.cli.live import capture
        return capture(args, sys.stderr)
    if args.dump_filter and (args.read is not None or args.read_list is not None):
        from ptcap.cli.filterdump import dump_main      # -d -r FILE: the program for the file
        return dump_main(args)
    if args.read_list is not None:
        if args.read is not None:
            raise PtcapError("-V and -r are mutually exclusive.")
        from ptcap.cli.offline import read_files
        return read_files(args)
    if args.read is not None:
        from ptcap.cli.offline import read_file
        return read_file(args)
    if args.dump_filter or args.debug_filter:
        from ptcap.cli.filterdump import dump_main      # no capture machinery to print a filter
        return dump_main(args)
    from ptcap.cli.live import capture
    return capture(args, sys.stderr)


def _error(message: str) -> None:
    try:
        sys.stderr.write(f"ptcap: {message}\n")
        sys.stderr.flush()
    except OSError:     # its terminal is gone too: nobody to tell, and exit must stay quiet
        _quiet(sys.stderr)


def _quiet_stdout() -> None:
    # stdout's reader went away (ptcap | head): point stdout at /dev/null so exit is silent
    _quiet(sys.stdout)


def _quiet(stream) -> None:
    from ptcap.cli.report import silence
    silence(stream)


if __name__ == "__main__":
    sys.exit(main())

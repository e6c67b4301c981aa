"""What Wireshark asks of the extcap before a capture, and what its answers mean: the
interfaces it lists, the options dialog (--extcap-config), and the mapping of the dialog's
options onto the `ptcap` command line. Imports nothing of the BPF layers, so Wireshark
starts fast.
"""
from __future__ import annotations

import argparse
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ptcap import __version__

# The tree (a checkout, or the root-owned copy install-wireshark.sh makes in /opt/ptcap)
TREE = Path(__file__).resolve().parents[2]
# the dialog's help button opens this page, installed with the extcap
HELP_URL = (TREE / "extcap" / "help.html").as_uri()


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


def split_list(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _numbers(text: str, what: str) -> list[str]:
    items = split_list(text)
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
    for name in split_list(opts.interfaces) or ["any"]:
        argv += ["-i", name]
    if opts.backend:
        argv += ["--backend", opts.backend]
    argv += snaplen
    if opts.direction:
        argv += ["-Q", opts.direction]
    for ns in split_list(opts.netns):
        argv += ["--netns", ns]
    for pid in _numbers(opts.pid, "process ID"):
        argv += ["--pid", pid]
    if opts.follow_forks:
        argv.append("-f")
    for name in split_list(opts.pname):
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

"""`ptcap backtrace --hook HOOK [-c N] EXPR`: count the kernel stacks of matching packets and
print each distinct stack, symbolized, with its count at exit (Ctrl-C, SIGTERM or -c)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from ptcap.cli import arguments
from ptcap.cli.listing import list_hooks
from ptcap.cli.report import plural
from ptcap.cli.signals import stop_on_signals
from ptcap.errors import PtcapError
from ptcap.filter import compiler as pcapfilter
from ptcap.kernel import hooks as hookmod
from ptcap.kernel.session import CaptureConfig, Session

POLL_SECONDS = 0.05


def backtrace(args: argparse.Namespace, report: TextIO | None = None) -> int:
    report = report or sys.stderr
    if args.list_hooks:
        return list_hooks()
    if not args.hooks:
        raise PtcapError("backtrace needs --hook (e.g. ptcap backtrace --hook kfree_skb 'icmp')")
    if args.write:
        raise PtcapError("backtrace prints stacks; -w does not apply")
    hooks = arguments.hooks(args)
    limit = arguments.count(args)
    expression = pcapfilter.expression_from_args(args)
    config = CaptureConfig(expression=expression, hooks=hooks, hook_rate=args.hook_rate, backtrace=True,
                           ring_kib=1024)
    stop = stop_on_signals()
    session = Session(config)
    stacks: list = []
    try:
        session.open()
        report.write(f"listening on {', '.join(hooks)}, counting kernel stacks; Ctrl-C prints them\n")
        report.flush()
        while not stop.requested:
            time.sleep(POLL_SECONDS)
            if limit is not None and session.all_counters()[0] >= limit:
                break
        session.detach()
        stacks = session.hook_capture.stacks()
        received, lost, limited = session.all_counters()[:3]
    finally:
        session.close()
    symbols = hookmod.HookNames().symbols
    out = []
    for n, addrs in stacks:
        out.append(f"{plural(n, 'packet')}:\n")
        out.extend(f"    {name}\n" for name in hookmod.symbolize_stack(addrs, symbols))
        out.append("\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    report.write(f"{received} packet{'s' if received != 1 else ''} matched, "
                 f"{plural(len(stacks), 'distinct stack')}"
                 f"{f', {lost} stacks lost' if lost else ''}"
                 f"{f', {limited} over --hook-rate' if limited else ''}\n")
    return 0

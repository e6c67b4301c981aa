"""No -w (or --print): tcpdump's lines, with the process after the interface name."""
from __future__ import annotations

import argparse
import sys

from ptcap.kernel.interfaces import NetInterface
from ptcap.pipeline.packet import Batch


class PrintSink:
    def __init__(self, args: argparse.Namespace) -> None:
        from ptcap.printer import Printer, PrintOptions
        self._printer = Printer(PrintOptions.from_args(args), sys.stdout)
        self.finished = False

    def add_interface(self, iface_id: int, iface: NetInterface) -> None:
        pass

    def write(self, packets: Batch) -> None:
        print_packet = self._printer.print_packet
        for packet in packets:
            print_packet(packet)

    def tick(self, now: float) -> None:
        sys.stdout.flush()

    def close(self) -> None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass

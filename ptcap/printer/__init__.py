"""tcpdump-format printing: one printer per protocol sharing one options object, and the
line assembly (time, packet number, process context, dumps) around them.

    printer = Printer(PrintOptions.from_args(args), sys.stdout)
    for pkt in packets:
        printer.print_packet(pkt)
"""
from __future__ import annotations

import struct
from typing import TextIO

from ptcap.pipeline.packet import Direction, Packet
from .ether import ether_if_print
from .hexdump import ascii_text, hex_ascii_lines, hex_lines
from .loopback import loop_if_print, null_if_print
from .names import Names
from .options import PrintOptions
from .process import inline_prefix, inline_suffix, verbose_blocks
from .raw import ipv4_if_print, ipv6_if_print, ppp_if_print, raw_if_print
from .sll import sll2_if_print, sll_if_print
from .timestamps import Clock
from .truncation import Truncated

__all__ = ["PrintOptions", "Printer", "LINK_PRINTERS"]

LINK_PRINTERS = {
    0: null_if_print, 1: ether_if_print, 9: ppp_if_print, 12: raw_if_print, 14: raw_if_print,
    101: raw_if_print, 108: loop_if_print, 113: sll_if_print, 228: ipv4_if_print,
    229: ipv6_if_print, 276: sll2_if_print,
}
_DIRECTIONS = {Direction.IN: "In", Direction.OUT: "Out"}


class Printer:
    """Formats packets as tcpdump 4.99 does, plus ptcpdump's process context.

    The protocol printers receive this object as `nd` (tcpdump's netdissect_options): the
    short flag attributes (v, q, e, n, S) and the output list are read on every packet.
    """

    def __init__(self, options: PrintOptions, out: TextIO, strict: bool = False) -> None:
        self.options = options
        self.stream = out
        self.strict = strict  # re-raise non-truncation errors (tests), instead of marking the line
        self.v = options.verbose
        self.q = options.quiet
        self.e = options.link_header
        self.n = options.numeric
        self.S = options.absolute_seq
        self.suppress_default = bool(options.hex or options.hex_ascii or options.ascii)
        self.names = Names(options.numeric)
        self.clock = Clock(options.tstamp, options.nano)
        self.tcp_seq: dict = {}
        self.endpoint_cache: dict = {}  # "addr.port > addr.port: " per TCP 4-tuple
        self.out: list[str] = []
        self.proto = ""
        self.ll_hdr_len = 0  # link header length, known even when a deeper printer truncates
        self.count = 0
        self.errors = 0  # packets whose printer failed on something other than truncation

    def format_packet(self, pkt: Packet) -> str:
        opts = self.options
        self.count += 1
        out = self.out = []
        if opts.number:
            out.append(f"{self.count:5d}  ")
        clock = self.clock
        if clock.mode == 0 and not clock.nano:
            # the default stamp, inlined: this runs for every packet
            ts = pkt.ts_ns
            sec = ts // 1_000_000_000
            if sec != clock._sec:
                clock.stamp(ts)
            out.append(f"{clock._prefix}.{ts % 1_000_000_000 // 1000:06d} ")
        else:
            out.append(clock.stamp(pkt.ts_ns))
        ctx = pkt.context
        parts = opts.context
        direction = pkt.direction
        if (direction and (parts or opts.live)) or (ctx is not None and parts):
            if pkt.ifname:
                out.append(f"{pkt.ifname} ")
            if not self.v:
                out.append(inline_prefix(ctx, parts))
            if direction in _DIRECTIONS:
                out.append(f"{_DIRECTIONS[direction]} ")
        data = pkt.data
        if type(data) is not bytes:
            data = bytes(data)
        printer = LINK_PRINTERS.get(pkt.linktype)
        hdrlen = 0
        if printer is None:
            # a link type we cannot decode: tcpdump's generic form is the raw bytes
            if not self.suppress_default:
                out.append(hex_ascii_lines(data))
        else:
            self.proto = ""
            self.ll_hdr_len = 0
            try:
                hdrlen = printer(self, data, pkt.orig_len)
            except Truncated:
                # tcpdump's "goto trunc": the printers return normally, the link header is known
                out.append(f" [|{self.proto}]")
                hdrlen = self.ll_hdr_len
            except (IndexError, struct.error):
                # a failed GET_ macro: tcpdump longjmps out and dumps from the first byte
                out.append(f" [|{self.proto}]")
                hdrlen = 0
            except Exception:
                self.errors += 1
                if self.strict:
                    raise
                out.append(f" [|{self.proto}]")
                hdrlen = self.ll_hdr_len
        if ctx is not None and parts:
            out.append(verbose_blocks(ctx, parts) if self.v else inline_suffix(ctx, parts))
        if self.suppress_default:
            self._dump(out, data, hdrlen)
        out.append("\n")
        return "".join(out)

    def _dump(self, out: list[str], data: bytes, hdrlen: int) -> None:
        """-x/-xx, -X/-XX, -A/-AA: the doubled flag includes the link header."""
        opts = self.options
        caplen = len(data)
        if opts.hex_ascii:
            if opts.hex_ascii > 1:
                out.append(hex_ascii_lines(data))
            elif caplen > hdrlen:
                out.append(hex_ascii_lines(data[hdrlen:]))
        elif opts.hex:
            if opts.hex > 1:
                out.append(hex_lines(data))
            elif caplen > hdrlen:
                out.append(hex_lines(data[hdrlen:]))
        elif opts.ascii:
            if opts.ascii > 1:
                out.append(ascii_text(data))
            elif caplen > hdrlen:
                out.append(ascii_text(data[hdrlen:]))

    def print_packet(self, pkt: Packet) -> None:
        self.stream.write(self.format_packet(pkt))

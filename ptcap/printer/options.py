"""The one options object every protocol printer reads (tcpdump's netdissect_options)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from ptcap.meta.context import Part


@dataclass(slots=True)
class PrintOptions:
    numeric: int = 0          # -n: no host or port names
    verbose: int = 0          # -v, -vv, -vvv
    quiet: bool = False       # -q
    link_header: bool = False  # -e
    hex: int = 0              # -x, -xx
    hex_ascii: int = 0        # -X, -XX
    ascii: int = 0            # -A, -AA
    tstamp: int = 0           # -t … -ttttt
    number: bool = False      # -#
    absolute_seq: bool = False  # -S
    nano: bool = False        # --nano
    context: Part = Part.ALL  # --context
    live: bool = False        # packets come from a live capture (interface and direction known)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PrintOptions":
        text = getattr(args, "context", None)
        try:
            parts = Part.parse(text) if text is not None else Part.ALL
        except ValueError as e:
            from ptcap.errors import PtcapError
            raise PtcapError(str(e)) from None
        return cls(
            numeric=getattr(args, "numeric", 0) or 0,
            verbose=getattr(args, "verbose", 0) or 0,
            quiet=bool(getattr(args, "quiet", False)),
            link_header=bool(getattr(args, "link_header", False)),
            hex=getattr(args, "hex", 0) or 0,
            hex_ascii=getattr(args, "hex_ascii", 0) or 0,
            ascii=getattr(args, "ascii", 0) or 0,
            tstamp=getattr(args, "tstamp", 0) or 0,
            number=bool(getattr(args, "number", False)),
            absolute_seq=bool(getattr(args, "absolute_seq", False)),
            nano=getattr(args, "ts_precision", "micro") == "nano",
            context=parts,
            live=getattr(args, "read", None) is None,
        )

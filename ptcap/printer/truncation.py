"""The one truncation mark: a printer that runs out of captured bytes ends the line with ' [|proto]'."""
from __future__ import annotations

import struct


class Truncated(Exception):
    """Raised when a printer needs bytes past the end of what was captured."""


# Reading past the captured bytes surfaces as one of these; all mean "truncated".
TRUNCATION_ERRORS = (Truncated, IndexError, struct.error)


def need(buf, off: int, n: int) -> None:
    """Raise Truncated unless buf holds n bytes at off (slices don't raise by themselves)."""
    if off + n > len(buf):
        raise Truncated

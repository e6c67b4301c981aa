"""Where a capture's own messages go: the stream its front end gives it (stderr for the
CLI, the log for the extcap), never a swapped sys.stderr."""
from __future__ import annotations

import logging
from typing import TextIO


def log_to(report: TextIO) -> None:
    """Resolvers say once, at info level, what they cannot reach: as 'ptcap: ...' lines on
    `report` (unless the front end already decided where the log goes)."""
    log = logging.getLogger("ptcap")
    if not log.handlers:
        handler = logging.StreamHandler(report)
        handler.setFormatter(logging.Formatter("ptcap: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"

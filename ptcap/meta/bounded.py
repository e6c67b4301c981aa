"""Caches that a long capture on a busy host cannot grow without end."""
from __future__ import annotations


def keep_newest(known: dict, limit: int) -> None:
    """Keep at most `limit` entries, dropping the oldest (dicts keep insertion order)."""
    while len(known) > limit:
        del known[next(iter(known))]

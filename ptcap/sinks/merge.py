"""ptcap's fields in tcpdump's text: the interface, process and direction after the time stamp,
the suffixes at the end of the packet's first line, the -v blocks after its lines."""
from __future__ import annotations

from ptcap.sinks.tcpdump_child import PrintFlags


def merge(text: bytes, pre: bytes, suf: bytes, after: bytes, words: int, oneline: bool = False) -> bytes:
    """A packet's text with ptcap's fields: `pre` after the time stamp (`words` words), `suf`
    at the end of the first line, `after` after the last; with `oneline` (--oneline) all on
    one line."""
    if pre:
        i = 0
        n = len(text)
        while i < n and text[i] == 32:
            i += 1
        for _ in range(words):
            j = text.find(b" ", i)
            if j < 0:
                break
            i = j + 1
        text = text[:i] + pre + text[i:]
    if suf:
        nl = text.find(b"\n")
        text = text[:nl] + suf + text[nl:] if nl >= 0 else text + suf
    if after:
        text = text + after
    return one_line(text) if oneline else text


def one_line(text: bytes) -> bytes:
    """--oneline, as ptcpdump: a packet's lines (tcpdump's, and ptcap's -v blocks) stripped and
    joined by ', '; hex dump lines (-x, -X) stay on their own lines after it."""
    lines = text.split(b"\n")
    joined = [line.strip() for line in lines if line.strip() and not line.startswith(b"\t0x")]
    dump = [line for line in lines if line.startswith(b"\t0x")]
    return b"\n".join([b", ".join(joined)] + dump) + b"\n"


def merge_lines(lines: list[bytes], adds: list[tuple[bytes, bytes, bytes]], words: int,
                oneline: bool = False) -> bytes:
    """merge() of packets of one line each (without their newlines), joined."""
    if oneline:
        return b"".join(merge(line + b"\n", pre, suf, after, words, True) for line, (pre, suf, after) in zip(lines, adds))
    first = adds[0] if adds else None
    if first is not None and not first[2] and words == 1 and adds.count(first) == len(adds) and \
            min(lines)[:1] not in (b"", b" "):     # no line empty or starting with a space
        pre, suf, _after = first      # one process for the group (the usual): no loop in Python
        end = suf + b"\n"
        if pre:                       # after the time stamp: the line's first space
            at = b" " + pre
            lines = [line.replace(b" ", at, 1) for line in lines]
        return end.join(lines) + end
    parts: list[bytes] = []
    put = parts.append
    for line, (pre, suf, after) in zip(lines, adds):
        if pre and words == 1 and line[:1] != b" ":
            sp = line.find(b" ") + 1
            if sp:
                put(line[:sp])
                put(pre)
                put(line[sp:])
            else:
                put(pre)
                put(line)
        elif pre:
            put(merge(line, pre, b"", b"", words))
        else:
            put(line)
        put(suf)
        put(b"\n")
        if after:
            put(after)
    return b"".join(parts)


def per_packet(runs: list) -> list:
    """(fields, n) runs as one fields per packet."""
    if len(runs) == 1:
        return [runs[0][0]] * runs[0][1]
    out: list = []
    for fields, n in runs:
        out += [fields] * n
    return out


class Span:
    """The texts of `count` packets in a row, printed as one."""

    __slots__ = ("text", "count")

    def __init__(self, text: bytes, count: int) -> None:
        self.text = text
        self.count = count


def ts_words(flags: PrintFlags) -> int:
    """How many words tcpdump's time stamp is (-t: none, -tttt: date and time)."""
    return 0 if flags.tstamp == 1 else (2 if flags.tstamp == 4 else 1)

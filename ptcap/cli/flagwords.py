"""Bad flags said in tcpdump's words: getopt's for unknown options and missing arguments,
tcpdump's own for numbers it refuses (argparse would say 'invalid int value: ...')."""
from __future__ import annotations

import re

from ptcap.errors import PtcapError


def _strtol(text: str) -> int | None:
    """C's strtol(text, &end, 0) with the whole string used, as tcpdump parses -c and -s."""
    t = text.strip()
    sign, body = (-1, t[1:]) if t[:1] == "-" else (1, t[1:] if t[:1] == "+" else t)
    try:
        if body[:2].lower() == "0x":
            return sign * int(body[2:], 16)
        if len(body) > 1 and body[0] == "0":
            return sign * int(body[1:], 8)
        return sign * int(body, 10) if body.isdigit() else None
    except ValueError:
        return None


def _atoi(text: str) -> int:
    """C's atoi: the leading decimal number, 0 if none, as tcpdump parses -B, -W and -G."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def packet_count(text: str) -> int:
    value = int(text) if re.fullmatch(r"\s*[+-]?\d+", text) else None     # strtol base 10
    if value is None or value <= 0:
        raise PtcapError(f"invalid packet count {text}")
    return value


def snaplen(text: str) -> int:
    value = _strtol(text)
    if value is None or not 0 <= value <= 262144:
        raise PtcapError(f"invalid snaplen {text} (must be >= 0 and <= 262144)")
    return value


def buffer_size(text: str) -> int:
    value = _atoi(text)
    if value <= 0:
        raise PtcapError(f"invalid packet buffer size {text}")
    return value


def file_count(text: str) -> int:
    value = _atoi(text)
    if value <= 0:
        raise PtcapError(f"invalid number of output files {text}")
    return value


def seconds(text: str) -> int:
    value = _atoi(text)
    if value < 0:
        raise PtcapError(f"invalid number of seconds {text}")
    return value


def direction(text: str) -> str:
    if text not in ("in", "out", "inout"):
        raise PtcapError(f"unknown capture direction `{text}'")
    return text


def getopt_words(message: str, short_flags: set[str]) -> str:
    """argparse's complaint about the command line, as getopt_long tells it to tcpdump's users."""
    m = re.match(r"unrecognized arguments: (\S+)", message)
    if m:
        word = m.group(1)
        if word.startswith("--"):
            return f"unrecognized option '{word}'"
        if word.startswith("-") and len(word) > 1:
            letters = word[1:]
            bad = next((c for c in letters if c not in short_flags), letters[0])
            return f"invalid option -- '{bad}'"
        return f"{message} (see ptcap --help)"
    m = re.match(r"argument (\S+): expected one argument", message)
    if m:
        names = m.group(1).split("/")
        short = next((n for n in names if len(n) == 2), None)
        if short is not None:
            return f"option requires an argument -- '{short[1]}'"
        return f"option '{names[0]}' requires an argument"
    m = re.match(r"argument (\S+): ignored explicit argument '(.*)'", message)
    if m:
        names, rest = m.group(1).split("/"), m.group(2)
        if len(names[0]) == 2 and rest:       # '-ng': the letters after a flag that takes none
            bad = next((c for c in rest if c not in short_flags), rest[0])
            return f"invalid option -- '{bad}'"
        return f"option '{names[-1]}' doesn't allow an argument"
    return f"{message} (see ptcap --help)"

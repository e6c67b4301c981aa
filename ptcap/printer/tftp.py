"""TFTP on port 69 (print-tftp.c)."""
from __future__ import annotations

from .text import safe_chars
from .truncation import Truncated

_OPS = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}
_ERRS = {0: "EUNDEF", 1: "ENOTFOUND", 2: "EACCESS", 3: "ENOSPACE", 4: "EBADOP", 5: "EBADID",
         6: "EEXISTS", 7: "ENOUSER"}


def _ztn(nd, b: bytes, cp: int, length: int) -> int:
    """Print a NUL-terminated string; bytes used (with the NUL), 0 when it does not end in time."""
    end = min(cp + length, len(b))
    nul = bytes(b[cp:end]).find(b"\0")
    if nul < 0:
        nd.out.append(safe_chars(bytes(b[cp:end])))
        return 0
    nd.out.append(safe_chars(bytes(b[cp:cp + nul])))
    return nul + 1


def tftp_print(nd, b: bytes, cp: int, length: int) -> None:
    nd.proto = "tftp"
    out = nd.out
    out.append(f"TFTP, length {length}")
    opcode = (b[cp] << 8) | b[cp + 1]
    out.append(f", {_OPS.get(opcode, f'tftp-#{opcode}')}")
    cp += 2
    length -= 2
    if opcode in (1, 2):
        if length <= 0:
            return
        out.append(' "')
        used = _ztn(nd, b, cp, length)
        out.append('"')
        if not used:
            raise Truncated
        cp += used
        length -= used
        if length == 0:
            return
        out.append(" ")
        used = _ztn(nd, b, cp, length)
        if not used:
            raise Truncated
        cp += used
        length -= used
    if opcode in (1, 2, 6):
        while length > 0:
            if b[cp] != 0:
                out.append(" ")
            used = _ztn(nd, b, cp, length)
            if not used:
                raise Truncated
            cp += used
            length -= used
    elif opcode in (3, 4):
        if length < 2:
            raise Truncated
        out.append(f" block {(b[cp] << 8) | b[cp + 1]}")
    elif opcode == 5:
        if length < 2:
            raise Truncated
        code = (b[cp] << 8) | b[cp + 1]
        out.append(f" {_ERRS.get(code, f'tftp-err-#{code} ' + chr(34))}")
        cp += 2
        length -= 2
        if length == 0:
            raise Truncated
        out.append(' "')
        used = _ztn(nd, b, cp, length)
        out.append('"')
        if not used:
            raise Truncated
    elif opcode not in (1, 2, 6):
        out.append(f"(unknown #{opcode})")

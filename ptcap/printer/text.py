"""Text protocols (tcpdump's txtproto_print): HTTP, FTP, SMTP first lines, SSH banners, RST text."""
from __future__ import annotations

import re

from .truncation import Truncated

_HTTP_CMDS = ("GET", "PUT", "COPY", "DELETE", "HEAD", "LOCK", "MKCOL", "MOVE", "OPTIONS",
              "PROPFIND", "PROPPATCH", "POST", "TRACE", "UNLOCK")


def _char(c: int) -> str:
    prefix = ""
    if c >= 0x80:
        c &= 0x7F
        prefix = "M-"
    if not 0x20 <= c < 0x7F:
        return f"{prefix}^{chr(c ^ 0x40)}"
    return prefix + chr(c)


_CHARS = [_char(c) for c in range(256)]


def safe_chars(data: bytes) -> str:
    """Bytes as tcpdump's nd_printn shows them: printable ASCII as is, others as ^X or M-x."""
    return "".join(_CHARS[c] for c in data)


def _is_print(c: int) -> bool:
    return 0x20 <= c < 0x7F


_TOKEN = re.compile(rb"[\x21-\x7e]{0,128}")
_BLANKS = re.compile(rb" *")


def _fetch_token(b: bytes, cp: int, idx: int, length: int) -> tuple[int, str]:
    """(index after the token and its trailing blanks, token); (0, '') when there is none.

    A token is printable ASCII up to a space, at most 127 bytes, all of it captured."""
    start = cp + idx
    limit = cp + length
    m = _TOKEN.match(b, start, min(limit, len(b), start + 128))
    j = m.end()
    if j - start >= 128:
        return 0, ""
    if j < limit:
        if j >= len(b) or b[j] != 0x20:
            return 0, ""  # not captured, or a byte that is not printable
    if j == start:
        return 0, ""
    token = bytes(b[start:j]).decode("ascii")
    j = _BLANKS.match(b, j, min(limit, len(b))).end()
    return j - cp, token


def _txt_line(nd, prefix: str, b: bytes, cp: int, idx: int, length: int) -> int:
    """Print one line; the index after its end of line, or 0 when it is not a clean text line."""
    start = idx
    while idx < length:
        c = b[cp + idx]  # IndexError past the captured bytes: truncated
        if c == 0x0A:
            linelen = idx - start
            idx += 1
            break
        if c == 0x0D:
            if idx + 1 >= length:
                return 0
            if b[cp + idx + 1] == 0x0A:
                linelen = idx - start
                idx += 2
                break
            return 0
        if not _is_print(c) and c != 0x09:
            return 0
        idx += 1
    else:
        nd.out.append(prefix + bytes(b[cp + start:cp + idx]).decode("latin-1"))
        raise Truncated
    nd.out.append(prefix + bytes(b[cp + start:cp + start + linelen]).decode("latin-1"))
    return idx


def txtproto_print(nd, b: bytes, cp: int, length: int, proto: str, cmds, resp_second: bool) -> None:
    nd.proto = proto
    print_this = False
    if cmds is not None:
        idx, tok = _fetch_token(b, cp, 0, length)
        if idx:
            if tok.upper() in cmds:
                print_this = True
            if resp_second:
                idx, tok = _fetch_token(b, cp, idx, length)
            if idx and len(tok) == 3 and tok.isdigit() and tok.isascii():
                print_this = True
    else:
        print_this = True
    nd.out.append(proto.upper())
    if print_this:
        if nd.v:
            nd.out.append(f", length: {length}")
            idx = 0
            while idx < length:
                idx = _txt_line(nd, "\n\t", b, cp, idx, length)
                if idx == 0:
                    break
        else:
            _txt_line(nd, ": ", b, cp, 0, length)


def http_print(nd, b: bytes, cp: int, length: int) -> None:
    txtproto_print(nd, b, cp, length, "http", _HTTP_CMDS, True)


def ssh_print(nd, b: bytes, cp: int, length: int) -> None:
    nd.proto = "ssh"
    for i, ch in enumerate(b"SSH-"):
        if b[cp + i] != ch:
            return
    idx = 4
    while idx < length:
        c = b[cp + idx]
        if c == 0x0A:
            end = idx - 1 if b[cp + idx - 1] == 0x0D else idx
            nd.out.append(": SSH: " + safe_chars(bytes(b[cp:cp + end])))
            return
        idx += 1

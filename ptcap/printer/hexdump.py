"""-x, -X and -A dumps, byte for byte as tcpdump prints them."""
from __future__ import annotations

_ASCII = "".join(chr(c) if 0x21 <= c < 0x7F else "." for c in range(256))  # ND_ASCII_ISGRAPH
_ASCII_TABLE = str.maketrans({i: _ASCII[i] for i in range(256)})
_LATIN = bytes(range(256)).decode("latin-1")


def hex_lines(data: bytes, indent: str = "\n\t", offset: int = 0) -> str:
    """tcpdump's hex_print: 16 bytes per line as 8 big-endian 16-bit words."""
    out = []
    h = data.hex()
    n = len(data)
    for line in range(0, n, 16):
        chunk = h[2 * line:2 * min(line + 16, n)]
        words = " ".join(chunk[i:i + 4] for i in range(0, len(chunk), 4))
        out.append(f"{indent}0x{offset + line:04x}:  {words}")
    return "".join(out)


def hex_ascii_lines(data: bytes, indent: str = "\n\t", offset: int = 0) -> str:
    """tcpdump's hex_and_ascii_print: the hex words padded to 40 columns, then the printable bytes."""
    out = []
    h = data.hex()
    n = len(data)
    for line in range(0, n, 16):
        end = min(line + 16, n)
        chunk = h[2 * line:2 * end]
        words = "".join(" " + chunk[i:i + 4] for i in range(0, len(chunk), 4))
        text = data[line:end].decode("latin-1").translate(_ASCII_TABLE)
        out.append(f"{indent}0x{offset + line:04x}: {words:<40}  {text}")
    return "".join(out)


def ascii_text(data: bytes) -> str:
    """tcpdump's ascii_print (-A): a newline, then printable bytes, tabs, spaces and newlines as is,
    other bytes as '.', and a CR dropped when a LF follows it."""
    s = data.decode("latin-1")
    s = s.replace("\r\n", "\n")
    return "\n" + s.translate(_A_TABLE)


_A_TABLE = str.maketrans({i: (chr(i) if (0x21 <= i < 0x7F or i in (0x09, 0x20, 0x0A)) else ".")
                          for i in range(256)})

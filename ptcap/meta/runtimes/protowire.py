"""The protobuf wire format, just enough for the few runtime calls ptcap makes (containerd).

Messages are built and read field by field (tag = field number << 3 | wire type), so no
generated code, and no protobuf runtime version to match, is needed.
"""
from __future__ import annotations

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(field: int, value: int) -> bytes:
    """An integer, bool or enum field."""
    return _varint(field << 3 | VARINT) + _varint(value)


def string(field: int, value: str | bytes) -> bytes:
    """A length-delimited field (string, bytes or an embedded message)."""
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | BYTES) + _varint(len(data)) + data


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Every (field number, value) of a message, in order; ints for varints and fixed
    widths, bytes for length-delimited fields."""
    out = []
    i, n = 0, len(data)
    while i < n:
        key, i = _read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            value, i = _read_varint(data, i)
        elif wire == BYTES:
            size, i = _read_varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == FIXED64:
            value, i = int.from_bytes(data[i:i + 8], "little"), i + 8
        elif wire == FIXED32:
            value, i = int.from_bytes(data[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not supported")
        out.append((field, value))
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def first(data: bytes, field: int, default=None):
    for f, v in fields(data):
        if f == field:
            return v
    return default


def text(data: bytes, field: int) -> str:
    v = first(data, field, b"")
    return v.decode(errors="replace") if isinstance(v, bytes) else ""


def string_map(data: bytes, field: int) -> dict[str, str]:
    """A map<string, string> field: repeated entries of {1: key, 2: value}."""
    out = {}
    for f, entry in fields(data):
        if f == field and isinstance(entry, bytes):
            out[text(entry, 1)] = text(entry, 2)
    return out

"""Turning ring-buffer records into packet tuples (the hot path: keep it tight).

A packet tuple is (ts_ns, ifindex, direction, orig_len, data, owner): the owner is the raw
40-byte owner record, which the metadata join (ptcap.processes) turns into a context and
the sinks use as their cache key.
"""
from __future__ import annotations

import struct

PACKET = struct.Struct("<HBBIQII")     # struct ptcap_packet up to the owner (bpf/ptcap.h)
OWNER_AT, OWNER_END, DATA_AT = 24, 64, 64
EV_PACKET, EV_EXEC = 1, 2
EXEC = struct.Struct("<HHIIIQ256s1024s")  # struct ptcap_exec


def decode(buf, spans: list[int], clock_offset: int, out: list, on_exec=None) -> list:
    """Append a tuple per packet record in spans ([offset, length, ...]) to out; hand
    exec records, in order, to on_exec(pid, ppid, start_ns, filename, argv)."""
    unpack = PACKET.unpack_from
    append = out.append
    for i in range(0, len(spans), 2):
        off = spans[i]
        kind, direction, _flags, ifindex, ts, length, caplen = unpack(buf, off)
        if kind != EV_PACKET:
            if kind == EV_EXEC and on_exec is not None:
                _, _, pid, ppid, args_len, start, filename, args = EXEC.unpack_from(buf, off)
                argv = [a.decode(errors="replace") for a in args[:args_len].split(b"\0") if a]
                on_exec(pid, ppid, start, filename.split(b"\0", 1)[0].decode(errors="replace"), argv)
            continue
        data_at = off + DATA_AT
        append((ts + clock_offset, ifindex, direction, length,
                buf[data_at:data_at + caplen], buf[off + OWNER_AT:off + OWNER_END]))
    return out

"""Reading the kernel's records (ptcap/kernel/records.py, bpf/ptcap.h) out of the ring: the hot path.

A packet record's owner, drop location and reason (`KEY_AT:KEY_END`) key everything derived
from who sent it and where the kernel saw it (its direction, at DIR_AT, selects among a key's
variants); from EPB_AT on, the record is a ready pcapng Enhanced Packet Block body.
"""
from __future__ import annotations

import struct

from ptcap.kernel import records
from ptcap.kernel.records import (CAPLEN_AT, DIR_AT, EPB_AT, HEADER_LEN, KEY_AT, KEY_END, KIND_AT,
                                  OWNER_LEN, EventKind)

KIND = struct.Struct("<H")
EV_PACKET, EV_EXEC, EV_FORK, EV_EXIT = EventKind.PACKET, EventKind.EXEC, EventKind.FORK, EventKind.EXIT
# the packet header with owner and hook info as bytes (what decode hands out)
PACKET = struct.Struct(f"<IHBB{OWNER_LEN}s12sI{OWNER_LEN}s4xIIIII")
INFO_LEN = 12                                # location, reason (kernel hooks)
MARKS = struct.Struct("<I")                  # enum ptcap_marks
PEER_AT = OWNER_LEN + INFO_LEN + MARKS.size  # the peer's offset in a key
assert KEY_AT + PEER_AT == records.PACKET.offset["peer"]
# enum ptcap_marks
MARK_LAST_OWNER, MARK_PEER_LAST_OWNER, MARK_PEER_RECEIVER, MARK_PEER_SENDER = 1, 2, 4, 8
MARK_CONNTRACK, MARK_PEER_CONNTRACK = 16, 32


def split_key(key: bytes) -> tuple[bytes, bytes, int, bytes]:
    """A record key's (owner, hook info, marks, peer)."""
    return (key[:OWNER_LEN], key[OWNER_LEN:OWNER_LEN + INFO_LEN],
            MARKS.unpack_from(key, OWNER_LEN + INFO_LEN)[0], key[PEER_AT:PEER_AT + OWNER_LEN])
assert PACKET.size == records.PACKET.size
EXEC = records.EXEC.struct
FORK = records.FORK.struct
# an exec record's fixed fields (pid, kind, ppid, args_len, start_ns), its strings read in place
EXEC_HEAD = struct.Struct("<IH2xIIQ")
FILENAME_AT, ARGS_AT = records.EXEC.offset["filename"], records.EXEC.offset["args"]
FILENAME_LEN, ARGS_LEN = ARGS_AT - FILENAME_AT, EXEC.size - ARGS_AT
assert EXEC_HEAD.size == FILENAME_AT

__all__ = ["CAPLEN_AT", "DIR_AT", "EPB_AT", "HEADER_LEN", "KEY_AT", "KEY_END", "OWNER_LEN", "PEER_AT",
           "decode", "split", "split_key"]


def decode(buf, offsets: list[int], out: list) -> list:
    """Append a packet tuple (ts_ns, iface_id, direction, orig_len, data, owner, hook info)
    per packet record at `offsets` to out (iface_id: the session's interface number; hook
    info: the 12 bytes of location + reason, zero outside kernel hooks)."""
    unpack = PACKET.unpack_from
    append = out.append
    for off in offsets:
        _ifindex, _kind, _hook, direction, owner, info, _marks, _peer, iface_id, hi, lo, caplen, length = \
            unpack(buf, off)
        data_at = off + HEADER_LEN
        append(((hi << 32) | lo, iface_id, direction, length, buf[data_at:data_at + caplen], owner, info))
    return out


def split(buf, offsets: list[int], processes=None) -> list[int]:
    """Keep the packet records' offsets; hand process records, in order, to `processes`:
    its learn_exec(pid, ppid, start_ns, filename, argv), learn_fork(pid, ppid, start_ns) and
    learn_exit(pid, start_ns)."""
    kind_of = KIND.unpack_from
    packets = []
    keep = packets.append
    for off in offsets:
        kind = kind_of(buf, off + KIND_AT)[0]
        if kind == EV_PACKET:
            keep(off)
        elif processes is None:
            continue
        elif kind == EV_EXEC:
            pid, _, ppid, args_len, start = EXEC_HEAD.unpack_from(buf, off)
            name_at = off + FILENAME_AT
            name_end = buf.find(b"\0", name_at, name_at + FILENAME_LEN)
            filename = buf[name_at:name_end if name_end >= 0 else name_at + FILENAME_LEN]
            args_at = off + ARGS_AT
            args = buf[args_at:args_at + min(args_len, ARGS_LEN)]
            argv = args.decode(errors="replace").split("\0")
            processes.learn_exec(pid, ppid, start, filename.decode(errors="replace"), [a for a in argv if a])
        elif kind == EV_FORK:
            pid, _, ppid, start = FORK.unpack_from(buf, off)
            processes.learn_fork(pid, ppid, start)
        elif kind == EV_EXIT:
            pid, _, _ppid, start = FORK.unpack_from(buf, off)
            processes.learn_exit(pid, start)
    return packets

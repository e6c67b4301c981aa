"""Reading the kernel's records (bpf/ptcap.h) out of the ring buffer: the hot path.

Every record has its kind at byte 4. A packet record is:

    0  u32 ifindex   4 u16 kind   6 u8 hook   7 u8 dir   8 owner (72 bytes)
    80 u64 location  88 u32 reason   (kernel hooks: where and why a packet was dropped)
    92 EPB body: u32 iface_id, u32 ts_hi, u32 ts_lo, u32 caplen, u32 len, then the bytes

so `record[8:92]` (owner, location, reason) keys everything derived from who sent it and
where the kernel saw it (the direction, at 7, selects among a key's variants), and `record[92:112 + caplen]` is a ready pcapng
Enhanced Packet Block body.
"""
from __future__ import annotations

import struct

KIND = struct.Struct("<H")
KIND_AT = 4
EV_PACKET, EV_EXEC, EV_FORK, EV_EXIT = 1, 2, 3, 4
PACKET = struct.Struct("<IHBB72s12sIIIII")  # whole header, owner and hook info as bytes
HEADER_LEN = PACKET.size                     # 112
DIR_AT = 7
KEY_AT, KEY_END = 8, 92                      # owner, location, reason
OWNER_LEN = 72                               # a key is the owner record, then the hook info
EPB_AT = 92
CAPLEN_AT = 104
EXEC = struct.Struct("<IHHIIQ256s1024s")     # struct ptcap_exec
FORK = struct.Struct("<IHHI4xQ")             # struct ptcap_fork


def decode(buf, offsets: list[int], out: list) -> list:
    """Append a packet tuple (ts_ns, iface_id, direction, orig_len, data, owner, hook info)
    per packet record at `offsets` to out (iface_id: the session's interface number; hook
    info: the 12 bytes of location + reason, zero outside kernel hooks)."""
    unpack = PACKET.unpack_from
    append = out.append
    for off in offsets:
        _ifindex, _kind, _hook, direction, owner, info, iface_id, hi, lo, caplen, length = unpack(buf, off)
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
            pid, _, _, ppid, args_len, start, filename, args = EXEC.unpack_from(buf, off)
            argv = [a.decode(errors="replace") for a in args[:args_len].split(b"\0") if a]
            processes.learn_exec(pid, ppid, start, filename.split(b"\0", 1)[0].decode(errors="replace"),
                                 argv)
        elif kind == EV_FORK:
            pid, _, _, ppid, start = FORK.unpack_from(buf, off)
            processes.learn_fork(pid, ppid, start)
        elif kind == EV_EXIT:
            pid, _, _, _ppid, start = FORK.unpack_from(buf, off)
            processes.learn_exit(pid, start)
    return packets

"""Reading the kernel's records (bpf/ptcap.h) out of the ring buffer: the hot path.

Every record has its kind at byte 4. A packet record is:

    0  u32 ifindex   4 u16 kind   6 u8 hook   7 u8 dir   8 owner (72 bytes)
    80 u64 location  88 u32 reason   (kernel hooks: where and why a packet was dropped)
    92 u32 marks     96 peer (72 bytes: the other local end, loopback and veth)   168 pad
    172 EPB body: u32 iface_id, u32 ts_hi, u32 ts_lo, u32 caplen, u32 len, then the bytes

so `record[8:172]` (owner, location, reason, marks, peer) keys everything derived from who
sent and received it and where the kernel saw it (the direction, at 7, selects among a key's
variants), and `record[172:192 + caplen]` is a ready pcapng Enhanced Packet Block body.
"""
from __future__ import annotations

import struct

KIND = struct.Struct("<H")
KIND_AT = 4
EV_PACKET, EV_EXEC, EV_FORK, EV_EXIT = 1, 2, 3, 4
PACKET = struct.Struct("<IHBB72s12sI72s4xIIIII")  # whole header, owners and hook info as bytes
HEADER_LEN = PACKET.size                     # 192
DIR_AT = 7
KEY_AT, KEY_END = 8, 172                     # owner, location, reason, marks, peer, pad
OWNER_LEN = 72                               # a key is the owner record, then the rest
INFO_LEN = 12                                # location, reason (kernel hooks)
MARKS = struct.Struct("<I")                  # enum ptcap_marks
PEER_AT = OWNER_LEN + INFO_LEN + MARKS.size  # the peer's offset in a key
EPB_AT = 172
CAPLEN_AT = 184
EXEC = struct.Struct("<IHHIIQ256s1024s")     # struct ptcap_exec
FORK = struct.Struct("<IHHI4xQ")             # struct ptcap_fork

# enum ptcap_marks
MARK_LAST_OWNER, MARK_PEER_LAST_OWNER, MARK_PEER_RECEIVER, MARK_PEER_SENDER = 1, 2, 4, 8
MARK_CONNTRACK, MARK_PEER_CONNTRACK = 16, 32


def split_key(key: bytes) -> tuple[bytes, bytes, int, bytes]:
    """A record key's (owner, hook info, marks, peer)."""
    return (key[:OWNER_LEN], key[OWNER_LEN:OWNER_LEN + INFO_LEN],
            MARKS.unpack_from(key, OWNER_LEN + INFO_LEN)[0], key[PEER_AT:PEER_AT + OWNER_LEN])


def decode(buf, offsets: list[int], out: list) -> list:
    """Append a packet tuple (ts_ns, iface_id, direction, orig_len, data, owner, hook info,
    marks, peer) per packet record at `offsets` to out (iface_id: the session's interface
    number; hook info: the 12 bytes of location + reason, zero outside kernel hooks; peer:
    the other local end's owner record, zero when there is none)."""
    unpack = PACKET.unpack_from
    append = out.append
    for off in offsets:
        (_ifindex, _kind, _hook, direction, owner, info, marks, peer,
         iface_id, hi, lo, caplen, length) = unpack(buf, off)
        data_at = off + HEADER_LEN
        append(((hi << 32) | lo, iface_id, direction, length, buf[data_at:data_at + caplen], owner, info,
                marks, peer))
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

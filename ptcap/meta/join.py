"""The join stage: each packet record becomes one Packet with its context (who owns the
socket, and where and why the kernel dropped it), made once per record key and shared by
every sink."""
from __future__ import annotations

import dataclasses
import struct

from ptcap.kernel.hooks import NO_INFO, HookNames, unpack_info
from ptcap.kernel.interfaces import NetInterface
from ptcap.kernel.records import EPB_AT, HEADER_LEN, KEY_AT, KEY_END, OWNER_LEN, Direction
from ptcap.meta.context import ProcessContext
from ptcap.meta.processes import ProcessTable
from ptcap.pipeline.packet import Packet

# a packet record's direction, key (owner + hook info) and EPB fields
_RECORD = struct.Struct(f"<{KEY_AT - 1}xB{KEY_END - KEY_AT}sIIIII")
_DIRECTIONS = tuple(Direction(d) if d in Direction._value2member_map_ else Direction.UNKNOWN
                    for d in range(256))
_MISSING = object()


class Joiner:
    def __init__(self, table: ProcessTable, names: HookNames | None = None) -> None:
        self._table = table
        self.names = names or HookNames()
        self._contexts: dict[bytes, ProcessContext | None] = {}
        self._keys: dict[bytes, list[bytes]] = {}        # owner record → its keys
        self._ifaces: list[tuple[int, str, int]] = []   # by iface id: linktype, name, ifindex
        table.forgotten.append(self._forget)

    def add_interface(self, iface_id: int, iface: NetInterface) -> None:
        assert iface_id == len(self._ifaces), "interface ids out of step"
        self._ifaces.append((iface.linktype, iface.display_name, iface.ifindex))

    def context(self, key: bytes) -> ProcessContext | None:
        """The context of a record key: the owner's process, with the hook info's drop reason
        and location added (a hook record gets a context even with no owner: lines name it)."""
        ctx = self._contexts.get(key, _MISSING)
        if ctx is not _MISSING:
            return ctx
        owner, info = key[:OWNER_LEN], key[OWNER_LEN:]
        ctx = self._table.context(owner)
        if info != NO_INFO:
            location, reason = unpack_info(info)
            ctx = ProcessContext() if ctx is None else dataclasses.replace(ctx)
            if reason:
                ctx.drop_reason = self.names.reason(reason)
                ctx.drop_location = self.names.symbols.name(location)
        self._contexts[key] = ctx
        self._keys.setdefault(owner, []).append(key)
        return ctx

    def _forget(self, owner: bytes) -> None:
        """The table dropped an owner's context (exec, exit): its joins go too."""
        for key in self._keys.pop(owner, ()):
            self._contexts.pop(key, None)

    def packets(self, buf, offsets: list[int]) -> list[Packet]:
        """The packet records at `offsets` of a ring batch, joined (the hot path)."""
        unpack = _RECORD.unpack_from
        contexts = self._contexts
        context = self.context
        ifaces = self._ifaces
        directions = _DIRECTIONS
        out = []
        append = out.append
        for off in offsets:
            direction, key, iface_id, hi, lo, caplen, length = unpack(buf, off)
            ctx = contexts.get(key, _MISSING)
            if ctx is _MISSING:
                ctx = context(key)
            linktype, name, ifindex = ifaces[iface_id]
            data_at = off + HEADER_LEN
            append(Packet((hi << 32) | lo, buf[data_at:data_at + caplen], length, linktype, name,
                          directions[direction], ctx, ifindex, iface_id, buf[off + EPB_AT:data_at], key))
        return out

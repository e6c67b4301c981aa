"""The join stage: each packet record gets its one context (who owns the socket, where and
why the kernel dropped it), made once per record key and shared by every sink."""
from __future__ import annotations

import dataclasses

from ptcap.kernel.hooks import NO_INFO, HookNames, unpack_info
from ptcap.kernel.interfaces import NetInterface
from ptcap.kernel.records import OWNER_LEN
from ptcap.meta.context import ProcessContext
from ptcap.meta.processes import ProcessTable
from ptcap.pipeline.decoder import split_key
from ptcap.pipeline.packet import MISSING, Batch

_NO_PEER = bytes(OWNER_LEN)
MAX_KEYS = 1 << 16      # record keys joined at once: past it, start again (memory stays flat)


class Joiner:
    def __init__(self, table: ProcessTable, names: HookNames | None = None) -> None:
        self._table = table
        self.names = names or HookNames()
        self._contexts: dict[bytes, ProcessContext | None] = {}
        self._keys: dict[bytes, set[bytes]] = {}         # owner record → its keys
        self._ifaces: list[tuple[int, str, int]] = []   # by iface id: linktype, name, ifindex
        # called with each record key whose context is dropped: what was derived from it goes too
        self.forgotten: list = []
        table.forgotten.append(self._forget)

    def add_interface(self, iface_id: int, iface: NetInterface) -> None:
        assert iface_id == len(self._ifaces), "interface ids out of step"
        self._ifaces.append((iface.linktype, iface.display_name, iface.ifindex))

    def context(self, key: bytes) -> ProcessContext | None:
        """The context of a record key: the owner's process (with the other local end's, the
        peer, and the kernel's marks: last owner, forwarded), with the hook info's drop reason
        and location added (a hook record gets a context even with no owner: lines name it)."""
        ctx = self._contexts.get(key, MISSING)
        if ctx is not MISSING:
            return ctx
        owner, info, marks, peer = split_key(key)
        ctx = self._table.joined(owner, marks, peer)
        if info != NO_INFO:
            location, reason = unpack_info(info)
            ctx = ProcessContext() if ctx is None else dataclasses.replace(ctx)
            if reason:
                ctx.drop_reason = self.names.reason(reason)
                ctx.drop_location = self.names.symbols.name(location)
        if len(self._contexts) >= MAX_KEYS:
            self._contexts.clear()
            self._keys.clear()
        self._contexts[key] = ctx
        for record in (owner, peer):        # the key goes with either end's context
            if record != _NO_PEER:
                self._keys.setdefault(record, set()).add(key)
        return ctx

    def _forget(self, owner: bytes) -> None:
        """The table dropped an owner's context (exec, exit): its joins go too, and the
        other end's record of them."""
        for key in self._keys.pop(owner, ()):
            self._contexts.pop(key, None)
            mine, _info, _marks, peer = split_key(key)
            other = self._keys.get(peer if mine == owner else mine)
            if other is not None:
                other.discard(key)
            for forget in self.forgotten:
                forget(key)

    def packets(self, buf, offsets: list[int]) -> Batch:
        """The packet records at `offsets` of a ring batch, with this join's contexts (made
        again, marked maybe stale, if process events were lost since the last batch)."""
        self._table.check_lost()
        return Batch(buf, offsets, self._contexts, self.context, self._ifaces)

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



class Joiner:
    def __init__(self, table: ProcessTable, names: HookNames | None = None) -> None:
        self._table = table
        self.names = names or HookNames()
        self._contexts: dict[bytes, ProcessContext | None] = {}
        self._keys: dict[bytes, list[bytes]] = {}        # owner record → its keys
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
        self._contexts[key] = ctx
        self._keys.setdefault(owner, []).append(key)
        if peer != _NO_PEER:
            self._keys.setdefault(peer, []).append(key)       # the peer's context goes too
        return ctx

    def _forget(self, owner: bytes) -> None:
        """The table dropped an owner's context (exec, exit): its joins go too."""
        for key in self._keys.pop(owner, ()):
            self._contexts.pop(key, None)
            for forget in self.forgotten:
                forget(key)

    def packets(self, buf, offsets: list[int]) -> Batch:
        """The packet records at `offsets` of a ring batch, with this join's contexts."""
        return Batch(buf, offsets, self._contexts, self.context, self._ifaces)
